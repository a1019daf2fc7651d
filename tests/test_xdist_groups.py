"""The suite's own scheduling (tests/run.sh: pytest-xdist, --dist loadgroup): every test of a container daemon runs
on one worker, in order. Run here on three modules that mix daemon and daemonless tests, against no daemon (the
daemon's tests skip, but are still scheduled like the others)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["tests/container/test_images.py", "tests/container/test_versions.py", "tests/container/test_lifecycle.py"]


def test_a_daemons_tests_share_one_worker():
    env = {k: v for k, v in os.environ.items() if k != "CI"}  # no daemon here is a skip, not CI's usage error
    env["DOCKER_HOST"] = "unix:///nonexistent.sock"
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup",
                           "-v", *MODULES], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    # xdist reports a grouped test as <nodeid>@<group>: every group's tests on one worker, the daemon's among them.
    workers, daemon_tests = defaultdict(set), 0
    for worker, nodeid in re.findall(r"^\[(gw\d+)\] \[\s*\d+%\] \w+ (\S+)", done.stdout, re.M):
        group = nodeid.rpartition("@")[2] if "@" in nodeid else nodeid
        workers[group].add(worker)
        daemon_tests += group == "daemon"
    assert daemon_tests >= 10 and all(len(w) == 1 for w in workers.values()), dict(workers)
