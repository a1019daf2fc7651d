"""One serve run where the steps run (the dev container or the host): take the port, start `vllm serve` in a
process group of its own with its output in its log, wait until /health answers, run `vllm bench serve` for each
load point, then stop the server. The server is stopped whatever happens: after the last point, a failed point,
SIGINT/SIGTERM/SIGHUP, an exception; and it gets SIGTERM from the kernel if this process is killed outright.

What happened goes to the status JSON the run file names (port, server pid, time to health, each point's exit
code, the error if any), which the workbench turns into records or one error line. `--stop PIDFILE` stops a
run from outside (what `invoke bench` does after Ctrl-C, since a docker exec does not pass the signal on).

Stdlib only: it runs by path with whatever Python the runtime has.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# vLLM's API server shuts its engine core down on SIGTERM; a group still alive after this is killed.
STOP_GRACE_S = 30.0
POLL_S = 0.2
EXIT_SERVER = 3  # the server could not serve: port taken, exited, never healthy (workbench/bench/serve.py)
EXIT_INTERRUPTED = 130
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1


class Stopped(Exception):
    """A signal asked this run to stop."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, frame) -> None:
    raise Stopped(signum)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when this guest dies, even by SIGKILL (Linux), so no server outlives it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (/proc/PID/stat field 22): tells a pid apart from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def take_port(host: str, port: int) -> int | None:
    """``port`` if nothing listens there (0: a free one the kernel picks), None when it is taken. SO_REUSEADDR as
    uvicorn binds: a port in TIME_WAIT is free, one with a listener is not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return None
        return sock.getsockname()[1]


def child_env(hook: str) -> dict[str, str]:
    """Ours (the arm's switch, cache and counter file come from the workbench) with the counter hook first on
    PYTHONPATH, so its sitecustomize.py runs in every Python process of the server, engine core included."""
    env = dict(os.environ)
    env["PYTHONPATH"] = hook + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A child in its own process group (so stopping it reaches its children too), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_die_with_parent)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> str:
    """Stop the child as its own Ctrl-C would: SIGTERM to it alone (vLLM's API server then shuts its engine core
    down, whose exit handlers dump the counters), then SIGTERM to what is left of its group, SIGKILL after
    ``grace_s`` in all. How it ended."""
    how = "exited before the stop"
    deadline = time.monotonic() + grace_s
    if proc.poll() is None:
        how = "stopped (SIGTERM)"
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(POLL_S)
    if proc.poll() is not None and group_alive(proc.pid):  # children the leader left behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        while time.monotonic() < deadline and group_alive(proc.pid):
            time.sleep(POLL_S)
    if proc.poll() is None or group_alive(proc.pid):
        how = f"killed (SIGKILL after {grace_s:g} s)"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return how


def healthy(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_healthy(proc: subprocess.Popen, host: str, port: int, timeout_s: float) -> str:
    """"healthy", "exited" (the server ended first) or "timeout"."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return "exited"
        if healthy(host, port):
            return "healthy"
        time.sleep(POLL_S)
    return "exited" if proc.poll() is not None else "timeout"


def last_line(log: Path) -> str:
    try:
        lines = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def write_json(path: Path, data: dict) -> None:
    """Whole or not at all: the workbench may read it while this run ends."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def run(doc: dict) -> int:
    host, status_path, pid_path = doc["host"], Path(doc["status"]), Path(doc["pid_file"])
    server_log = Path(doc["server_log"])
    status: dict = {"health_timeout_s": doc["health_timeout_s"], "points": [], "error": None}
    server: subprocess.Popen | None = None
    client: subprocess.Popen | None = None
    code = 0
    for signum in SIGNALS:
        signal.signal(signum, _raise_stopped)
    try:
        port = take_port(host, int(doc["port"]))
        if port is None:
            status["error"] = {"kind": "port_in_use", "port": doc["port"]}
            return EXIT_SERVER
        status["port"] = port
        env = child_env(doc["hook"])

        def fill(argv: list[str]) -> list[str]:
            return [str(port) if a == doc["port_placeholder"] else a for a in argv]

        started = time.monotonic()
        server = spawn(fill(doc["server"]), env, server_log)
        status["server_pid"] = server.pid
        write_json(pid_path, {"guest_pid": os.getpid(), "guest_start": start_time(os.getpid()),
                              "server_pgid": server.pid, "server_start": start_time(server.pid)})
        write_json(status_path, status)
        print(f"vllm serve: pid {server.pid} on {host}:{port}, log {server_log}", flush=True)
        state = wait_healthy(server, host, port, float(doc["health_timeout_s"]))
        if state != "healthy":
            detail = last_line(server_log)
            kind = "port_in_use" if "address already in use" in detail.lower() else (
                "server_exited" if state == "exited" else "never_healthy")
            status["error"] = {"kind": kind, "returncode": server.poll(), "detail": detail, "port": port}
            return EXIT_SERVER
        status["healthy_after_s"] = round(time.monotonic() - started, 3)
        print(f"vllm serve: healthy after {status['healthy_after_s']:.1f} s", flush=True)
        for point in doc["points"]:
            if server.poll() is not None:
                status["error"] = {"kind": "server_died", "returncode": server.returncode,
                                   "detail": f"before point {point['label']}: {last_line(server_log)}"}
                code = EXIT_SERVER
                break
            t0, wall = time.monotonic(), time.time()
            client = spawn(fill(point["argv"]), env, Path(point["log"]))
            limit = float(doc.get("point_timeout_s") or 0) or None
            try:
                rc = client.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                # A server that stopped answering would keep the client waiting for hours (its own request
                # timeout): the run ends here, the server is stopped below like after any other error.
                stop_group(client, grace_s=5.0)
                client = None
                status["points"].append({"label": point["label"], "returncode": None, "started": wall,
                                         "seconds": round(time.monotonic() - t0, 3), "timed_out": True})
                status["error"] = {"kind": "point_timeout", "log": point["log"],
                                   "detail": f"load point {point['label']} did not finish within {limit:g} s"}
                code = EXIT_SERVER
                break
            client = None
            status["points"].append({"label": point["label"], "returncode": rc, "started": wall,
                                     "seconds": round(time.monotonic() - t0, 3)})
            write_json(status_path, status)
            print(f"point {point['label']}: exit {rc} in {time.monotonic() - t0:.1f} s", flush=True)
        return code
    except Stopped as stop:
        status["error"] = {"kind": "interrupted", "detail": f"{stop} received"}
        return EXIT_INTERRUPTED
    finally:
        for signum in SIGNALS:  # a second Ctrl-C must not cut the stop short
            signal.signal(signum, signal.SIG_IGN)
        if client is not None:
            stop_group(client, grace_s=5.0)
        if server is not None:
            status["server_stop"] = stop_group(server)
            print(f"vllm serve: {status['server_stop']}", flush=True)
        write_json(status_path, status)
        pid_path.unlink(missing_ok=True)


def stop_from_pid_file(pid_path: Path) -> int:
    """Stop a run from outside: SIGTERM its guest (which stops the server), then kill what is left of the server's
    group. Pids are checked against their recorded start time, so a reused pid is never signalled."""
    try:
        pids = json.loads(pid_path.read_text())
    except (OSError, json.JSONDecodeError):
        return 0  # no run in progress: nothing to stop
    guest, pgid = int(pids["guest_pid"]), int(pids["server_pgid"])
    if start_time(guest) == pids.get("guest_start"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(guest, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S + 5
        while time.monotonic() < deadline and start_time(guest) == pids.get("guest_start"):
            time.sleep(POLL_S)
    leader_reused = start_time(pgid) not in (None, pids.get("server_start"))
    if not leader_reused and group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
    pid_path.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", help="the run file (JSON) the workbench wrote")
    what.add_argument("--stop", help="the pid file of a run to stop")
    args = parser.parse_args(argv)
    if args.stop:
        return stop_from_pid_file(Path(args.stop))
    return run(json.loads(Path(args.run).read_text()))


if __name__ == "__main__":
    sys.exit(main())
