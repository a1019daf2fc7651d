"""Command line of `python -m workbench.trace layers|modules|kernels` (one parser, three modes).

Runs inside the dev container (vLLM backend) or anywhere with torch + transformers (``--hf-config``).
Every run prints rich tables and writes ``<out>/<mode>.json`` (loadable with ``--load``) and a text report.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from workbench.errors import WorkbenchError

MODES = ("layers", "modules", "kernels")
DEFAULT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
DEFAULT_PROMPT = "The capital of France is"


def build_parser(mode: str) -> argparse.ArgumentParser:
    """The flags of one mode (all modes share the model/prompt/output flags)."""
    if mode not in MODES:
        raise WorkbenchError(f"unknown trace mode {mode!r}: choose one of {', '.join(MODES)}")
    p = argparse.ArgumentParser(prog=f"trace_{mode}.py", description=__doc__.splitlines()[0])
    g = p.add_argument_group("what to run")
    g.add_argument("--model", default=os.environ.get("WORKBENCH_TRACE_MODEL", DEFAULT_MODEL),
                   help="vLLM model (HF id or path, from the HF cache); default %(default)s")
    g.add_argument("--hf-config", default=None,
                   help="trace a plain Hugging Face model built from this config.json with random weights "
                        "(no vLLM, nothing downloaded)")
    g.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt text (default: %(default)r)")
    g.add_argument("--max-tokens", type=int, default=8, help="tokens to generate: 1 prefill + N-1 decode steps")
    g.add_argument("--batch-size", type=int, default=1, help="copies of the prompt run together")
    g.add_argument("--prompt-tokens", type=int, default=None, help="HF backend: prompt length in tokens")
    g.add_argument("--dtype", default="auto", help="auto, float32, float16 or bfloat16")
    g.add_argument("--device", default="auto", help="HF backend: auto, cuda or cpu")
    eager = g.add_mutually_exclusive_group()
    eager.add_argument("--enforce-eager", dest="enforce_eager", action="store_true", default=None,
                       help="vLLM: run eagerly (forced for layers/modules: hooks need it)")
    eager.add_argument("--no-enforce-eager", dest="enforce_eager", action="store_false",
                       help="vLLM kernels: keep torch.compile + CUDA graphs (what production runs)")
    g.add_argument("--max-model-len", type=int, default=2048, help="vLLM max_model_len")
    g.add_argument("--gpu-memory-utilization", type=float, default=0.5, help="vLLM gpu_memory_utilization")
    g.add_argument("--custom-gemm", action="store_true",
                   help="custom GEMM on: HF: every nn.Linear through custom_kernels.unquantized_gemm; "
                        "vLLM: VLLM_USE_CUSTOM_GEMM=1 (the custom_kernels plugin)")
    g.add_argument("--custom-kernels", default=None,
                   help="custom kernels package folder (default: /workspace/custom_kernels or ./custom_kernels)")
    g.add_argument("--warmup", type=int, default=1,
                   help="untraced runs first, so first-call costs (allocations, autotuning) stay out")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=os.environ.get("WORKBENCH_TRACE_OUT", str(Path("results") / "trace")),
                   help="directory for the JSON, report and Chrome trace (default %(default)s)")
    o.add_argument("--top", type=int, default=20, help="rows in top-N tables")
    o.add_argument("--load", default=None, help="print a saved <mode>.json again instead of running anything")
    if mode == "layers":
        p.add_argument("--layer-prefix", default=None,
                       help="path of the decoder layers' ModuleList (default: the longest one found)")
    if mode == "modules":
        p.add_argument("--module-type", action="append", default=[],
                       help="keep only these module types: class name (RMSNorm) or import path of your own "
                            "type (mypkg.layers.MyAttention); repeat or comma-separate")
        p.add_argument("--prefix", action="append", default=[],
                       help="keep only modules under this path, e.g. layers.0. (repeatable)")
        p.add_argument("--group-by", choices=("type", "name"), default="type", help="grouped statistics key")
        p.add_argument("--limit", type=int, default=40, help="detailed records printed (all are in the JSON)")
        p.add_argument("--cuda-timing", action="store_true", help="also time each call with CUDA events")
    if mode == "kernels":
        p.add_argument("--profiler", choices=("auto", "torch", "vllm"), default="auto",
                       help="vllm: vLLM's own torch profiler (profiler_config / VLLM_TORCH_PROFILER_DIR); torch: "
                            "torch.profiler around generate in this process; auto: vllm for vLLM, torch for HF")
        p.add_argument("--fork", default=None,
                       help="vLLM source tree whose csrc/ maps kernels to files (default: /workspace/vllm or ./vllm)")
    return p


def _first_dir(*candidates: str | None) -> Path | None:
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return None


def _split_multi(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def make_target(args: argparse.Namespace, mode: str, console: Console, vllm_profiler_dir: str | None = None) -> Any:
    from workbench.trace.targets import EAGER_REASON, hf_target, vllm_target

    if args.max_tokens < 1:
        raise WorkbenchError(f"--max-tokens {args.max_tokens}: give at least 1")
    if args.hf_config:
        return hf_target(args.hf_config, args.prompt, args.max_tokens, device=args.device, dtype=args.dtype,
                         prompt_tokens=args.prompt_tokens, batch_size=args.batch_size)
    eager = args.enforce_eager
    if mode in ("layers", "modules"):
        if eager is False:
            console.print("[yellow]--no-enforce-eager ignored:[/] " + EAGER_REASON)
        eager = True
        console.print("[dim]" + EAGER_REASON + "[/]")
    elif eager is None:
        eager = True
        console.print("[dim]enforce_eager=True by default for kernels (one launch per kernel, readable names); "
                      "--no-enforce-eager profiles the compiled + CUDA-graph path[/]")
    target = vllm_target(args.model, args.prompt, args.max_tokens, enforce_eager=eager, dtype=args.dtype,
                         max_model_len=args.max_model_len, gpu_memory_utilization=args.gpu_memory_utilization,
                         batch_size=args.batch_size, vllm_profiler_dir=vllm_profiler_dir,
                         custom_gemm=args.custom_gemm)
    return target


def custom_kernels_dir(args: argparse.Namespace) -> Path | None:
    here = Path(__file__).resolve().parents[2]
    if args.custom_kernels:
        return Path(args.custom_kernels)
    return _first_dir("/workspace/custom_kernels", str(here / "custom_kernels"))


def with_custom_gemm(target: Any, args: argparse.Namespace, console: Console) -> int:
    """HF backend + --custom-gemm: wrap the target's run so every nn.Linear goes through the contract.
    Returns how many nn.Linear layers are routed (0 when off or for vLLM, where the plugin does it)."""
    if not args.custom_gemm or target.backend != "hf":
        return 0
    from torch import nn

    from workbench.bench.kernels import import_custom_kernels
    from workbench.trace.targets import swapped_linear_gemm

    ck = import_custom_kernels(custom_kernels_dir(args))
    swapped = sum(isinstance(m, nn.Linear) for m in target.model.modules())
    console.print(f"custom GEMM on: {swapped} nn.Linear forwards -> custom_kernels.unquantized_gemm")
    plain = target.run

    def run() -> Any:
        with swapped_linear_gemm(target.model, ck.unquantized_gemm):
            return plain()

    target.run = run
    return swapped


def _warm_up(target: Any, runs: int) -> None:
    for _ in range(max(runs, 0)):
        target.run()


# ------------------------------------------------------------------------------------------------
# Modes
# ------------------------------------------------------------------------------------------------

def run_layers(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from workbench.trace.modules import (
        ModuleTracer,
        call_counts,
        find_decoder_layers,
        first_layer_calls,
        operator_summary,
    )
    from workbench.trace.records import LayerInfo

    target = make_target(args, "layers", console)
    console.print(f"[bold]{target.description}[/]")
    for note in target.notes:
        console.print(f"[dim]{note}[/]")
    with_custom_gemm(target, args, console)
    layers = find_decoder_layers(target.model)
    if args.layer_prefix:
        names = dict(target.model.named_modules())
        mlist = names.get(args.layer_prefix)
        if mlist is None or not hasattr(mlist, "__len__"):
            raise WorkbenchError(f"--layer-prefix {args.layer_prefix!r} is not a ModuleList in the model; "
                                 f"found: {layers.prefix if layers else 'none'}")
        layers = LayerInfo(prefix=args.layer_prefix, count=len(mlist), layer_type=type(mlist[0]).__name__,
                           first_layer=f"{args.layer_prefix}.0")
    _warm_up(target, args.warmup)
    with ModuleTracer(target.model) as tracer:
        target.run()
    calls = tracer.calls
    return {"model": target.description, "backend": target.backend, "device": target.device,
            "steps": tracer.steps, "layers": layers, "type_counts": call_counts(calls, "type"),
            "name_counts": call_counts(calls, "name"), "operators": operator_summary(calls, layers, tracer.steps),
            "calls": first_layer_calls(calls, layers), "notes": target.notes}


def print_layers(doc: dict[str, Any], console: Console, top: int) -> None:
    from workbench.trace.records import LayerInfo
    from workbench.trace.report import print_call_order, print_counts, print_name_counts, print_operator_summary

    layers = doc.get("layers")
    if isinstance(layers, dict):
        layers = LayerInfo(**layers)
    print_counts(console, doc["type_counts"], f"Module calls by type ({doc['steps']} forward steps)")
    print_name_counts(console, doc["name_counts"], doc["steps"])
    print_operator_summary(console, doc["operators"], layers, doc["steps"])
    first = layers.first_layer if layers else "?"
    print_call_order(console, doc["calls"], f"First decoder layer ({first}) call order, step 0")


def run_modules(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from workbench.trace.modules import ModuleTracer, filter_calls, known_type_names, stats

    target = make_target(args, "modules", console)
    console.print(f"[bold]{target.description}[/]")
    for note in target.notes:
        console.print(f"[dim]{note}[/]")
    types = _split_multi(args.module_type)
    with_custom_gemm(target, args, console)
    _warm_up(target, args.warmup)
    with ModuleTracer(target.model, cuda_timing=args.cuda_timing) as tracer:
        target.run()
    calls = filter_calls(tracer.calls, target.model, types=types, prefixes=_split_multi(args.prefix))
    if not calls:
        raise WorkbenchError(f"no module calls match --module-type {types or '(any)'} --prefix "
                             f"{args.prefix or '(any)'}; types seen: {', '.join(known_type_names(tracer.calls))}")
    return {"model": target.description, "backend": target.backend, "device": target.device,
            "steps": tracer.steps, "filters": {"module_type": types, "prefix": _split_multi(args.prefix)},
            "group_by": args.group_by, "type_stats": stats(calls, "type"), "name_stats": stats(calls, "name"),
            "calls": calls, "notes": target.notes, "limit": args.limit}


def print_modules(doc: dict[str, Any], console: Console, top: int) -> None:
    from workbench.trace.report import print_module_records, print_module_stats

    calls = doc["calls"]
    print_module_records(console, calls, f"Module calls ({len(calls)} matching; filters {doc.get('filters')})",
                         doc.get("limit", 40))
    key = doc.get("group_by", "type")
    rows = doc["type_stats"] if key == "type" else doc["name_stats"]
    print_module_stats(console, rows, f"Grouped by module {key} (top {top} by total time)", top)
    slowest = sorted(calls, key=lambda c: -c.self_cpu_time_us)[:top]
    print_module_records(console, slowest, f"Top {top} calls by self time", top)


def default_fork() -> Path | None:
    """The first vLLM source tree found; an uninitialised submodule (empty vllm/) is no tree."""
    here = Path(__file__).resolve().parents[2]
    candidates = (os.environ.get("WORKBENCH_FORK"), "/workspace/vllm", str(here / "vllm"))
    return _first_dir(*(c for c in candidates if c and (Path(c) / "csrc").is_dir()))


def run_kernels(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from workbench.trace.kernel_map import build_index
    from workbench.trace.kernels import find_trace_files, kernels_from_trace, profile_to_chrome_trace

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    profiler = args.profiler
    if profiler == "auto":
        profiler = "torch" if args.hf_config else "vllm"
    if profiler == "vllm" and args.hf_config:
        raise WorkbenchError("--profiler vllm needs the vLLM backend: drop --hf-config or use --profiler torch")
    vllm_dir = tempfile.mkdtemp(prefix="vllm-profile-", dir=out) if profiler == "vllm" else None
    target = make_target(args, "kernels", console, vllm_profiler_dir=vllm_dir)
    console.print(f"[bold]{target.description}[/]")
    for note in target.notes:
        console.print(f"[dim]{note}[/]")
    fork = Path(args.fork) if args.fork else default_fork()
    custom = custom_kernels_dir(args)
    index = build_index(fork, custom=custom) if fork or custom else None
    if fork is None:
        console.print("[yellow]no vLLM source tree found (--fork): vLLM kernels will show as unknown[/]")
    swapped = with_custom_gemm(target, args, console)
    runner = target.run
    for _ in range(max(args.warmup, 0)):
        runner()
    device = target.device
    chrome = out / "kernels-trace.json"
    if profiler == "torch":
        profile_to_chrome_trace(runner, chrome, cuda=device == "cuda")
        traces = [chrome]
    else:
        target.start_profile()
        runner()
        target.stop_profile()
        traces = find_trace_files(vllm_dir)
        if not traces:
            raise WorkbenchError(f"vLLM's profiler wrote no trace under {vllm_dir}: check the log above, or "
                                 "use --profiler torch")
        console.print(f"vLLM trace file(s): {', '.join(str(t) for t in traces)}")
    rows, groups = kernels_from_trace(traces, index, device)
    return {"model": target.description, "backend": target.backend, "device": device, "profiler": profiler,
            "chrome_traces": [str(t) for t in traces], "fork": str(fork) if fork else None,
            "custom_gemm_layers": swapped, "kernels": rows, "groups": groups, "notes": target.notes}


def print_kernels(doc: dict[str, Any], console: Console, top: int) -> None:
    from workbench.trace.report import print_groups, print_kernel_table

    rows = doc["kernels"]
    what = "CUDA kernels" if doc.get("device") == "cuda" else "CPU ops (self time; no CUDA device)"
    total = sum(r.total_time_us for r in rows)
    print_kernel_table(console, rows, f"Top {top} {what}: {len(rows)} names, {total:.0f} µs total", top)
    print_groups(console, doc["groups"], "By category and origin (GEMM split by library: cublas / custom / "
                                         "vllm-triton / triton-inductor / aten)")
    unknown = [r for r in rows if r.origin == "unknown"]
    if unknown:
        console.print(f"[yellow]{len(unknown)} kernel name(s) not found in the scanned sources, e.g. "
                      f"{unknown[0].short_name}[/]")


RUNNERS = {"layers": (run_layers, print_layers), "modules": (run_modules, print_modules),
           "kernels": (run_kernels, print_kernels)}


def main(mode: str, argv: list[str] | None = None) -> int:
    """Entry point of `python -m workbench.trace MODE`: run, print, save; one line and exit 1 on a user error."""
    from workbench.trace.records import load_trace, save_trace

    args = build_parser(mode).parse_args(argv)
    console = Console(record=True, width=max(Console().width, 160))
    try:
        if args.load:
            doc = load_trace(args.load)
            if doc["kind"] != mode:
                raise WorkbenchError(f"{args.load} is a {doc['kind']} trace: use python -m workbench.trace "
                                     f"{doc['kind']} --load")
            console.print(f"[bold]{doc.get('model', '')}[/] (loaded from {args.load})")
            RUNNERS[mode][1](doc, console, args.top)
            return 0
        run, show = RUNNERS[mode]
        payload = run(args, console)
        out = Path(args.out)
        path = save_trace(out / f"{mode}.json", mode, payload)
        doc = load_trace(path)  # print what was saved: the file is proven to load again
        show(doc, console, args.top)
        report = out / f"{mode}-report.txt"
        console.print(f"\nwrote {path}" + (f", {out / 'kernels-trace.json'}" if mode == "kernels" and
                                            doc.get("profiler") == "torch" else "") + f", {report}")
        report.write_text(console.export_text())
        return 0
    except WorkbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
