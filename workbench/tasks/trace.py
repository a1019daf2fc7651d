"""trace.layers, trace.modules, trace.kernels: the inference path, run where the runtime runs steps
(logic: workbench.trace.command; the tracer itself: python -m workbench.trace)."""

from __future__ import annotations

import shlex

from invoke import Collection, task

from workbench import flags
from workbench.config import settings_from_context
from workbench.errors import WorkbenchError
from workbench.trace.command import TRACE_ENV, trace_command

HELP = {
    "model": "model for vLLM (HF id or path in the HF cache); default Qwen/Qwen2.5-0.5B-Instruct",
    "prompt": "prompt text",
    "max_tokens": "tokens to generate (1 prefill + N-1 decode steps); default 8",
    "hf_config": "trace a plain HF model from this config.json (under scripts/ or results/), random weights",
    "top": "rows in top-N tables (default 20)",
    "out": "output folder under results/ (default results/trace)",
    "custom_gemm": "custom GEMM on (vLLM: VLLM_USE_CUSTOM_GEMM=1 plugin; HF: nn.Linear through the contract)",
    "args": "more flags for the tracer, e.g. \"--module-type RMSNorm --prefix layers.0.\"",
    "runtime": "docker (the dev container) or host (this machine's workbench.python); default workbench.runtime",
    "dry_run": "print the command instead of running it",
}


def _trace(ctx, mode, model, prompt, max_tokens, hf_config, top, out, custom_gemm, args, runtime, dry_run):
    from workbench import ui  # rich, like torch, only once a trace runs: importing this module stays light
    from workbench.tasks.runtimes import open_runtime, path_mapper, plan_places

    settings = settings_from_context(ctx)
    tokens = flags.integer("--max-tokens", max_tokens, minimum=1, example="8") or 8
    rows = flags.integer("--top", top, minimum=1, example="20") or 20
    if dry_run:
        _, python, where = plan_places(settings, runtime)
        cmd = trace_command(mode, settings.root, path_mapper(settings, runtime), model=model, prompt=prompt,
                            max_tokens=tokens, hf_config=hf_config, top=rows, out=out, custom_gemm=custom_gemm,
                            extra=args, python=python)
        ui.console.out(f"on {where}: + {shlex.join(cmd)}")
        return
    rt = open_runtime(settings, runtime)
    try:
        cmd = trace_command(mode, settings.root, rt.from_host, model=model, prompt=prompt, max_tokens=tokens,
                            hf_config=hf_config, top=rows, out=out, custom_gemm=custom_gemm, extra=args,
                            python=rt.python)
        ui.console.out(f"on {rt.describe()}: + {shlex.join(cmd)}")
        code = rt.run(cmd, env={**TRACE_ENV, **rt.module_env()}, cwd=rt.places.results)
    finally:
        rt.close()
    if code != 0:
        raise WorkbenchError(f"the {mode} trace exited with {code}: see its output above")


def _make(mode: str, doc: str):
    def run(ctx, model=None, prompt=None, max_tokens=None, hf_config=None, top=None, out="results/trace",
            custom_gemm=False, args="", runtime=None, dry_run=False):
        _trace(ctx, mode, model, prompt, max_tokens, hf_config, top, out, custom_gemm, args, runtime, dry_run)

    run.__doc__ = doc
    return task(name=mode, auto_shortflags=False, help=HELP)(run)


layers = _make("layers", "Per-module call counts, per-step operator summary, layer 0's call order and shapes.")
modules = _make("modules", "Module records (call stack, shapes, times), grouped statistics, top-N.")
kernels = _make("kernels", "CUDA kernels by category and library, each mapped to its csrc/ file; Chrome trace.")

ns = Collection("trace")
for t in (layers, modules, kernels):
    ns.add_task(t)
