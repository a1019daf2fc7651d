"""The end-to-end A/B of the custom GEMM inside vLLM, as a plan: every `vllm bench` run with its arm,
environment and files, before anything runs.

Pure functions (values in, values out): ``--dry-run`` prints the plan, tests check it against vLLM's
real argument parsers. Arms: ``baseline`` (VLLM_USE_CUSTOM_GEMM=0) and ``custom`` (=1) with identical
vLLM arguments and seed, in ABBA order so drift (clocks, thermals, co-tenants) hits both arms alike.
An A/A session (``aa``) runs the baseline in both arms: its spread is the noise floor a verdict needs.
Paths are the runtime's (``workbench.runtime.Places``): the same plan runs in the container or on the host.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass

from workbench.errors import WorkbenchError
from workbench.guest.engine_ab import ADMISSIONS
from workbench.runtime import Places, posix

ARMS = ("baseline", "custom")
# The paired driver adds a second baseline engine in every round: its ratio to the baseline is the A/A
# floor measured on the same engines, in the same minutes, as the A/B it judges.
CONTROL = "control"
PAIRED_ARMS = ("baseline", CONTROL, "custom")
MODES = ("latency", "throughput")
# `vllm serve` + `vllm bench serve` at several load points (workbench/bench/serve.py): not part of "both", since
# a run is a server's whole life, not one `vllm bench` process.
SERVE = "serve"
GEMM_SWITCH = "VLLM_USE_CUSTOM_GEMM"
LAYERS_ENV = "VLLM_CUSTOM_GEMM_LAYERS"
COUNTS_ENV = "CUSTOM_KERNELS_COUNTS_FILE"
# guest/hook holds only sitecustomize.py: first on PYTHONPATH, it loads in every Python process of a run.
HOOK = "hook"
# `python -m` rather than the `vllm` console script: the runtime's interpreter is the one that runs it,
# wherever its scripts folder is (or isn't) on PATH.
VLLM_CLI = ("-m", "vllm.entrypoints.cli.main")
WEIGHTS = ("auto", "real", "dummy", "random")
# "cli": every run a `vllm bench` process, arms in ABBA order; "paired": one process holds both arms' engines
# and interleaves their iterations, fresh engines each round (workbench/bench/paired.py says why).
DRIVERS = ("cli", "paired")
COMPILE_CACHE = ("per-arm", "shared", "off")


@dataclass(frozen=True)
class BenchSpec:
    """What the user asked for; defaults are small enough for a 0.5B model to finish in minutes."""

    model: str = "Qwen/Qwen2.5-0.5B"
    mode: str = "latency"  # latency | throughput | both
    input_len: int = 128
    output_len: int = 128
    num_prompts: int = 200  # throughput only
    batch_size: int = 8  # latency only
    repeats: int = 5
    tp: int = 1
    seed: int = 0
    # latency: timed iterations and warm-up iterations per run (vllm bench latency --num-iters[-warmup]).
    iters: int = 30
    warmup_iters: int = 5
    extra: tuple[str, ...] = ()
    # Compile cache: "per-arm" gives each arm its own VLLM_CACHE_ROOT, so a run can never load the other
    # arm's compiled graph and repeats of an arm skip compilation; "shared" gives both arms one root and
    # relies on vLLM's cache key, which holds the switch since the plugin registers it (the real-engine
    # tier proves it); "off" (VLLM_DISABLE_COMPILE_CACHE=1) recompiles every run.
    compile_cache: str = "per-arm"
    gemm_layers: str = ""  # VLLM_CUSTOM_GEMM_LAYERS globs; both arms get them
    aa: bool = False  # both arms the baseline: measures the noise floor
    gate: bool = True  # the output gate: both arms generate the same text before their speed counts
    driver: str = "cli"  # "paired": repeats are rounds of fresh engines, iters interleaved per round
    # paired: start no round that would end past this many minutes of the driver (0: no limit), so a job
    # under a time limit (a Slurm allocation, a timed call) keeps whole rounds instead of losing them all.
    budget_min: float = 0.0
    pin_cpus: bool = False  # paired: each arm's engine on CPUs of its own (workbench/guest/engine_ab.py)
    # paired: "stream" hands each timed generate's batch to the engine as LLM.generate and `vllm bench` do, "whole"
    # to the scheduler at once (workbench/guest/engine_ab.py whole_batch_refusal says why); "": the driver's own
    # (``batch_admission``).
    admission: str = ""
    timeline: bool = False  # paired: stamp which engine step took which request (workbench/bench/timeline.py)
    gate_prompts: int = 16
    gate_tokens: int = 32
    # Model weights: "real" (an HF id or checkpoint), "dummy" (vLLM's --load-format dummy), "random" (a
    # seeded checkpoint at the model's init scale, written once); "auto": dummy for a bare config.
    weights: str = "auto"
    # serve: the load points, either request rates ("1", "4", "inf") or max-concurrencies; neither: the
    # default concurrencies (workbench/bench/serve.py). port 0: a free one where the server runs.
    request_rates: tuple[str, ...] = ()
    concurrencies: tuple[int, ...] = ()
    port: int = 0
    server_timeout_s: float = 600.0  # a server not healthy by then is an error (load + compile of a big model)
    point_timeout_s: float = 1800.0  # a load point still running by then: the server is taken to hang

    @property
    def modes(self) -> tuple[str, ...]:
        return MODES if self.mode == "both" else (self.mode,)

    @property
    def batch_admission(self) -> str:
        """How timed batches reach the engine. The paired driver defaults to whole: on the H200 the A/A of
        Llama-3-8B latency had a 0.3% floor with it (iterations within an engine varied by 0.4%) against 1.2% and
        3.2% streamed in the same hold, because a streamed batch's first step takes whichever requests have
        arrived. `vllm bench` (the cli driver) always streams."""
        return self.admission or ("whole" if self.driver == "paired" else "stream")


def parse_extra(extra: str | None) -> tuple[str, ...]:
    """The --extra string ("--enforce-eager --max-model-len 2048") as argv words."""
    try:
        return tuple(shlex.split(extra)) if extra else ()
    except ValueError as err:
        raise WorkbenchError(f"--extra {extra!r} is not a valid command line ({err}): check its quotes") from None


# Flags the planner sets itself; passing them in --extra would make the two arms disagree with the plan.
_OWNED_FLAGS = {"--model", "--seed", "--output-json", "--input-len", "--output-len", "--batch-size",
                "--num-prompts", "--tensor-parallel-size", "-tp", "--dataset-name", "--random-input-len",
                "--random-output-len", "--num-iters", "--num-iters-warmup", "--load-format", "--tokenizer",
                "--host", "--port"}


def validate_spec(spec: BenchSpec) -> BenchSpec:
    """Check the request; raise WorkbenchError (one line with the fix) on bad input."""
    if spec.mode not in (*MODES, "both", SERVE):
        raise WorkbenchError(f"--mode {spec.mode!r} is not one of latency, throughput, both, serve")
    if spec.mode == SERVE:
        _validate_serve(spec)
    elif spec.request_rates or spec.concurrencies:
        raise WorkbenchError("--request-rates and --concurrencies are load points of `vllm bench serve`: add "
                             "--mode serve")
    for name in ("input_len", "output_len", "num_prompts", "batch_size", "repeats", "tp", "iters", "gate_prompts",
                 "gate_tokens"):
        if getattr(spec, name) < 1:
            raise WorkbenchError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(spec, name)}")
    if spec.budget_min < 0:
        raise WorkbenchError(f"--budget-min must be >= 0 (0: no limit), got {spec.budget_min}")
    if spec.warmup_iters < 0:
        raise WorkbenchError(f"--warmup-iters must be >= 0, got {spec.warmup_iters}")
    if spec.compile_cache not in COMPILE_CACHE:
        raise WorkbenchError(f"--compile-cache {spec.compile_cache!r} is not one of {', '.join(COMPILE_CACHE)}")
    if spec.weights not in WEIGHTS:
        raise WorkbenchError(f"--weights {spec.weights!r} is not one of {', '.join(WEIGHTS)}")
    if spec.driver not in DRIVERS:
        raise WorkbenchError(f"--driver {spec.driver!r} is not one of {', '.join(DRIVERS)}")
    if spec.pin_cpus and spec.driver != "paired":
        raise WorkbenchError("--pin-cpus places the paired driver's engines on CPUs of their own: add --driver paired")
    if spec.admission and spec.admission not in ADMISSIONS:
        raise WorkbenchError(f"--admission {spec.admission!r} is not one of {', '.join(ADMISSIONS)}")
    if spec.admission and spec.driver != "paired":
        raise WorkbenchError("--admission sets how the paired driver hands a batch to the engine (`vllm bench` "
                             "streams it): add --driver paired, or drop --admission")
    if spec.timeline and spec.driver != "paired":
        raise WorkbenchError("--timeline stamps the paired driver's requests (`vllm bench` has no such record): add "
                             "--driver paired, or drop --timeline")
    if spec.driver == "paired" and spec.extra:
        raise WorkbenchError("--extra passes `vllm bench` flags, which the paired driver does not run: drop it, or "
                             "use --driver cli")
    for word in spec.extra:
        flag = word.split("=", 1)[0]
        if flag in _OWNED_FLAGS:
            raise WorkbenchError(f"--extra must not set {flag}: use the task's own flag for it")
    return spec


def _validate_serve(spec: BenchSpec) -> None:
    """What serve mode refuses (workbench/bench/serve.py plans it), each in one line with the fix."""
    if spec.request_rates and spec.concurrencies:
        raise WorkbenchError("--request-rates and --concurrencies both given: a session sweeps one of them (rates: "
                             "Poisson arrivals, no cap; concurrencies: all at once, at most N in flight)")
    if spec.driver != "cli":
        raise WorkbenchError("--driver paired times offline engines in one process; serve mode runs `vllm serve`: "
                             "drop --driver (serve runs each arm's server in ABBA order)")
    given = spec.request_rates or spec.concurrencies
    if len(set(given)) != len(given):
        raise WorkbenchError(f"load points {', '.join(map(str, given))} repeat one: give each once")
    if not 0 <= spec.port <= 65535:
        raise WorkbenchError(f"--port {spec.port} is not a TCP port: 1-65535, or 0 for a free one")
    if spec.server_timeout_s <= 0:
        raise WorkbenchError(f"--server-timeout must be > 0 seconds, got {spec.server_timeout_s:g}")
    if spec.point_timeout_s <= 0:
        raise WorkbenchError(f"--point-timeout must be > 0 seconds, got {spec.point_timeout_s:g}")


def model_slug(model: str) -> str:
    """A folder-safe model name: "Qwen/Qwen2.5-0.5B" -> "Qwen2.5-0.5B"."""
    tail = model.rstrip("/").split("/")[-1] or "model"
    if tail == "config.json":
        tail = model.rstrip("/").split("/")[-2] if "/" in model.rstrip("/") else "model"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", tail)


def session_name(model: str, now: float | None = None, aa: bool = False) -> str:
    """results/<timestamp>-<model>[-aa]: UTC, sortable."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{model_slug(model)}{'-aa' if aa else ''}"


