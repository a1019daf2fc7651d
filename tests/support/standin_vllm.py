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
    """The fields the output gate sets."""

    def __init__(self, temperature: float = 1.0, max_tokens: int = 16, ignore_eos: bool = False, logprobs: int = 0,
                 detokenize: bool = True):
        self.max_tokens, self.logprobs = max_tokens, logprobs


class LLM:
    """The offline API the output gate uses: a one-layer "model" (embedding -> lm_head) whose lm_head GEMM goes
    through custom_kernels when the switch and STANDIN_PLUGIN say so; STANDIN_GATE_BREAK=1 makes the routed
    arm add noise to the logits (a kernel that changes the output)."""

    def __init__(self, model: str, tokenizer: str | None = None, seed: int = 0, tensor_parallel_size: int = 1,
                 max_model_len: int | None = None):
        import json

        import torch

        vocab = json.loads((Path(model) / "config.json").read_text())["vocab_size"]
        gen = torch.Generator().manual_seed(seed)
        self.embed = torch.randn(vocab, 32, generator=gen)
        self.head = torch.nn.Linear(32, vocab)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(vocab, 32, generator=gen))
            self.head.bias.copy_(torch.randn(vocab, generator=gen))
        self.head.prefix = "lm_head"
        plugin = os.environ.get("STANDIN_PLUGIN", "honors")
        switch = os.environ.get("VLLM_USE_CUSTOM_GEMM") == "1"
        self.routed = plugin == "ignores_switch" or (plugin == "honors" and switch)
        self.gemm = None
        if plugin != "missing":
            import custom_kernels

            self.gemm = custom_kernels.unquantized_gemm if self.routed else None

    def generate(self, prompts, params, use_tqdm=False):
        from types import SimpleNamespace

        import torch

        results = []
        for prompt in prompts:
            tokens, logprobs = list(prompt["prompt_token_ids"]), []
            for _ in range(params.max_tokens):
                h = self.embed[tokens[-1]].unsqueeze(0)
                with torch.no_grad():
                    logits = (self.gemm(self.head, h, self.head.weight, self.head.bias) if self.gemm
                              else torch.nn.functional.linear(h, self.head.weight, self.head.bias))[0]
                if self.routed and os.environ.get("STANDIN_GATE_BREAK"):
                    logits = logits + torch.randn(logits.shape) * 5
                logp = torch.log_softmax(logits, -1)
                top = torch.topk(logp, params.logprobs)
                tokens.append(int(top.indices[0]))
                logprobs.append({int(t): SimpleNamespace(logprob=float(v))
                                 for t, v in zip(top.indices, top.values, strict=True)})
            generated = tokens[len(prompt["prompt_token_ids"]):]
            results.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=generated, logprobs=logprobs)]))
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
