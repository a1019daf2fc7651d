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


class SamplingParams:
    """The fields the output gate and the paired driver set."""

    def __init__(self, temperature: float = 1.0, max_tokens: int = 16, ignore_eos: bool = False, logprobs: int = 0,
                 detokenize: bool = True, top_p: float = 1.0):
        self.max_tokens, self.logprobs = max_tokens, logprobs


def _engine_loop(conn, model: str, seed: int) -> None:
    """The stand-in engine core: a one-layer "model" (embedding -> lm_head) in its own process, its lm_head
    GEMM through custom_kernels when the switch and STANDIN_PLUGIN say so; STANDIN_GATE_BREAK=1 makes the
    routed arm add noise to the logits (a kernel that changes the output)."""
    import json

    import torch

    vocab = json.loads((Path(model) / "config.json").read_text())["vocab_size"]
    gen = torch.Generator().manual_seed(seed)
    embed = torch.randn(vocab, 32, generator=gen)
    head = torch.nn.Linear(32, vocab)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, 32, generator=gen))
        head.bias.copy_(torch.randn(vocab, generator=gen))
    head.prefix = "lm_head"
    plugin = os.environ.get("STANDIN_PLUGIN", "honors")
    routed = plugin == "ignores_switch" or (plugin == "honors" and os.environ.get("VLLM_USE_CUSTOM_GEMM") == "1")
    gemm = None
    if plugin != "missing":
        import custom_kernels

        gemm = custom_kernels.unquantized_gemm if routed else None
    while (job := conn.recv()) is not None:
        prompts, max_tokens, k = job
        out = []
        for ids in prompts:
            tokens, logprobs = list(ids), []
            for _ in range(max_tokens):
                h = embed[tokens[-1]].unsqueeze(0)
                with torch.no_grad():
                    logits = (gemm(head, h, head.weight, head.bias) if gemm
                              else torch.nn.functional.linear(h, head.weight, head.bias))[0]
                if routed and os.environ.get("STANDIN_GATE_BREAK"):
                    logits = logits + torch.randn(logits.shape) * 5
                top = torch.topk(torch.log_softmax(logits, -1), k)
                tokens.append(int(top.indices[0]))
                logprobs.append({int(t): float(v) for t, v in zip(top.indices, top.values, strict=True)})
            out.append((tokens[len(ids):], logprobs))
        conn.send(out)
    conn.close()


class _EngineCoreClient:
    """What vLLM 0.24's LLMEngine holds as ``engine_core``: the only owner of a shutdown()."""

    def __init__(self, conn, proc, share: float):
        self._conn, self._proc, self.share = conn, proc, share

    def shutdown(self) -> None:
        if self._proc.is_alive():
            self._conn.send(None)
            self._proc.join(timeout=30)


_ENGINES: list[_EngineCoreClient] = []


class LLM:
    """The offline API the output gate and the paired driver use; like vLLM V1 the model runs in an engine
    process of its own, started with the environment of the moment (fork). Like vLLM, an engine refuses to
    start when the engines still alive leave less than its gpu_memory_utilization of the (0.9 usable) GPU."""

    def __init__(self, model: str, tokenizer: str | None = None, seed: int = 0, tensor_parallel_size: int = 1,
                 max_model_len: int | None = None, gpu_memory_utilization: float = 0.9, **engine_args):
        held = sum(e.share for e in _ENGINES if e._proc.is_alive())
        if held + gpu_memory_utilization > 0.9 + 1e-9:
            raise ValueError(f"Free memory on device ({0.9 - held:.2f}) on startup is less than desired GPU memory "
                             f"utilization ({gpu_memory_utilization})")
        ctx = mp.get_context("fork")
        self._conn, child = ctx.Pipe()
        proc = ctx.Process(target=_engine_loop, args=(child, model, seed))
        proc.start()
        client = _EngineCoreClient(self._conn, proc, gpu_memory_utilization)
        _ENGINES.append(client)
        from types import SimpleNamespace

        self.llm_engine = SimpleNamespace(engine_core=client)  # no LLMEngine.shutdown(), as in vLLM 0.24
        import atexit

        atexit.register(client.shutdown)  # like vLLM: the engine process ends with its owner, counters dumped

    def generate(self, prompts, params, use_tqdm=False):
        from types import SimpleNamespace

        self._conn.send(([p["prompt_token_ids"] for p in prompts], params.max_tokens, max(1, params.logprobs)))
        results = []
        for tokens, lps in self._conn.recv():
            positions = [{t: SimpleNamespace(logprob=v) for t, v in pos.items()} for pos in lps]
            results.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=tokens, logprobs=positions)]))
        return results


def site(folder: Path) -> Path:
    """A folder that, first on PYTHONPATH, makes `python -m vllm.entrypoints.cli.main` this stand-in."""
    cli = folder / "vllm" / "entrypoints" / "cli"
    cli.mkdir(parents=True, exist_ok=True)
    for pkg in (folder / "vllm" / "entrypoints", cli):
        (pkg / "__init__.py").write_text("")
    # `from vllm import LLM, SamplingParams`: the output gate's offline API.
    (folder / "vllm" / "__init__.py").write_text(f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                                                 "from standin_vllm import LLM, SamplingParams  # noqa: F401\n")
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
