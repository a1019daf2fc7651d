"""A stand-in for the `vllm` CLI on hosts without a GPU, for the bench orchestration tests.

It reproduces what matters for `invoke bench`: the model runs in a separate "engine-core" process
(multiprocessing, fork by default like vLLM V1, or spawn), where a vLLM plugin would import
custom_kernels and route GEMMs through ``unquantized_gemm`` when VLLM_USE_CUSTOM_GEMM=1. The timings
are real (CPU matmuls), and the --output-json file is written by vLLM 0.13.0's own result code
(tests/support/vllm_bench_json.py). STANDIN_PLUGIN selects a failure mode to detect:
``honors`` (default), ``missing`` (custom_kernels never imported), ``ignores_switch`` (always routes),
``rank0_only`` (at tensor_parallel_size > 1 only the first rank's worker routes).

`vllm serve` is a real HTTP server on --host/--port (/health, /v1/models, streaming /v1/completions) whose
engine core, a child process, runs one batched step at a time over every running request (new prompts'
tokens plus one row per decoding request, through custom_kernels as above), so latency grows with load.
STANDIN_SERVE: ``never_healthy`` (it listens, /health answers 503), ``exit_early`` (exits 1 while loading),
``hang`` (healthy, but a completion request never gets an answer);
STANDIN_SERVE_LOAD_S: its loading time. `vllm bench serve` sends the random dataset's requests over HTTP (all
at once under --max-concurrency, or Poisson at --request-rate), times TTFT and every inter-token gap, and
saves the result through `vllm bench serve`'s own code of the release in STANDIN_VLLM_TREE.
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


def _routes(rank: int = 0) -> bool:
    """Whether this process's GEMMs go through custom_kernels: the switch, as the plugin mode honours it
    (``rank0_only``: a plugin that reaches the first tensor-parallel worker only)."""
    plugin = os.environ.get("STANDIN_PLUGIN", "honors")
    on = os.environ.get("VLLM_USE_CUSTOM_GEMM") == "1"
    return plugin == "ignores_switch" or (plugin == "honors" and on) or (plugin == "rank0_only" and on and rank == 0)


def _head(model: str, seed: int, rank: int = 0, tp: int = 1):
    """(embedding, this rank's lm_head shard, vocabulary): the model's weights from its seed, the head's rows
    padded to a multiple of tp and split (ParallelLMHead's column parallelism)."""
    import json

    import torch

    vocab = json.loads((Path(model) / "config.json").read_text())["vocab_size"]
    gen = torch.Generator().manual_seed(seed)
    embed = torch.randn(vocab, 32, generator=gen)
    weight, bias = torch.randn(vocab, 32, generator=gen), torch.randn(vocab, generator=gen)
    rows = -(-vocab // tp)
    weight = torch.cat([weight, torch.zeros(rows * tp - vocab, 32)])[rank * rows:(rank + 1) * rows]
    bias = torch.cat([bias, torch.zeros(rows * tp - vocab)])[rank * rows:(rank + 1) * rows]
    head = torch.nn.Linear(32, rows)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    head.prefix = "lm_head"
    return embed, head, vocab


def _generate(job, embed, logits_of, routed: bool):
    """Greedy tokens, top-k logprobs and (scheduled, first token, last token) stamps of every prompt;
    ``logits_of(h)`` gives the full vocabulary's logits. A job is one engine step group: its prompts share the
    scheduled stamp (vLLM's engine core stamps one per schedule() call)."""
    import torch

    prompts, max_tokens, k = job
    out = []
    scheduled = time.monotonic()
    for ids in prompts:
        tokens, logprobs, first = list(ids), [], 0.0
        for _ in range(max_tokens):
            with torch.no_grad():
                logits = logits_of(embed[tokens[-1]].unsqueeze(0))[0]
            if routed and os.environ.get("STANDIN_GATE_BREAK"):
                logits = logits + torch.randn(logits.shape) * 5
            top = torch.topk(torch.log_softmax(logits, -1), k)
            tokens.append(int(top.indices[0]))
            logprobs.append({int(t): float(v) for t, v in zip(top.indices, top.values, strict=True)})
            first = first or time.monotonic()
        out.append((tokens[len(ids):], logprobs, (scheduled, first, time.monotonic())))
    return out


def _gemm(routed: bool):
    """unquantized_gemm's signature: custom_kernels' when routed, vLLM's own F.linear otherwise."""
    if routed:
        import custom_kernels

        return custom_kernels.unquantized_gemm
    import torch

    return lambda layer, x, w, b: torch.nn.functional.linear(x, w, b)


def _engine_loop(conn, model: str, seed: int, tp: int = 1) -> None:
    """The stand-in engine core: a one-layer "model" (embedding -> lm_head) in its own process, its lm_head
    GEMM through custom_kernels when the switch and STANDIN_PLUGIN say so; STANDIN_GATE_BREAK=1 makes the
    routed arm add noise to the logits (a kernel that changes the output). At tensor_parallel_size > 1, like
    vLLM's multiprocessing executor, it runs the model in one worker process per rank (a gloo group; each rank
    its shard of lm_head, the logits all-gathered) and only relays the jobs."""
    if tp > 1:
        _relay(conn, model, seed, tp)
        return
    if os.environ.get("STANDIN_PLUGIN", "honors") != "missing":
        import custom_kernels  # noqa: F401  # the plugin loads in every engine process
    routed = _routes()
    embed, head, _ = _head(model, seed)
    gemm = _gemm(routed)
    while (job := conn.recv()) is not None:
        conn.send(_generate(job, embed, lambda h: gemm(head, h, head.weight, head.bias), routed))
    conn.close()


def _relay(conn, model: str, seed: int, tp: int) -> None:
    import tempfile

    ctx = mp.get_context("fork")
    init = "file://" + tempfile.mktemp(prefix="standin-tp-")
    pipes, procs = [], []
    for rank in range(tp):
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_tp_worker, args=(rank, tp, init, theirs, model, seed))
        proc.start()
        pipes.append(mine)
        procs.append(proc)
    while (job := conn.recv()) is not None:
        for pipe in pipes:
            pipe.send(job)
        answers = [pipe.recv() for pipe in pipes]
        conn.send(answers[0])
    for pipe in pipes:
        pipe.send(None)
    for proc in procs:
        proc.join(timeout=30)
    conn.close()


def _tp_worker(rank: int, tp: int, init: str, conn, model: str, seed: int) -> None:
    """One rank: joins the group, computes its lm_head shard, all-gathers the logits (every rank then picks the
    same tokens, so they stay in step); rank 0's answer is the engine's."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=tp)
    if os.environ.get("STANDIN_PLUGIN", "honors") != "missing":
        import custom_kernels  # noqa: F401  # the plugin loads in every worker
    routed = _routes(rank)
    embed, head, vocab = _head(model, seed, rank, tp)
    gemm = _gemm(routed)

    def logits_of(h):
        shard = gemm(head, h, head.weight, head.bias)
        parts = [torch.empty_like(shard) for _ in range(tp)]
        dist.all_gather(parts, shard.contiguous())
        return torch.cat(parts, -1)[:, :vocab]

    while (job := conn.recv()) is not None:
        conn.send(_generate(job, embed, logits_of, routed))
    conn.close()


class _EngineCoreClient:
    """What vLLM 0.24's LLMEngine holds as ``engine_core``: the only owner of a shutdown(), and the utilities
    the paired driver calls (pause_scheduler "keep" / resume_scheduler). STANDIN_NO_PAUSE=1: an engine core
    without them, which answers as vLLM's client raises for an unknown utility."""

    def __init__(self, conn, proc, share: float):
        self._conn, self._proc, self.share = conn, proc, share
        self.paused = False
        self.on_resume = None  # the front end's flush of what was enqueued while paused

    def call_utility(self, method: str, *args):
        if method in ("pause_scheduler", "resume_scheduler") and os.environ.get("STANDIN_NO_PAUSE") == "1":
            raise Exception(f"Call to {method} method failed: 'EngineCoreProc' object has no attribute '{method}'")
        if method == "pause_scheduler":
            if args[:1] != ("keep",):
                raise ValueError(f"stand-in: pause mode {args[:1]} would abort or drain; the driver asks for keep")
            self.paused = True
            return None
        if method == "resume_scheduler":
            self.paused = False
            if self.on_resume:
                self.on_resume()
            return None
        raise Exception(f"Call to {method} method failed: unknown in the stand-in")

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
                 max_model_len: int | None = None, gpu_memory_utilization: float = 0.9,
                 disable_log_stats: bool = True, **engine_args):
        held = sum(e.share for e in _ENGINES if e._proc.is_alive())
        if held + gpu_memory_utilization > 0.9 + 1e-9:
            raise ValueError(f"Free memory on device ({0.9 - held:.2f}) on startup is less than desired GPU memory "
                             f"utilization ({gpu_memory_utilization})")
        ctx = mp.get_context("fork")
        self._conn, child = ctx.Pipe()
        proc = ctx.Process(target=_engine_loop, args=(child, model, seed, tensor_parallel_size))
        proc.start()
        client = _EngineCoreClient(self._conn, proc, gpu_memory_utilization)
        _ENGINES.append(client)
        from types import SimpleNamespace

        self.llm_engine = SimpleNamespace(engine_core=client)  # no LLMEngine.shutdown(), as in vLLM 0.24
        self._client, self._queued, self._sent = client, [], 0
        # Like vLLM's LLM, request stats (RequestOutput.metrics) only with disable_log_stats=False.
        self._stats, self._arrived, self._stamped = not disable_log_stats, [], []
        client.on_resume = self._flush
        import atexit

        atexit.register(client.shutdown)  # like vLLM: the engine process ends with its owner, counters dumped

    def generate(self, prompts, params, use_tqdm=False):
        # Like LLM.generate, requests reach the engine one by one and its first step takes those that arrived:
        # in the stand-in, every request its own step group.
        for prompt in prompts:
            self.enqueue([prompt], params)
        return self.wait_for_completion()

    def enqueue(self, prompts, params, use_tqdm=False):
        """LLM.enqueue: add requests without waiting; while the scheduler is paused they queue, and resuming
        sends them to the engine as one step group."""
        self._queued.append(([p["prompt_token_ids"] for p in prompts], params.max_tokens, max(1, params.logprobs)))
        self._arrived += [time.time()] * len(prompts)  # the front end's wall clock, as vLLM's arrival_time
        if not self._client.paused:
            self._flush()

    def _flush(self):
        if not self._queued:
            return
        prompts = [p for job in self._queued for p in job[0]]
        # queued: handed to the engine core, before it can schedule them (one monotonic clock on one host)
        self._stamped += [time.monotonic()] * len(prompts)
        self._conn.send((prompts, self._queued[0][1], self._queued[0][2]))
        self._sent += 1
        if log := os.environ.get("STANDIN_STEP_LOG"):  # how many requests each first step held
            with open(log, "a") as fh:
                fh.write(f"{len(prompts)}\n")
        self._queued = []

    def wait_for_completion(self, use_tqdm=False):
        from types import SimpleNamespace

        results = []
        for _ in range(self._sent):
            for tokens, lps, (scheduled, first, last) in self._conn.recv():
                positions = [{t: SimpleNamespace(logprob=v) for t, v in pos.items()} for pos in lps]
                i = len(results)
                metrics = SimpleNamespace(arrival_time=self._arrived[i], queued_ts=self._stamped[i],
                                          scheduled_ts=scheduled, first_token_ts=first,
                                          last_token_ts=last) if self._stats else None
                results.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=tokens, logprobs=positions)],
                                               metrics=metrics))
        self._sent, self._arrived, self._stamped = 0, [], []
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


