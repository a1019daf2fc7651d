"""A stand-in for the `vllm` CLI on hosts without a GPU, for the bench orchestration tests.

It reproduces what matters for `invoke bench`: the model runs in a separate "engine-core" process
(multiprocessing, fork by default like vLLM V1, or spawn), where a vLLM plugin would import
custom_kernels and route GEMMs through ``unquantized_gemm`` when VLLM_USE_CUSTOM_GEMM=1. The timings
are real (CPU matmuls), and the --output-json file is written by vLLM 0.13.0's own result code
(tests/support/vllm_bench_json.py). STANDIN_PLUGIN selects a failure mode to detect:
``honors`` (default), ``missing`` (custom_kernels never imported), ``ignores_switch`` (always routes).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def engine_core(steps: int, conn) -> None:
    import torch

    plugin = os.environ.get("STANDIN_PLUGIN", "honors")
    route = plugin == "ignores_switch" or (plugin == "honors" and os.environ.get("VLLM_USE_CUSTOM_GEMM") == "1")
    gemm = None
    if plugin != "missing":
        import custom_kernels  # what the vllm.general_plugins entry point does in every vLLM process

        gemm = custom_kernels.unquantized_gemm if route else None
    layer = torch.nn.Linear(64, 64)
    layer.prefix = "model.layers.0.mlp.down_proj"
    x = torch.randn(8, 64)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        for _ in range(20):
            y = gemm(layer, x, layer.weight, layer.bias) if gemm else torch.nn.functional.linear(x, layer.weight,
                                                                                                   layer.bias)
        times.append(time.perf_counter() - t0 + float(y.detach().sum()) * 0.0)
    conn.send(times)
    conn.close()


def site(folder: Path) -> Path:
    """A folder that, first on PYTHONPATH, makes `python -m vllm.entrypoints.cli.main` this stand-in."""
    cli = folder / "vllm" / "entrypoints" / "cli"
    cli.mkdir(parents=True, exist_ok=True)
    for pkg in (folder / "vllm", folder / "vllm" / "entrypoints", cli):
        (pkg / "__init__.py").write_text("")
    # Imported as a module (not run as a path) so spawned engine processes can unpickle engine_core.
    (cli / "main.py").write_text(f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                                 "import standin_vllm\nif __name__ == '__main__':\n    sys.exit(standin_vllm.main())\n")
    return folder


def main() -> int:
    if sys.argv[1:3] == ["bench", "latency"] or sys.argv[1:3] == ["bench", "throughput"]:
        mode = sys.argv[2]
    else:
        print(f"stand-in vllm: unsupported command {sys.argv[1:]}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser()
    parser.add_argument("--output-json", required=True)
    parser.add_argument("--input-len", type=int, default=32)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--random-input-len", type=int)
    parser.add_argument("--random-output-len", type=int)
    parser.add_argument("--num-prompts", type=int, default=10)
    parser.add_argument("--num-iters", type=int, default=5)
    args, _ = parser.parse_known_args(sys.argv[3:])
    if mode == "throughput":
        args.input_len = args.random_input_len or args.input_len
        args.output_len = args.random_output_len or args.output_len
    if os.environ.get("STANDIN_FAIL"):  # e.g. a model id that does not exist: vLLM exits 1 in both arms
        print("OSError: no such model", file=sys.stderr)
        return 1
    ctx = mp.get_context(os.environ.get("STANDIN_MP", "fork"))
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=engine_core, args=(args.num_iters, child))
    proc.start()
    times = parent.recv()
    proc.join()
    if proc.exitcode != 0:
        return proc.exitcode or 1
    from tests.support.vllm_bench_json import write_latency_json, write_throughput_json

    tree = Path(os.environ["STANDIN_VLLM_TREE"])
    out = Path(args.output_json)
    if mode == "latency":
        write_latency_json(tree, out, times)
    else:
        write_throughput_json(tree, out, sum(times), args.num_prompts, args.input_len, args.output_len)
    print(f"stand-in vllm bench {mode}: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