@dataclass(frozen=True)
class ModelArgs:
    """How vLLM is pointed at the model: the path or id, the load format and tokenizer (None: vLLM's default)."""

    model: str
    load_format: str | None = None
    tokenizer: str | None = None


# The throughput flags of releases the workbench was checked against, for plans made before the installed
# vLLM was asked (--dry-run): 0.13.0 knows only --input-len; 0.24.0 and 0.33.0 have the random dataset's
# --random-input-len, whose default (1024) wins over --input-len.
RANDOM_LEN_FLAGS = frozenset({"--random-input-len", "--random-output-len"})


def throughput_flags_for(version: str | None) -> frozenset[str]:
    """What a release's `vllm bench throughput` is expected to accept of the length flags."""
    try:
        major, minor = (int(x) for x in (version or "").split(".")[:2])
    except ValueError:
        return RANDOM_LEN_FLAGS
    return RANDOM_LEN_FLAGS if (major, minor) >= (0, 14) else frozenset()


def vllm_bench_argv(spec: BenchSpec, mode: str, output_json: str, model: ModelArgs, python: str,
                    throughput_flags: frozenset[str] = RANDOM_LEN_FLAGS) -> list[str]:
    """The exact `vllm bench latency|throughput` command line for one run.

    ``throughput_flags``: the installed vLLM's throughput options (the guest env capture lists them). Where
    the random dataset has its own length flags they must carry the lengths: their defaults (1024/128)
    win over --input-len/--output-len."""
    argv = [python, *VLLM_CLI, "bench", mode, "--model", model.model, "--seed", str(spec.seed),
            "--tensor-parallel-size", str(spec.tp)]
    if model.load_format:
        argv += ["--load-format", model.load_format]
    if model.tokenizer:
        argv += ["--tokenizer", model.tokenizer]
    if mode == "latency":
        argv += ["--input-len", str(spec.input_len), "--output-len", str(spec.output_len),
                 "--batch-size", str(spec.batch_size), "--num-iters", str(spec.iters),
                 "--num-iters-warmup", str(spec.warmup_iters)]
    elif mode == "throughput":
        lengths = ("--random-input-len", "--random-output-len") if throughput_flags >= RANDOM_LEN_FLAGS else (
            "--input-len", "--output-len")
        argv += ["--dataset-name", "random", lengths[0], str(spec.input_len), lengths[1], str(spec.output_len),
                 "--num-prompts", str(spec.num_prompts)]
    else:
        raise WorkbenchError(f"unknown bench mode {mode!r}: latency or throughput")
    return [*argv, *spec.extra, "--output-json", output_json]


