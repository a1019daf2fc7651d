"""Write this process's custom-kernel call counters to a file, so another process can read them.

Why: ``custom_kernels.CALL_COUNTS`` (incremented by ``unquantized_gemm``) lives in the process that
ran the GEMMs, and vLLM V1 runs the model in an engine-core subprocess, not in the `vllm bench`
process. ``install_exit_dump()`` makes every process that calls it (or loads the `invoke bench`
sitecustomize hook) write its counters to ``$CUSTOM_KERNELS_COUNTS_FILE`` ("{pid}" is replaced by
the process id): on change (a 2 s poll, which survives ``os._exit`` in forked workers), at exit
(atexit, and multiprocessing's finalizers, which forked children run instead of atexit).
The source is the package's ``CALL_COUNTS`` (and ``KERNEL_COUNTS`` where it has one), read from
``sys.modules`` without importing the package, so the record also says whether this process imported it.

With tensor parallelism vLLM runs one worker process per rank, and every one of them must route: each dump
says which rank it came from (``parallel``: torch.distributed's rank and world size, vLLM's TP rank and size,
the CUDA device), read the same way, so a reader can require calls from every rank.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ENV = "CUSTOM_KERNELS_COUNTS_FILE"
# Poll period of the on-change dump. A dump of ~200 layers is a fraction of a millisecond, so the thread
# costs < 0.05% of a process's time, and only in processes whose counters move (the custom arm).
POLL_S = 2.0

_state: dict[str, Any] = {"target": None, "last": None, "pid": None, "parallel": None}
_lock = threading.Lock()


class _Holder:
    """A weak-referenceable anchor for multiprocessing's after-fork registry."""


_HOLDER = _Holder()


def parallel_rank() -> dict[str, Any]:
    """Which rank this process is, where it has joined a process group (vLLM's workers do before loading the
    model); every field None otherwise. Read from ``sys.modules``: nothing is imported or initialised here."""
    out: dict[str, Any] = {"rank": None, "world_size": None, "tp_rank": None, "tp_size": None,
                           "cuda_device": None, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
        dist = sys.modules.get("torch.distributed")
        if dist is not None and dist.is_available() and dist.is_initialized():
            out["rank"], out["world_size"] = dist.get_rank(), dist.get_world_size()
        tp = getattr(sys.modules.get("vllm.distributed.parallel_state"), "_TP", None)
        if tp is not None:
            out["tp_rank"], out["tp_size"] = int(tp.rank_in_group), int(tp.world_size)
        cuda = sys.modules.get("torch.cuda")
        if cuda is not None and cuda.is_initialized():
            out["cuda_device"] = cuda.current_device()
    except Exception:  # a group being torn down: the dump says what it could read
        pass
    # vLLM's workers destroy their process group on shutdown, before the exit dump: a rank, once seen, is kept
    # (a process never changes rank).
    if out["rank"] is None and out["tp_rank"] is None and _state["parallel"] is not None:
        return _state["parallel"]
    if out["rank"] is not None or out["tp_rank"] is not None:
        _state["parallel"] = out
    return out


def snapshot() -> dict[str, Any]:
    """This process's counters: per-layer calls, per-layer kernel choices (when the package has them)."""
    mod = sys.modules.get("custom_kernels")
    calls = dict(getattr(mod, "CALL_COUNTS", {}) or {}) if mod else {}
    kernels = {k: dict(v) for k, v in (getattr(mod, "KERNEL_COUNTS", {}) or {}).items()} if mod else {}
    return {
        "pid": os.getpid(),
        "argv0": os.path.basename(sys.argv[0]) if sys.argv else "",
        "time": time.time(),
        "custom_kernels_imported": mod is not None,
        "custom_kernels_version": getattr(mod, "__version__", None) if mod else None,
        "use_custom_gemm": os.environ.get("VLLM_USE_CUSTOM_GEMM"),
        "total_calls": sum(calls.values()),
        "call_counts": calls,
        "kernel_counts": kernels,
        "routing": dict(getattr(mod, "ROUTING", {}) or {}) if mod else {},
        "parallel": parallel_rank(),
        # Which CPUs the process may run on (the paired driver's --pin-cpus gives each engine its own).
        "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }


def dump_counts(path: str | os.PathLike[str]) -> Path:
    """Write ``snapshot()`` as JSON to ``path`` ("{pid}" expanded), atomically (tmp file + rename)."""
    target = Path(str(path).replace("{pid}", str(os.getpid())))
    target.parent.mkdir(parents=True, exist_ok=True)
    # A temporary of its own per writer: the poll thread and the exit dump share the pid.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(snapshot(), indent=1, sort_keys=True))
    os.replace(tmp, target)
    return target


def _dump_if_changed(force: bool = False) -> None:
    target = _state["target"]
    if not target:
        return
    try:
        snap = snapshot()
        # A worker joins its process group after importing the package: its rank is news worth a dump too.
        key = (snap["custom_kernels_imported"], tuple(sorted(snap["call_counts"].items())),
               tuple(sorted(snap["parallel"].items())))
        with _lock:  # held over the write too: the exit dump never lands before a poll's older one
            if not force and key == _state["last"] and _state["pid"] == os.getpid():
                return
            _state["last"], _state["pid"] = key, os.getpid()
            dump_counts(target)
    except Exception:  # never break the host process (shutdown, full disk): the reader reports a missing dump
        pass


def _poll() -> None:
    while True:
        time.sleep(POLL_S)
        _dump_if_changed()


def _start_in_this_process() -> None:
    threading.Thread(target=_poll, name="custom-kernels-counts", daemon=True).start()
    _register_finalizer()
    _dump_if_changed(force=True)


def _register_finalizer(_holder: object = None) -> None:
    """Forked multiprocessing children skip atexit but run multiprocessing's finalizers on exit. Their
    bootstrap clears the finalizers inherited from the parent, then runs the after-fork hooks: re-add."""
    try:
        from multiprocessing import util

        util.Finalize(None, _dump_if_changed, kwargs={"force": True}, exitpriority=100)
        util.register_after_fork(_HOLDER, _register_finalizer)
    except Exception:
        pass


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # the parent's poll thread may have held it at fork time: never inherit that
    _state["last"] = None
    _state["parallel"] = None  # a child is not its parent's rank
    # The environment at fork time names the child's file: a parent that starts engines for two arms sets
    # each arm's target before forking its engine.
    _state["target"] = os.environ.get(ENV) or _state["target"]
    _start_in_this_process()


def install_exit_dump(path: str | os.PathLike[str] | None = None) -> str | None:
    """Dump this process's counters to ``path`` (default: $CUSTOM_KERNELS_COUNTS_FILE) on change and at exit.

    Idempotent; forked children re-arm themselves. Returns the target pattern, or None when unset.
    """
    target = str(path) if path is not None else os.environ.get(ENV)
    if not target:
        return None
    first = _state["target"] is None
    _state["target"] = target
    if first:
        atexit.register(_dump_if_changed, force=True)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
        _start_in_this_process()
    return target
