#!/usr/bin/env python3
"""The paired A/B driver: the arms' engines side by side in one process, their iterations interleaved.

Why: on the H200 host `vllm bench` latency of the same configuration varied by 68% between processes and
by 2-9% within one (docs/results/engine_h200/). Separate processes per run make every sample carry its own
process's fate; here each round starts one fresh engine per arm (each its own engine-core process, created
with that arm's environment), then times the arms in ABBA order, iteration by iteration, in the same
minutes. Drift hits both arms alike; what makes one engine fast or slow shows as a per-round bias that an
A/A session measures and the rounds average out.

The timed work is what `vllm bench` times: latency = one `generate` of --batch-size seeded prompts of
--input-len tokens, --output-len tokens each (ignore_eos, temperature 1.0, as vllm/benchmarks/latency.py);
throughput = one `generate` of --num-prompts such requests (tokens/s = prompt + output tokens over the
elapsed time, as vllm/benchmarks/throughput.py).

usage: python engine_ab.py --model M --mode latency|throughput --arms JSON --rounds R --iters K --out FILE
  --arms: {"baseline": {ENV...}, "control": {ENV...}, "custom": {ENV...}} (the switch, compile cache,
  counter file of each arm; the control is the baseline again, the A/A inside every round)
The output file is rewritten after every round, so a run stopped by a time limit keeps its finished rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import sys
import time


def prompts(count: int, length: int, vocab: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"prompt_token_ids": [rng.randrange(vocab) for _ in range(length)]} for _ in range(count)]


def start_engine(args: argparse.Namespace, env: dict[str, str], extra: dict | None = None):
    """A fresh engine whose engine-core process starts with this arm's environment (``extra``: more LLM kwargs)."""
    os.environ.update(env)
    try:  # vLLM caches its environment after start-up; the next engine must read this arm's values
        from vllm import envs

        if hasattr(envs, "disable_envs_cache"):
            envs.disable_envs_cache()
    except ImportError:
        pass
    from vllm import LLM

    kwargs = {"model": args.model, "seed": args.seed, "tensor_parallel_size": args.tp,
              "gpu_memory_utilization": args.gpu_memory_utilization,
              "max_model_len": args.input_len + args.output_len + 16, "enable_prefix_caching": False}
    if args.tokenizer:
        kwargs["tokenizer"] = args.tokenizer
    if args.load_format:
        kwargs["load_format"] = args.load_format
    if getattr(args, "timeline", False):
        kwargs["disable_log_stats"] = False  # what makes the engine core stamp each request (stamps())
    return LLM(**kwargs, **(extra or {}))


def stamps(outputs, t0_wall: float, t0_mono: float) -> list[list[float]] | None:
    """When each request of one timed generate met the engine: [arrival, queued, scheduled, first token, last
    token] in seconds from the generate's start, in arrival order. vLLM stamps them when its stats are on
    (RequestOutput.metrics, a RequestStateStats): arrival in the front end's wall clock, the rest in the engine
    core's monotonic clock, which on one host is this process's. Requests scheduled by one engine step share
    its stamp, so the stamps say which step took which request. None: this vLLM did not stamp them."""
    rows = []
    for out in outputs:
        m = getattr(out, "metrics", None)
        if m is None or not getattr(m, "scheduled_ts", 0.0):
            return None
        rows.append([round(m.arrival_time - t0_wall, 5), *(round(getattr(m, k) - t0_mono, 5) for k in
                                                           ("queued_ts", "scheduled_ts", "first_token_ts",
                                                            "last_token_ts"))])
    return sorted(rows)


def cpu_sets(names: list[str], available: set[int]) -> dict[str, list[int]] | None:
    """Disjoint CPU sets: the first share for this front end, one share per arm's engine; None when there are fewer
    CPUs than that. Engines that share cores (with each other, or with the front end busy-waiting for outputs)
    take each other's time slices; a CPU-bound engine runs as fast as the cores it gets."""
    cpus = sorted(available)
    share = len(cpus) // (len(names) + 1)
    if share < 1:
        return None
    return {"front": cpus[:share], **{n: cpus[(i + 1) * share:(i + 2) * share] for i, n in enumerate(names)}}


