"""Model-level A/B of the custom GEMM without vLLM: a Hugging Face model built from a shipped config.json
with random weights (no download), every nn.Linear routed to ``custom_kernels.unquantized_gemm`` or to
cuBLAS (``F.linear``), prefill and decode-shaped steps timed under CUDA graphs and/or torch.compile.

What a "step" is: one forward of the whole model over ``batch`` x ``tokens`` new tokens with no KV
cache (use_cache=False), so every linear sees M = batch*tokens rows exactly as in vLLM's prefill
(tokens = prompt length) and decode (tokens = 1) steps; attention covers only the step's own tokens,
so this over-weights the GEMMs relative to a long-context decode. Static shapes make CUDA-graph
capture and torch.compile portable across transformers 4.5x and 5.x (no cache classes involved).

Runs anywhere torch and transformers are installed (CPU: fp32, eager, for tests):
    python -m workbench.bench.proxy --model qwen2.5-0.5b --out results/decode_proxy.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench import models
from workbench.bench.stats import mann_whitney_u

ARMS = ("cublas", "custom")
# Measured A/A floor (H200, both arms F.linear, separate CUDA-graph captures of identical kernels):
# medians differ by up to 1.4% with complete separation of the rounds (p = 0.002), so a real
# kernel effect must exceed 2% before the proxy calls it one.
MIN_EFFECT_PCT = 2.0
MODES = ("eager", "cudagraph", "compile")
ROOT = Path(__file__).resolve().parents[2]  # the checkout: the shipped configs live in its custom_kernels/

# Which arm the patched linears run; read at call time. torch.compile guards on it, so each arm keeps
# its own compiled graph and switching arms does not recompile after the first call of each.
_ARM: dict[str, str] = {"name": "cublas"}


def shipped_configs() -> list[str]:
    return models.shipped(ROOT)


def resolve_config(model: str | os.PathLike[str]) -> Path:
    """A config.json, a folder holding one, or a shipped name -> the config.json path (workbench.models)."""
    found = models.find_config(ROOT, str(model))
    if found is None:
        raise FileNotFoundError(f"no model config {str(model)!r}: pass a config.json, a folder with one, "
                                f"or one of {shipped_configs()}")
    return found


def build_model(config_path: Path, dtype, device, layers: int | None = None):
    """A causal LM from config.json with random weights, on ``device`` in ``dtype``, eval mode."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = json.loads(config_path.read_text())
    raw.pop("torch_dtype", None)
    raw.pop("dtype", None)
    if layers:
        raw["num_hidden_layers"] = layers
        if "max_window_layers" in raw:
            raw["max_window_layers"] = min(raw["max_window_layers"], layers)
    model_type = raw.pop("model_type")
    config = AutoConfig.for_model(model_type, **raw)
    config._attn_implementation = "sdpa"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # construct directly in the target dtype: no fp32 copy of an 8B model
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(device=device, dtype=dtype).eval()


def route_linears(model, gemm: Callable | None = None) -> int:
    """Make every nn.Linear call ``gemm(layer, x, weight, bias)`` when the arm is "custom", else F.linear.

    ``gemm`` defaults to ``custom_kernels.unquantized_gemm`` (the vLLM contract). Each linear gets a
    ``prefix`` (its module path) so the package's per-layer counters name it. Returns the count.
    """
    import torch
    import torch.nn.functional as F

    if gemm is None:
        from workbench.bench.kernels import import_custom_kernels

        # From the repo root the custom_kernels/ project folder would import as an empty namespace package.
        gemm = import_custom_kernels(ROOT / "custom_kernels").unquantized_gemm

    count = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            module.prefix = name

            def forward(x, _m=module):
                if _ARM["name"] == "custom":
                    return gemm(_m, x, _m.weight, _m.bias)
                return F.linear(x, _m.weight, _m.bias)

            module.forward = forward
            count += 1
    return count


def set_arm(arm: str) -> None:
    if arm not in ARMS:
        raise ValueError(f"arm {arm!r} is not one of {ARMS}")
    _ARM["name"] = arm


def kernel_totals() -> dict[str, int]:
    """Calls per kernel name, when the package records which implementation it dispatched to."""
    mod = sys.modules.get("custom_kernels")
    totals: dict[str, int] = {}
    for per_layer in (getattr(mod, "KERNEL_COUNTS", {}) or {}).values() if mod else ():
        for kernel, n in per_layer.items():
            totals[kernel] = totals.get(kernel, 0) + n
    return totals


