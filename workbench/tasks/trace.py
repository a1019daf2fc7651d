"""invoke trace: run scripts/trace_<mode>.py in the dev container (logic: workbench.trace.command)."""

from __future__ import annotations

import shlex

from invoke import task

from workbench.config import settings_from_context
from workbench.errors import WorkbenchError, user_errors
from workbench.trace.command import TRACE_ENV, pick_mode, trace_command


@task(auto_shortflags=False, help={
    "layers": "per-module call counts, per-step operator summary, first decoder layer's call order + shapes",
    "modules": "detailed module records (call stack, shapes, times), grouped statistics, top-N",
    "kernels": "CUDA kernel table with each kernel's category, library and csrc/ source file; Chrome trace",
    "model": "model for vLLM (HF id or path in the HF cache); default Qwen/Qwen2.5-0.5B-Instruct",
    "prompt": "prompt text",
    "max_tokens": "tokens to generate (1 prefill + N-1 decode steps); default 8",
    "hf_config": "trace a plain HF model from this config.json (under scripts/ or results/), random weights",
    "top": "rows in top-N tables (default 20)",
    "out": "output folder under results/ (default results/trace)",
    "custom_gemm": "custom GEMM on (vLLM: VLLM_USE_CUSTOM_GEMM=1 plugin; HF: nn.Linear through the contract)",
    "args": "more flags for the script, e.g. \"--module-type RMSNorm --prefix layers.0.\"",
    "dry_run": "print the command instead of running it",
})
@user_errors
def trace(ctx, layers=False, modules=False, kernels=False, model=None, prompt=None, max_tokens=None,
          hf_config=None, top=None, out="results/trace", custom_gemm=False, args="", dry_run=False):
    """Trace the inference path inside the dev container: layers, module records or CUDA kernels."""
    from workbench import flags

    max_tokens = flags.integer("--max-tokens", max_tokens, minimum=1, example="8") or 8
    top = flags.integer("--top", top, minimum=1, example="20") or 20
    settings = settings_from_context(ctx)
    mode = pick_mode(layers, modules, kernels)
    cmd = trace_command(mode, settings.root, model=model, prompt=prompt, max_tokens=max_tokens,
                        hf_config=hf_config, top=top, out=out, custom_gemm=custom_gemm, extra=args)
    print("+ " + shlex.join(cmd))
    if dry_run:
        return
    try:
        from workbench import engine  # lazily: the docker SDK is only needed to run
    except ImportError as err:
        raise WorkbenchError(f"the dev container engine is unavailable ({err}): update the workbench, or run "
                             f"{cmd[1].replace('/workspace/', '')} inside the container yourself") from None

    code = engine.exec_in_container(settings, cmd, env=dict(TRACE_ENV), workdir="/workspace")
    if code != 0:
        raise WorkbenchError(f"trace_{mode}.py exited with {code}: see its output above")


TASKS = [trace]