@dataclass(frozen=True)
class PlannedRun:
    """One `vllm bench` invocation: which arm, where its files go, what env it gets."""

    index: int
    mode: str
    arm: str
    repeat: int
    run_id: str
    argv: tuple[str, ...]
    env: dict[str, str]
    output_json: str  # runtime path
    log: str  # runtime path
    counts_pattern: str  # runtime path with {pid}
    hook_dir: str  # runtime path of the sitecustomize.py counter hook

    def command(self) -> list[str]:
        return hooked_command(self.argv, self.hook_dir, self.log)


def hooked_command(argv: Sequence[str], hook_dir: str, log: str) -> list[str]:
    """The command, its output tee'd to a log, its exit status kept.

    The hook folder goes first on PYTHONPATH (keeping the runtime's own entries) so its sitecustomize.py
    runs in every Python process of the command, including vLLM's engine core."""
    hook = shlex.quote(hook_dir)
    line = (f'set -o pipefail; export PYTHONPATH={hook}${{PYTHONPATH:+:$PYTHONPATH}}; '
            f"{shlex.join(argv)} 2>&1 | tee {shlex.quote(log)}")
    return ["bash", "-c", line]


def arm_order(repeats: int) -> list[str]:
    """ABBA...: baseline, custom, custom, baseline, baseline, custom, ... (each arm `repeats` times)."""
    order: list[str] = []
    for r in range(repeats):
        order += list(ARMS) if r % 2 == 0 else list(reversed(ARMS))
    return order