def total_calls() -> int:
    """custom_kernels' host call counter total (CALL_COUNTS of unquantized_gemm)."""
    mod = sys.modules.get("custom_kernels")
    return sum((getattr(mod, "CALL_COUNTS", {}) or {}).values()) if mod else 0


@dataclass
class ArmStats:
    median_ms: float
    q25_ms: float
    q75_ms: float
    min_ms: float
    max_ms: float
    rounds_ms: list[float]


@dataclass
class CaseResult:
    mode: str
    phase: str
    batch: int
    tokens: int
    m: int
    arms: dict[str, ArmStats] = field(default_factory=dict)
    speedup: float = math.nan  # cuBLAS median / custom median (> 1: custom faster)
    p_value: float = math.nan  # two-sided Mann-Whitney U over the per-round times
    significant: bool = False  # p < 0.05
    within_noise: bool = True  # not significant, or |speedup - 1| below MIN_EFFECT_PCT
    error: str = ""


def _quantile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def make_step(model, mode: str, input_ids, device) -> Callable[[], Any]:
    """A zero-argument callable running one forward under ``mode`` for the current arm.

    cudagraph: captured per arm (a CUDA graph freezes which kernels run), replayed; compile:
    torch.compile(dynamic=False), one guarded graph per arm; eager: the plain forward.
    """
    import torch

    def forward():
        return model(input_ids=input_ids, use_cache=False).logits

    if mode == "eager":
        return forward
    if mode == "compile":
        compiled = torch.compile(forward, dynamic=False)
        return compiled
    if mode == "cudagraph":
        if device.type != "cuda":
            raise RuntimeError("cudagraph mode needs a CUDA device")
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up outside capture: autotuning, lazy init, allocator
                forward()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            forward()
        return graph.replay
    raise ValueError(f"mode {mode!r} is not one of {MODES}")


def _compiled_frames() -> int:
    from torch._dynamo.utils import counters

    return sum(counters["frames"].values())


def _check_no_recompiles(step: Callable[[], Any], arm: str) -> None:
    """After warm-up a compiled step must not compile again. If it does, the GEMM hook mutates Python state
    that Dynamo guards on (e.g. a call counter read inside the traced code), every call recompiles until
    the recompile limit and then runs eager: the "compiled" timing would be a lie, so refuse it."""
    before = _compiled_frames()
    step()
    step()
    if _compiled_frames() != before:
        raise RuntimeError(f"the {arm} arm recompiles on every call under torch.compile: the GEMM hook is "
                           "traced and guards on mutable Python state; make it an opaque torch custom op")


def time_steps(step: Callable[[], Any], iters: int, device) -> float:
    """Mean milliseconds per step over ``iters`` back-to-back steps (CUDA events on GPU)."""
    import torch

    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - t0) * 1000.0 / iters


def run_case(model, mode: str, phase: str, batch: int, tokens: int, vocab: int, device, rounds: int, iters: int,
             warmup: int, seed: int = 0) -> CaseResult:
    """One (mode, phase, shape): build a step per arm, then alternate arms (ABBA) for ``rounds`` rounds."""
    import torch

    result = CaseResult(mode=mode, phase=phase, batch=batch, tokens=tokens, m=batch * tokens)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    input_ids = torch.randint(0, vocab, (batch, tokens), generator=gen).to(device)
    steps = {}
    try:
        with torch.inference_mode():
            for arm in ARMS:
                set_arm(arm)
                steps[arm] = make_step(model, mode, input_ids, device)
                for _ in range(warmup):
                    steps[arm]()
                if mode == "compile":
                    _check_no_recompiles(steps[arm], arm)
            per_arm: dict[str, list[float]] = {arm: [] for arm in ARMS}
            for r in range(rounds):
                for arm in (ARMS if r % 2 == 0 else tuple(reversed(ARMS))):
                    set_arm(arm)
                    per_arm[arm].append(time_steps(steps[arm], iters, device))
    except Exception as err:  # one failing mode (e.g. a graph-unsafe model) must not lose the others
        result.error = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
        return result
    finally:
        set_arm("cublas")
    for arm, values in per_arm.items():
        result.arms[arm] = ArmStats(median_ms=statistics.median(values), q25_ms=_quantile(values, 0.25),
                                    q75_ms=_quantile(values, 0.75), min_ms=min(values), max_ms=max(values),
                                    rounds_ms=values)
    cub, cus = result.arms["cublas"], result.arms["custom"]
    result.speedup = cub.median_ms / cus.median_ms if cus.median_ms else math.nan
    result.p_value, result.significant, result.within_noise = judge(cub.rounds_ms, cus.rounds_ms)
    return result