@contextlib.contextmanager
def pinned(cpus: list[int] | None):
    """This process on ``cpus`` while the block runs: processes it starts meanwhile (an engine core, its workers)
    keep that affinity for life. None: no change."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


ADMISSIONS = ("whole", "stream")


def whole_batch_refusal(engine) -> str | None:
    """Why this engine cannot take a batch whole (None: it can). Whole: the engine core's scheduler is paused
    ("keep": requests added meanwhile wait, no step runs) while ``LLM.enqueue`` adds the batch, then resumed, so
    its first step schedules every request. ``LLM.generate`` (what `vllm bench` calls) adds the requests one by
    one while the engine core already steps: the first step takes whichever requests have arrived. On the H200
    two profiled Llama-3-8B generates of the same batch of 8 prefilled 6 then 2 requests, and 4 then 4; which
    split an iteration gets depends on CPU timing, and every later step differs with it."""
    llm_engine = getattr(engine, "llm_engine", None)
    core = getattr(llm_engine, "engine_core", None)
    if not all(callable(getattr(owner, name, None)) for owner, name in
               ((core, "call_utility"), (engine, "enqueue"), (engine, "wait_for_completion"))):
        return "this vLLM's LLM has no enqueue/wait_for_completion or engine-core call_utility"
    try:
        core.call_utility("pause_scheduler", "keep", False)
        core.call_utility("resume_scheduler")
    except Exception as exc:  # the engine core answers an unknown utility with an error, raised here
        return f"its engine core cannot pause the scheduler ({str(exc).splitlines()[0][:160]})"
    return None


def generate_whole(engine, batch: list, params) -> list:
    """One generate of ``batch`` whose first engine step sees every request (``whole_batch_refusal``)."""
    core = engine.llm_engine.engine_core
    core.call_utility("pause_scheduler", "keep", False)
    try:
        engine.enqueue(batch, params, use_tqdm=False)
    finally:
        core.call_utility("resume_scheduler")
    return engine.wait_for_completion(use_tqdm=False)


def generator(engine, admission: str):
    """The timed call for this engine: ``(generate, admission actually used, why not whole)``."""
    def stream(batch, params):
        return engine.generate(batch, params, use_tqdm=False)

    if admission != "whole":
        return stream, "stream", None
    refusal = whole_batch_refusal(engine)
    if refusal is not None:
        return stream, "stream", refusal
    return (lambda batch, params: generate_whole(engine, batch, params)), "whole", None


def stop_engine(engine) -> None:
    """End an engine's engine-core process now (vLLM 0.24's LLMEngine has no shutdown(); its client has)."""
    llm_engine = getattr(engine, "llm_engine", None)
    for owner in (getattr(llm_engine, "engine_core", None), llm_engine):
        shutdown = getattr(owner, "shutdown", None)
        if callable(shutdown):
            shutdown()
            return


def engine_gpus(tp: int) -> list[int]:
    """NVML indices of the GPUs an engine of ``tp`` ranks uses: the first tp of CUDA_VISIBLE_DEVICES (vLLM puts
    rank r on visible device r), else of all GPUs. UUIDs in CUDA_VISIBLE_DEVICES are looked up by NVML."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if not visible:
        return list(range(tp))
    import pynvml

    out = []
    for v in visible[:tp]:
        out.append(int(v) if v.isdigit() else pynvml.nvmlDeviceGetIndex(pynvml.nvmlDeviceGetHandleByUUID(v)))
    return out


def visible_gpu_count() -> int | None:
    """GPUs this process may use (CUDA_VISIBLE_DEVICES, else NVML's count); None without NVML (a CPU host)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        count = int(pynvml.nvmlDeviceGetCount())
    except Exception:
        return None
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return min(count, len(visible)) if "CUDA_VISIBLE_DEVICES" in os.environ else count


def free_gpu_bytes(tp: int = 1) -> int | None:
    """The least free memory among the engine's GPUs, through NVML (not torch: CUDA initialised here would make
    vLLM spawn, not fork). Every rank holds its share of its own GPU: the tightest GPU decides."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return min(int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).free)
                   for i in engine_gpus(tp))
    except Exception:  # no NVML (a CPU host): nothing to wait for
        return None