# --- `vllm serve` --------------------------------------------------------------------------------------

def _serve_engine(conn) -> None:
    """The server's engine core: per message one step of ``m`` rows through four GEMMs (routed like the offline
    engine), answered when done."""
    import torch

    plugin = os.environ.get("STANDIN_PLUGIN", "honors")
    routed = plugin == "ignores_switch" or (plugin == "honors" and os.environ.get("VLLM_USE_CUSTOM_GEMM") == "1")
    gemm = None
    if plugin != "missing":
        import custom_kernels

        gemm = custom_kernels.unquantized_gemm if routed else None
    torch.manual_seed(0)
    layers = [torch.nn.Linear(128, 128) for _ in range(4)]
    for i, layer in enumerate(layers):
        layer.prefix = f"model.layers.{i}.mlp.down_proj"
    while (m := conn.recv()) is not None:
        x = torch.randn(m, 128)
        with torch.no_grad():
            for layer in layers:
                x = gemm(layer, x, layer.weight, layer.bias) if gemm else torch.nn.functional.linear(
                    x, layer.weight, layer.bias)
        conn.send(m)
    conn.close()


class _Request:
    def __init__(self, prompt_len: int, max_tokens: int):
        import queue

        self.prompt_len, self.max_tokens, self.made = prompt_len, max_tokens, 0
        self.tokens: queue.Queue = queue.Queue()

    def emit(self) -> None:
        self.made += 1
        self.tokens.put(self.made)
        if self.made >= self.max_tokens:
            self.tokens.put(None)