def session_dir(places: Places, session: str) -> str:
    return posix(places.results, session)


def arm_env(spec: BenchSpec, arm: str, places: Places, kernels_digest: str = "") -> dict[str, str]:
    """The switch, the layer filter and the compile cache of one arm (A/A: the baseline twice).

    The custom arm's cache folder is named after the kernels package's digest: which layers route
    (and so the compiled graph) follows the package and its dispatch table, which vLLM's key can't see."""
    on = arm == "custom" and not spec.aa
    env = {GEMM_SWITCH: "1" if on else "0"}
    if spec.gemm_layers:
        env[LAYERS_ENV] = spec.gemm_layers
    if spec.compile_cache == "off":
        env["VLLM_DISABLE_COMPILE_CACHE"] = "1"
    elif spec.compile_cache == "shared":
        env["VLLM_CACHE_ROOT"] = posix(places.results, ".vllm-cache", "shared")
    else:
        folder = "baseline" if arm == CONTROL else arm  # the control is the baseline: it loads the same graph
        if arm == "custom" and kernels_digest:
            folder = f"custom-{kernels_digest[:12]}"
        env["VLLM_CACHE_ROOT"] = posix(places.results, ".vllm-cache", folder)
    return env


def plan_runs(spec: BenchSpec, session: str, places: Places, model: ModelArgs, python: str,
              kernels_digest: str = "", throughput_flags: frozenset[str] = RANDOM_LEN_FLAGS) -> list[PlannedRun]:
    """Every run of the session, in execution order (per mode: alternating arms, N repeats each)."""
    base = session_dir(places, session)
    runs: list[PlannedRun] = []
    for mode in spec.modes:
        seen = {arm: 0 for arm in ARMS}
        for arm in arm_order(spec.repeats):
            repeat = seen[arm]
            seen[arm] += 1
            run_id = f"{mode}-{arm}-r{repeat}"
            out = posix(base, "runs", f"{run_id}.json")
            counts = posix(base, "runs", f"{run_id}.counts-{{pid}}.json")
            env = {**arm_env(spec, arm, places, kernels_digest), COUNTS_ENV: counts}
            runs.append(PlannedRun(
                index=len(runs), mode=mode, arm=arm, repeat=repeat, run_id=run_id,
                argv=tuple(vllm_bench_argv(spec, mode, out, model, python, throughput_flags)), env=env,
                output_json=out, log=posix(base, "runs", f"{run_id}.log"), counts_pattern=counts,
                hook_dir=posix(places.guest, HOOK),
            ))
    return runs


