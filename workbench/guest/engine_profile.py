#!/usr/bin/env python3
"""One profiled generate per arm, outside any timed run: each arm's fresh engine (its own engine-core process,
started with the arm's environment) runs one warm-up generate, then the same generate under vLLM's torch
profiler (``LLM(profiler_config=...)``, which profiles inside the engine-core process), traces written to
<out-dir>/<arm>/. What the attribution (workbench.profile.attribution) reads.

Called by engine_ab.py after its timed rounds: ``engine_ab.py ... --profile-dir DIR`` (``--rounds 0``: only the
profiled generates).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time

ARMS = ("baseline", "custom")  # the control is the baseline again: its profile would add nothing


def profiler_config(trace_dir: str) -> dict:
    """vLLM's torch profiler into ``trace_dir``: plain JSON, no stacks or shapes (small, quick to flush)."""
    return {"profiler": "torch", "torch_profiler_dir": trace_dir, "torch_profiler_with_stack": False,
            "torch_profiler_use_gzip": False, "torch_profiler_record_shapes": False}


def profile_arms(args, arms: dict[str, dict[str, str]], batch: list, params, out_dir: str,
                 start_engine, stop_engine, generator=None, settle=None) -> dict[str, dict]:
    """Profile one generate of each arm with ``start_engine(args, env, extra_kwargs)``; returns per arm the
    trace folder and the seconds the profiled generate took (profiled: not a timing). ``generator(engine)``
    gives the generate call the timed rounds used (the same batch admission); default ``LLM.generate``.
    ``settle()`` waits after each engine stops until its GPU memory is back, before the next engine asks for
    its share."""
    done: dict[str, dict] = {}
    for arm in (a for a in ARMS if a in arms):
        trace_dir = os.path.abspath(os.path.join(out_dir, arm))
        os.makedirs(trace_dir, exist_ok=True)
        env = {k.replace("{round}", "profile"): v.replace("{round}", "profile") for k, v in arms[arm].items()}
        engine = start_engine(args, env, {"profiler_config": profiler_config(trace_dir)})
        try:
            generate = generator(engine) if generator else (
                lambda b, p, e=engine: e.generate(b, p, use_tqdm=False))
            generate(batch, params)  # warm-up: first-call costs stay out of the trace
            engine.start_profile()
            t0 = time.perf_counter()
            generate(batch, params)
            seconds = time.perf_counter() - t0
            engine.stop_profile()
        finally:
            stop_engine(engine)
            del engine
            gc.collect()
            if settle is not None:
                settle()
        done[arm] = {"trace_dir": trace_dir, "profiled_generate_s": round(seconds, 4)}
        print(f"profile: {arm} traces in {trace_dir}", flush=True)
    with open(os.path.join(out_dir, "profile.json"), "w") as fh:
        json.dump({"mode": args.mode, "arms": done, "count": len(batch)}, fh, indent=1)
    return done


if __name__ == "__main__":
    sys.exit("run engine_ab.py with --profile-dir DIR (and --rounds 0 to profile without timed rounds)")