def wait_for_memory(target: int | None, tp: int = 1, timeout_s: float = 120.0) -> None:
    """Until every GPU of the engines has ``target`` bytes free again: a round's engines (all their ranks) must
    have let go of their memory before the next round's engines ask vLLM for theirs."""
    if target is None:
        return
    deadline = time.monotonic() + timeout_s
    while (free := free_gpu_bytes(tp)) is not None and free < target and time.monotonic() < deadline:
        time.sleep(0.5)


def next_round_s(last_round_s: float, engine_start_s: dict[str, float]) -> float:
    """How long the next round should take: the last one, with every engine starting as fast as that round's
    fastest. The first round compiles each arm's graph once (on the H200: Llama-3-8B's custom engine 108 s, the
    control, which loads the baseline's graph, 39 s); later engines load theirs from the compile cache, so
    judging round 1 by round 0 as it was would stop a budgeted session after one round."""
    if not engine_start_s:
        return last_round_s
    fastest = min(engine_start_s.values())
    return last_round_s - sum(engine_start_s.values()) + fastest * len(engine_start_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--tokenizer")
    parser.add_argument("--load-format")
    parser.add_argument("--mode", choices=("latency", "throughput"), required=True)
    parser.add_argument("--arms", required=True, help="JSON: arm -> environment")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=30, help="timed iterations per arm per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations per arm per round")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-prompts", type=int, default=200)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--gpu-memory-utilization", type=float, default=None,
                        help="per engine and GPU (default 0.84 / arms): every arm's engine holds its share of each "
                             "of its tp GPUs at once (vLLM's fraction is per GPU, so the split is the same at any tp)")
    parser.add_argument("--stop-at", type=float, default=0.0,
                        help="start no round that would end past this time (seconds since the epoch; judged by the "
                             "last round with every engine starting as fast as its fastest one, +10%%). A deadline, "
                             "not a duration: the caller's clock started before this process imported vLLM")
    parser.add_argument("--pin-cpus", action="store_true",
                        help="each arm's engine (engine core and workers) on CPUs of its own, this process on others")
    parser.add_argument("--admission", choices=ADMISSIONS, default="stream",
                        help="stream (default): LLM.generate's request-by-request arrival, as `vllm bench` has it "
                             "(the first step takes whichever requests have arrived); whole: each timed generate's "
                             "batch reaches the scheduler at once, so every iteration steps the same batches")
    parser.add_argument("--timeline", action="store_true",
                        help="stamp every request of every timed generate: when it reached the engine core and "
                             "which engine step scheduled it (vLLM's request stats on, in every arm alike)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--profile-dir", help="after the timed rounds, one profiled generate per arm (torch "
                                              "profiler traces in DIR/<arm>/, engine_profile.py)")
    args = parser.parse_args(argv)

    gpus = visible_gpu_count()
    if gpus is not None and args.tp > gpus:
        print(f"error: --tp {args.tp} needs {args.tp} GPUs, this process sees {gpus}: lower --tp, or widen "
              "CUDA_VISIBLE_DEVICES / run on a host with that many GPUs", file=sys.stderr)
        return 2
    arms: dict[str, dict[str, str]] = json.loads(args.arms)
    names = list(arms)
    sets = cpu_sets(names, os.sched_getaffinity(0)) if args.pin_cpus else None
    if args.pin_cpus and sets is None:
        print(f"error: --pin-cpus needs {len(names) + 1} CPUs (one share per engine and one for this process), this "
              f"process may use {len(os.sched_getaffinity(0))}: drop --pin-cpus, or run where more CPUs are free",
              file=sys.stderr)
        return 2
    if sets is not None:
        os.sched_setaffinity(0, sets["front"])
        print(f"CPU sets: {sets}", flush=True)
    from vllm import SamplingParams

    if args.gpu_memory_utilization is None:
        args.gpu_memory_utilization = round(0.84 / len(names), 3)
    with open(os.path.join(args.model, "config.json")) as fh:
        vocab = int(json.load(fh)["vocab_size"])
    count = args.batch_size if args.mode == "latency" else args.num_prompts
    batch = prompts(count, args.input_len, min(vocab, 10000), args.seed)
    params = SamplingParams(temperature=1.0, top_p=1.0, ignore_eos=True, max_tokens=args.output_len)
    result = {"mode": args.mode, "arms": names, "iters": args.iters, "warmup": args.warmup, "count": count,
              "input_len": args.input_len, "output_len": args.output_len, "cpu_sets": sets,
              "admission": args.admission, "timeline": args.timeline, "rounds": []}
    upcoming = 0.0
    free_at_start = free_gpu_bytes(args.tp)
    slack = 2 << 30  # what other processes may take meanwhile (per GPU)
    for r in range(args.rounds):
        if args.stop_at and r and time.time() + 1.1 * upcoming > args.stop_at:
            print(f"stopping after {r} of {args.rounds} rounds: another would end past the budget's deadline "
                  f"(--stop-at, {args.stop_at - time.time():.0f} s from now)", flush=True)
            break
        round_began = time.perf_counter()
        # Alternate which arm's engine starts first: start-up order must not favour an arm.
        order = names if r % 2 == 0 else list(reversed(names))
        engines, started = {}, {}
        for name in order:
            t0 = time.perf_counter()
            with pinned(sets[name] if sets else None):
                engines[name] = start_engine(args, {k.replace("{round}", str(r)): v.replace("{round}", str(r))
                                                    for k, v in arms[name].items()})
            started[name] = round(time.perf_counter() - t0, 1)
            print(f"round {r}: {name} engine up in {started[name]} s", flush=True)
        # Every arm is timed the same way: one engine that cannot take a batch whole makes every arm stream.
        chosen = {name: generator(engines[name], result["admission"]) for name in names}
        refused = {name: why for name, (_, _, why) in chosen.items() if why}
        if refused:
            result["admission"] = "stream"
            result["admission_refused"] = "; ".join(f"{n}: {why}" for n, why in refused.items())
            print(f"round {r}: batches arrive request by request: {result['admission_refused']}", flush=True)
        generate = {name: generator(engines[name], "stream")[0] if refused else chosen[name][0] for name in names}
        for _ in range(args.warmup):
            for name in names:
                generate[name](batch, params)
        times: dict[str, list[float]] = {n: [] for n in names}
        timeline: dict[str, list] = {n: [] for n in names}
        for i in range(args.iters):
            for name in (names if i % 2 == 0 else list(reversed(names))):  # ABBA across iterations
                t0_wall, t0_mono, t0 = time.time(), time.monotonic(), time.perf_counter()
                outputs = generate[name](batch, params)
                times[name].append(time.perf_counter() - t0)
                if args.timeline:
                    timeline[name].append(stamps(outputs, t0_wall, t0_mono))
        summary = {n: round(sorted(v)[len(v) // 2], 5) for n, v in times.items()}
        print(f"round {r}: median seconds per iteration {summary}", flush=True)
        result["rounds"].append({"round": r, "start_order": order, "engine_start_s": started, "seconds": times,
                                 **({"timeline": timeline} if args.timeline else {})})
        for engine in engines.values():  # every engine core ends before the next round's start
            stop_engine(engine)
        del engines
        gc.collect()
        wait_for_memory(None if free_at_start is None else free_at_start - slack, args.tp)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".tmp", "w") as fh:
            json.dump(result, fh)
        os.replace(args.out + ".tmp", args.out)
        upcoming = next_round_s(time.perf_counter() - round_began, started)
    print(f"paired {args.mode}: {len(result['rounds'])} rounds x {args.iters} iterations per arm -> {args.out}")
    if args.profile_dir:  # outside the timed rounds: a profiled generate is no timing
        from engine_profile import profile_arms

        profile_arms(args, arms, batch, params, args.profile_dir, start_engine, stop_engine,
                     lambda engine: generator(engine, result["admission"])[0],
                     lambda: wait_for_memory(None if free_at_start is None else free_at_start - slack))
    return 0


if __name__ == "__main__":
    sys.exit(main())