def judge(cublas_ms: Sequence[float], custom_ms: Sequence[float],
          min_effect_pct: float = MIN_EFFECT_PCT) -> tuple[float, bool, bool]:
    """(p, significant, within_noise): beyond noise only if the per-round times separate (Mann-Whitney
    p < 0.05, which needs >= 4 rounds) AND the medians differ by at least ``min_effect_pct``."""
    _, p = mann_whitney_u(cublas_ms, custom_ms)
    speedup = statistics.median(cublas_ms) / statistics.median(custom_ms)
    significant = p < 0.05
    return p, significant, not significant or abs(speedup - 1.0) * 100.0 < min_effect_pct


def check_outputs(model, vocab: int, device, batch: int = 2, tokens: int = 8) -> dict[str, Any]:
    """Correctness before timing: both arms' logits against an fp32 reference of the same model.

    The reference casts the model to fp32 in place and back (bf16/fp16 -> fp32 -> back is exact), so no
    second copy of the weights is kept. Pass rule (flash-attention's): the custom arm's error is at
    most 2x cuBLAS's own error in the same dtype, plus a small absolute slack for fp32 runs.
    """
    import torch

    ids = torch.randint(0, vocab, (batch, tokens), generator=torch.Generator().manual_seed(1)).to(device)
    dtype = next(model.parameters()).dtype
    with torch.inference_mode():
        set_arm("cublas")
        model.float()
        ref = model(input_ids=ids, use_cache=False).logits.float()
        model.to(dtype)
        got = {}
        for arm in ARMS:
            set_arm(arm)
            got[arm] = model(input_ids=ids, use_cache=False).logits.float()
        set_arm("cublas")
    scale = ref.abs().max().item() or 1.0
    err = {arm: (got[arm] - ref).abs().max().item() for arm in ARMS}
    ok = err["custom"] <= 2.0 * err["cublas"] + 1e-5 * scale
    return {"ref": "fp32", "cublas_max_abs_err": err["cublas"], "custom_max_abs_err": err["custom"],
            "max_rel_err": err["custom"] / scale, "custom_vs_cublas_err_ratio":
            err["custom"] / err["cublas"] if err["cublas"] else (0.0 if err["custom"] == 0 else math.inf),
            "passed": ok}


def environment(device) -> dict[str, Any]:
    """What the timings depend on, captured as the bench sessions capture it (workbench/guest/bench_env.py):
    time and host, the GPUs through NVML (clocks, other processes), torch/CUDA/triton and ``device``'s name,
    transformers, the custom_kernels that ran (version, path, plugin, dispatch table) and the env vars."""
    from workbench.guest import bench_env

    env: dict[str, Any] = {**bench_env.basics(), "device": str(device), "gpus": bench_env.gpus(),
                           "torch": bench_env.torch_info(device.index or 0),
                           **bench_env.package_versions(("transformers",)), "env": bench_env.env_vars()}
    try:
        from workbench.bench.kernels import import_custom_kernels

        import_custom_kernels(ROOT / "custom_kernels")  # the package routed in, not the empty repo-root folder
        env["custom_kernels"] = bench_env.custom_kernels_info()
    except Exception as err:
        env["custom_kernels"] = {"error": f"import custom_kernels: {type(err).__name__}: {err}"}
    return env


