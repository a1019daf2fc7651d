"""Run in a subprocess: import a vLLM source tree on CPU, register the GEMM hook, then for each scenario (the
VLLM_* variables it sets) build ReplicatedLinear layers with given prefixes, load weights the way vLLM does
(process_weights_after_loading), run a forward pass and record per layer whether it chose the custom GEMM,
the custom_kernels call count, the error against an fp64 reference and the plugin's routing decision. Prints
one JSON line: PROBE[{"vllm_file", "layers", "routing"} per scenario].

usage: python linear_probe.py VLLM_TREE CUSTOM_KERNELS_DIR {plugin,patched,entrypoint} SCENARIOS_JSON
SCENARIOS_JSON: [{"env": {VAR: VALUE}, "layers": [PREFIX, ...]}, ...]
- plugin: custom_kernels.vllm_plugin.register(), twice (idempotent), with the first scenario's variables set;
  later scenarios change them afterwards, as in an engine-core process forked from a front end that loaded the
  plugin with another arm's switch (the plugin decides per layer, when the layer is built).
- patched: the tree carries the patch series; the plugin registers as vLLM's loader would register it
  (custom_kernels is installed), and applies the route rule to the layers the fork chose.
- entrypoint: vLLM's own load_general_plugins(), through the entry point custom_kernels declares.
Layers are built per scenario, so one process serves every scenario of a tree: importing vLLM costs seconds.
The tree goes first on sys.path so this process imports exactly that source (test isolation).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile


def set_scenario_env(env: dict[str, str]) -> None:
    for key in [k for k in os.environ if k.startswith(("VLLM_USE_CUSTOM_GEMM", "VLLM_CUSTOM_GEMM_"))]:
        del os.environ[key]
    os.environ.update(env)


def main() -> None:
    tree, kernels_dir, route, scenarios_json = sys.argv[1:]
    scenarios = json.loads(scenarios_json)
    sys.path[:0] = [tree, kernels_dir]
    import torch
    import vllm.platforms
    from vllm.platforms.cpu import CpuPlatform

    # The sdist has no installed dist metadata, so vLLM can't detect its platform: force CPU.
    vllm.platforms._current_platform = CpuPlatform()

    import custom_kernels
    import vllm

    set_scenario_env(scenarios[0]["env"])
    if route in ("plugin", "patched"):
        from custom_kernels import vllm_plugin

        vllm_plugin.register()
        vllm_plugin.register()  # idempotent: a second call must not wrap twice
    elif route == "entrypoint":
        from vllm.plugins import load_general_plugins

        load_general_plugins()
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel
    from vllm.model_executor.layers.linear import ReplicatedLinear

    torch.manual_seed(0)
    reports = []
    with set_current_vllm_config(VllmConfig()):
        init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo",
                                     distributed_init_method="file://" + tempfile.mktemp(prefix="wb-dist-"))
        initialize_model_parallel(1, 1)
        for scenario in scenarios:
            set_scenario_env(scenario["env"])
            getattr(custom_kernels, "ROUTING", {}).clear()
            report: dict = {"vllm_file": vllm.__file__, "layers": {}}
            for prefix in scenario["layers"]:
                layer = ReplicatedLinear(64, 48, bias=True, prefix=prefix, params_dtype=torch.float32)
                weight = torch.randn(48, 64)
                bias = torch.randn(48)
                layer.weight.data.copy_(weight)
                layer.bias.data.copy_(bias)
                layer.quant_method.process_weights_after_loading(layer)
                x = torch.randn(5, 64)
                before = custom_kernels.CALL_COUNTS.get(prefix, 0)
                out, _ = layer(x)
                ref = x.double() @ weight.double().T + bias.double()
                report["layers"][prefix] = {
                    "use_custom_gemm": bool(getattr(layer, "use_custom_gemm", False)),
                    "calls": custom_kernels.CALL_COUNTS.get(prefix, 0) - before,
                    "max_abs_err": float((out.double() - ref).abs().max()),
                    "weight_shape": list(layer.weight.shape),
                }
            report["routing"] = dict(getattr(custom_kernels, "ROUTING", {}))
            reports.append(report)
    print("PROBE" + json.dumps(reports))


if __name__ == "__main__":
    main()