class _Scheduler:
    """Continuous batching in miniature: each step takes the prompts that arrived (all their tokens) and one row
    per running request; every request in the step gets one token."""

    def __init__(self, conn):
        import threading

        self.conn, self.cond = conn, threading.Condition()
        self.waiting: list[_Request] = []
        self.running: list[_Request] = []
        threading.Thread(target=self._loop, daemon=True).start()

    def submit(self, prompt_len: int, max_tokens: int) -> _Request:
        req = _Request(prompt_len, max_tokens)
        with self.cond:
            self.waiting.append(req)
            self.cond.notify()
        return req

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.waiting and not self.running:
                    self.cond.wait()
                new, self.waiting = self.waiting, []
            step = new + self.running
            self.conn.send(sum(r.prompt_len for r in new) + len(self.running))
            self.conn.recv()
            for r in step:
                r.emit()
            self.running = [r for r in step if r.made < r.max_tokens]


def serve_main(argv: list[str]) -> int:
    """`vllm serve MODEL --host H --port P`: loads (STANDIN_SERVE_LOAD_S), then serves until SIGTERM/SIGINT."""
    import json
    import signal
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=8000)
    args, _ = parser.parse_known_args(argv)
    print(f"INFO: stand-in vllm serve {args.model} (pid {os.getpid()})", flush=True)
    behaviour = os.environ.get("STANDIN_SERVE", "")
    ready = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # one token per write, sent at once (as uvicorn streams)

        def log_message(self, fmt, *a) -> None:
            print(f"INFO: {self.address_string()} - {fmt % a}", flush=True)

        def _json(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._json(200 if ready.is_set() else 503, {})
            elif self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": args.model, "object": "model"}]})
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path != "/v1/completions" or not ready.is_set():
                self._json(404 if ready.is_set() else 503, {"error": "not found"})
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if behaviour == "hang":
                time.sleep(3600)  # a server that stopped answering: the request stays open
            prompt = body.get("prompt", "")
            prompt_len = len(prompt) if isinstance(prompt, list) else len(str(prompt).split())
            req = scheduler.submit(max(1, prompt_len), int(body.get("max_tokens") or 16))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            while (token := req.tokens.get()) is not None:
                chunk = {"object": "text_completion", "model": args.model,
                         "choices": [{"index": 0, "text": f" t{token}", "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            usage = {"prompt_tokens": prompt_len, "completion_tokens": req.made}
            end = {"object": "text_completion", "choices": [{"index": 0, "text": "", "finish_reason": "length"}],
                   "usage": usage}
            self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
            self.wfile.flush()

    try:
        httpd = ThreadingHTTPServer((args.host or "0.0.0.0", args.port), Handler)
    except OSError as err:
        print(f"ERROR: [Errno {err.errno}] error while attempting to bind on address ({args.host!r}, {args.port}): "
              f"{err.strerror.lower()}", flush=True)
        return 1
    httpd.daemon_threads = True
    ctx = mp.get_context("fork")
    conn, child = ctx.Pipe()
    engine = ctx.Process(target=_serve_engine, args=(child,))
    engine.start()
    scheduler = _Scheduler(conn)

    def stop(signum, frame) -> None:
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    time.sleep(float(os.environ.get("STANDIN_SERVE_LOAD_S", "0.3")))
    if behaviour == "exit_early":
        print("RuntimeError: Engine core initialization failed. See root cause above.", flush=True)
        conn.send(None)
        engine.join()
        return 1
    if behaviour != "never_healthy":
        ready.set()
        print(f"INFO: Application startup complete; listening on {args.host}:{args.port}", flush=True)
    httpd.serve_forever(poll_interval=0.1)
    httpd.server_close()
    conn.send(None)  # the engine core ends (its counters dumped at exit), as vLLM's shuts down on SIGTERM
    engine.join(timeout=30)
    print("INFO: Shutting down", flush=True)
    return 0


# --- `vllm bench serve` --------------------------------------------------------------------------------

def _one_request(host: str, port: int, prompt: list[int], max_tokens: int, model: str) -> dict:
    """One streaming completion, timed as vLLM's client times it: TTFT, then every inter-token gap."""
    import http.client
    import json

    out = {"success": False, "output_tokens": 0, "prompt_len": len(prompt), "latency": 0.0, "ttft": 0.0,
           "itl": [], "start_time": time.perf_counter(), "error": "", "generated_text": ""}
    st = last = out["start_time"]
    try:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        conn.request("POST", "/v1/completions", json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens,
                                                            "stream": True, "ignore_eos": True, "temperature": 0}),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise OSError(f"HTTP {resp.status}")
        text = []
        while line := resp.readline():
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            if line == b"data: [DONE]":
                out["success"] = True
                break
            choice = json.loads(line[6:])["choices"][0]
            if choice.get("text"):
                now = time.perf_counter()
                if not text:
                    out["ttft"] = now - st
                else:
                    out["itl"].append(now - last)
                last = now
                text.append(choice["text"])
        out["generated_text"], out["output_tokens"] = "".join(text), len(text)
        out["latency"] = time.perf_counter() - st
        conn.close()
    except (OSError, ValueError) as err:
        out["success"], out["error"] = False, str(err)
    return out


def bench_serve_main(argv: list[str]) -> int:
    """`vllm bench serve` against a running server, the result saved through the release's own code."""
    import random
    import threading
    from types import SimpleNamespace

    from tests.support.vllm_bench_json import write_serve_json

    parser = argparse.ArgumentParser()
    for flag, kind, default in (("--model", str, None), ("--tokenizer", str, None), ("--host", str, "127.0.0.1"),
                                ("--port", int, 8000), ("--dataset-name", str, None), ("--random-input-len", int, 1024),
                                ("--random-output-len", int, 128), ("--random-range-ratio", str, "0.0"),
                                ("--num-prompts", int, 1000), ("--temperature", float, None), ("--seed", int, 0),
                                ("--num-warmups", int, 0), ("--percentile-metrics", str, "ttft,tpot,itl"),
                                ("--metric-percentiles", str, "99"), ("--max-concurrency", int, None),
                                ("--request-rate", float, float("inf")), ("--result-filename", str, None),
                                ("--result-dir", str, None), ("--label", str, None), ("--backend", str, "openai")):
        parser.add_argument(flag, type=kind, default=default)
    for flag in ("--ignore-eos", "--disable-tqdm", "--save-result"):
        parser.add_argument(flag, action="store_true")
    args, _ = parser.parse_known_args(argv)
    rng = random.Random(args.seed)
    prompts = [[rng.randrange(100) for _ in range(args.random_input_len)] for _ in range(args.num_prompts)]
    for prompt in prompts[:args.num_warmups]:
        _one_request(args.host, args.port, prompt, args.random_output_len, args.model)
    limit = threading.Semaphore(args.max_concurrency or len(prompts) or 1)
    outputs: list[dict] = [{} for _ in prompts]

    def send(i: int) -> None:
        with limit:
            outputs[i] = _one_request(args.host, args.port, prompts[i], args.random_output_len, args.model)

    threads = []
    start = time.perf_counter()
    for i in range(len(prompts)):
        if i and args.request_rate != float("inf"):
            time.sleep(rng.expovariate(args.request_rate))  # Poisson arrivals (vLLM: gamma, burstiness 1)
        threads.append(threading.Thread(target=send, args=(i,)))
        threads[-1].start()
    for t in threads:
        t.join()
    duration = time.perf_counter() - start
    failed = [o["error"] for o in outputs if not o["success"]]
    for i, err in enumerate(failed[:10]):
        print(f"Error {i}: {err}")
    ns = SimpleNamespace(**vars(args), metadata=None, burstiness=1.0, ramp_up_strategy=None, plot_timeline=False,
                         plot_dataset_stats=False, save_detailed=False, append_result=False)
    doc = write_serve_json(Path(os.environ["STANDIN_VLLM_TREE"]), outputs, duration, ns, args.tokenizer or args.model)
    print(f"stand-in vllm bench serve: {doc['completed']} completed, {doc['failed']} failed in {duration:.2f} s, "
          f"output {doc['output_throughput']:.1f} tok/s")
    return 0


def main() -> int:
    if sys.argv[1:2] == ["serve"]:
        return serve_main(sys.argv[2:])
    if sys.argv[1:3] == ["bench", "serve"]:
        return bench_serve_main(sys.argv[3:])
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