GATE = "gate"  # results/<session>/gate/<arm>.json


def gate_runs(spec: BenchSpec, session: str, places: Places, model: ModelArgs, python: str,
              kernels_digest: str = "") -> list[tuple[str, list[str], dict[str, str]]]:
    """(arm, command, env) of the output gate: the seeded prompt set through each arm, after the timed runs."""
    base = posix(session_dir(places, session), GATE)
    out = []
    for arm in ARMS:
        argv = [python, places.guest_script("engine_gate.py"), "--model", model.model,
                *(["--tokenizer", model.tokenizer] if model.tokenizer else []),
                "--out", posix(base, f"{arm}.json"), "--prompts", str(spec.gate_prompts),
                "--tokens", str(spec.gate_tokens), "--seed", str(spec.seed), "--tp", str(spec.tp)]
        env = {**arm_env(spec, arm, places, kernels_digest), COUNTS_ENV: posix(base, f"{arm}.counts-{{pid}}.json")}
        out.append((arm, hooked_command(argv, posix(places.guest, HOOK), posix(base, f"{arm}.log")), env))
    return out


def env_capture_command(places: Places, session: str, python: str) -> list[str]:
    """The command that writes the session's environment (GPU, versions, fork state) to env.json."""
    return [python, places.guest_script("bench_env.py"), "--out", posix(session_dir(places, session), "env.json"),
            "--fork", places.fork, "--patches", places.patches, "--install-record", places.install_record]