def run_proxy(model_name: str, out: Path | None, *, device: str | None = None, dtype: str | None = None,
              modes: Sequence[str] | None = None, batches: Sequence[int] = (1, 8, 32), prefill_tokens: int = 512,
              prefill_batch: int = 1, rounds: int = 6, iters: int = 20, warmup: int = 3, layers: int | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build, check, time; return (and write to ``out``) the results dict."""
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype_name = dtype or ("bfloat16" if dev.type == "cuda" else "float32")
    torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype_name]
    modes = list(modes or (("cudagraph", "compile") if dev.type == "cuda" else ("eager",)))
    for m in modes:
        if m not in MODES:
            raise ValueError(f"mode {m!r} is not one of {MODES}")
    config_path = resolve_config(model_name)
    log(f"building {config_path.parent.name} ({dtype_name}, {dev}) with random weights")
    model = build_model(config_path, torch_dtype, dev, layers=layers)
    n_linear = route_linears(model)
    vocab = model.config.vocab_size
    before = total_calls()
    correctness = check_outputs(model, vocab, dev)
    custom_calls_check = total_calls() - before
    log(f"{n_linear} linears routed; logits vs fp32: cuBLAS err {correctness['cublas_max_abs_err']:.3g}, custom err "
        f"{correctness['custom_max_abs_err']:.3g} ({'ok' if correctness['passed'] else 'FAILED: > 2x cuBLAS'})")
    cases = ([("prefill", prefill_batch, prefill_tokens)] if prefill_tokens > 0 else []) + [
        ("decode", b, 1) for b in batches]
    results: list[CaseResult] = []
    calls_by_arm = {arm: 0 for arm in ARMS}
    for mode in modes:
        for phase, batch, tokens in cases:
            before = total_calls()
            res = run_case(model, mode, phase, batch, tokens, vocab, dev, rounds, iters, warmup)
            results.append(res)
            calls_by_arm["custom"] += total_calls() - before  # only the custom arm goes through the package
            if res.error:
                log(f"{mode:9} {phase:7} M={res.m:<5} error: {res.error}")
            else:
                cub, cus = res.arms["cublas"], res.arms["custom"]
                log(f"{mode:9} {phase:7} M={res.m:<5} cuBLAS {cub.median_ms:8.3f} ms  custom {cus.median_ms:8.3f} ms  "
                    f"speedup {res.speedup:.3f}x{'  (within noise)' if res.within_noise else ''}")
    # Valid only if the custom arm really went through custom_kernels (its counters moved) and is as accurate.
    valid = custom_calls_check > 0 and correctness["passed"]
    data = {
        "model": config_path.parent.name, "config": config_path.name, "dtype": dtype_name, "layers": layers,
        "linears_routed": n_linear, "env": environment(dev), "correctness": correctness,
        "custom_kernel_calls": {"correctness_check": custom_calls_check, "timed_custom_arm": calls_by_arm["custom"],
                                "by_kernel": kernel_totals()},
        "forced_kernel": os.environ.get("CUSTOM_KERNELS_FORCE"),
        "valid": valid,
        "note": ("step = one forward over batch x tokens new tokens, no KV cache; speedup = cuBLAS median / custom "
                 "median; within_noise = Mann-Whitney p >= 0.05 over rounds or |speedup - 1| < 2% (the A/A "
                 "floor). custom_kernel_calls count host calls (CUDA-graph replays run no Python, so only "
                 "captures count)."),
        "settings": {"modes": modes, "batches": list(batches), "prefill_tokens": prefill_tokens,
                     "prefill_batch": prefill_batch, "rounds": rounds, "iters": iters, "warmup": warmup},
        "results": [asdict(r) for r in results],
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1, default=str))
        log(f"results written to {out}")
    return data


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.bench.proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help=f"config.json, a folder with one, or one of {shipped_configs()}")
    parser.add_argument("--out", help="results JSON (default: results/decode_proxy-<model>-<utc>.json)")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), help="default bf16 on GPU, fp32 on CPU")
    parser.add_argument("--modes", help=f"comma-separated of {','.join(MODES)} (default: cudagraph,compile on GPU)")
    parser.add_argument("--batches", default="1,8,32", help="decode batch sizes (M = batch)")
    parser.add_argument("--prefill-tokens", type=int, default=512, help="prompt length of the prefill step (0: none)")
    parser.add_argument("--prefill-batch", type=int, default=1, help="prompts per prefill step")
    parser.add_argument("--rounds", type=int, default=6, help="alternating A/B rounds (spread is across rounds)")
    parser.add_argument("--iters", type=int, default=20, help="steps timed per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per arm before timing")
    parser.add_argument("--layers", type=int, help="override num_hidden_layers (smaller, faster model)")
    args = parser.parse_args(argv)
    try:
        config_path = resolve_config(args.model)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("results") / (
        f"decode_proxy-{config_path.parent.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json")
    try:
        data = run_proxy(str(config_path), out, device=args.device, dtype=args.dtype,
                         modes=args.modes.split(",") if args.modes else None, batches=_ints(args.batches),
                         prefill_tokens=args.prefill_tokens, prefill_batch=args.prefill_batch, rounds=args.rounds,
                         iters=args.iters, warmup=args.warmup, layers=args.layers)
    except (ImportError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not data["valid"]:
        print("INVALID: the custom arm made no custom_kernels call, or its logits are > 2x less accurate than cuBLAS's",
              file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
