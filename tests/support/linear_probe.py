"""Run in a subprocess: import a vLLM source tree on CPU, build ReplicatedLinear layers with given
prefixes, load weights the way vLLM does (process_weights_after_loading), run a forward pass and
print JSON: per layer whether it chose the custom GEMM, the custom_kernels call count, and the error
against an fp32 reference.

usage: python linear_probe.py VLLM_TREE CUSTOM_KERNELS_DIR {patched,plugin,plugin-late,entrypoint} PREFIX...
patched: the tree carries the patch series; the plugin registers as vLLM's loader would register it.
plugin-late: the plugin registers while the switch is unset and the switch is set afterwards, as in an
engine-core process forked from a front end that loaded the plugin with another arm's switch.
The tree goes first on sys.path so this process imports exactly that source (test isolation).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile


def main() -> None:
    tree, kernels_dir, route, *prefixes = sys.argv[1:]
    sys.path[:0] = [tree, kernels_dir]
    import torch
    import vllm.platforms
    from vllm.platforms.cpu import CpuPlatform

    # The sdist has no installed dist metadata, so vLLM can't detect its platform: force CPU.
    vllm.platforms._current_platform = CpuPlatform()

    import custom_kernels
    import vllm

    if route in ("plugin", "plugin-late", "patched"):
        # patched: vLLM loads the plugin there too (custom_kernels is installed), and it applies the route
        # rule to the layers the fork chose
        from custom_kernels import vllm_plugin

        late = os.environ.pop("VLLM_USE_CUSTOM_GEMM", None) if route == "plugin-late" else None
        vllm_plugin.register()
        vllm_plugin.register()  # idempotent: a second call must not wrap twice
        if late is not None:
            os.environ["VLLM_USE_CUSTOM_GEMM"] = late
    elif route == "entrypoint":
        from vllm.plugins import load_general_plugins

        load_general_plugins()
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel
    from vllm.model_executor.layers.linear import ReplicatedLinear

    torch.manual_seed(0)
    report: dict = {"vllm_file": vllm.__file__, "layers": {}}
    with set_current_vllm_config(VllmConfig()):
        init_distributed_environment(world_size=1, rank=0, local_rank=0, backend="gloo",
                                     distributed_init_method="file://" + tempfile.mktemp(prefix="wb-dist-"))
        initialize_model_parallel(1, 1)
        for prefix in prefixes:
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
    print("PROBE" + json.dumps(report))


if __name__ == "__main__":
    main()
