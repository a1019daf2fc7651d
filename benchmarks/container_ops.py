"""Benchmark the dev-container operations users run all day, against the raw Docker equivalent
measured in the same run: `invoke shell --cmd true` vs `docker exec`, a no-change `invoke build`,
and `invoke up` from a committed image. Prints medians with p20/p80 and writes JSON.

    python benchmarks/container_ops.py --scratch --repeats 15 --out docs/results/container_ops.json

--scratch builds a throwaway project on the local test base (no registry needed, like the docker test
tier); without it the benchmark uses this checkout's own settings (your dev image must be built).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def timed(cmd: list[str], env: dict, cwd: Path, check: bool = True) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if check and result.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(cmd)}\n{result.stderr[-2000:]}")
    return elapsed


def summary(samples: list[float]) -> dict:
    q = statistics.quantiles(samples, n=5)
    return {"median_s": statistics.median(samples), "p20_s": q[0], "p80_s": q[3], "min_s": min(samples),
            "n": len(samples)}


def fmt(name: str, s: dict, extra: str = "") -> str:
    return (f"{name:<44} median {s['median_s'] * 1000:8.1f} ms  p20 {s['p20_s'] * 1000:8.1f}  "
            f"p80 {s['p80_s'] * 1000:8.1f}  {extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="samples per measurement (alternating A/B)")
    parser.add_argument("--scratch", action="store_true", help="use a throwaway project on the local test base")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/container_ops.json")
    args = parser.parse_args()

    import docker

    from workbench.container import compose, devcontainer

    tmp = Path(tempfile.mkdtemp(prefix="wb-bench-"))
    if args.scratch:
        from support.project import context_digest, make_project, memlock_env

        os.environ.update(memlock_env())
        project = make_project(tmp, "wbtest-dev", "x")
        tag = context_digest(project.settings)
        cfg = (project.root / "invoke.yaml").read_text().replace("tag: x", f"tag: {tag}")
        (project.root / "invoke.yaml").write_text(cfg)
        root, settings = project.root, project.settings
    else:
        from invoke import Config

        root = ROOT
        from workbench.config import settings_from_context

        settings = settings_from_context(type("Ctx", (), {"config": Config(project_location=str(ROOT))})())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    inv = [sys.executable, "-m", "invoke", "--search-root", str(root)]
    client = docker.from_env()
    docker_cli = shutil.which("docker") or "docker"
    results: dict = {}
    try:
        timed([*inv, "build"], env, root)  # make sure the dev image exists (cache hits if it does)
        timed([*inv, "up"], env, root)
        name = compose.load_spec(settings).name

        shell, raw = [], []
        for _ in range(args.repeats):  # alternate so drift in machine load hits both equally
            shell.append(timed([*inv, "shell", "--cmd", "true"], env, root))
            raw.append(timed([docker_cli, "exec", name, "true"], env, root))
        results["invoke_shell_cmd_true"] = summary(shell)
        results["docker_exec_true"] = summary(raw)
        results["shell_vs_docker_exec_ratio"] = statistics.median(shell) / statistics.median(raw)

        # Where the end-to-end time goes: interpreter + imports, measured alone.
        imports = [timed([sys.executable, "-c", "import invoke, docker, workbench.container.devcontainer"], env, root)
                   for _ in range(args.repeats)]
        results["python_invoke_docker_import"] = summary(imports)
        # The part our code adds once Python is up: exec through the SDK on a connected client.
        inproc = []
        devnull = open(os.devnull, "wb")  # noqa: SIM115 - closed below
        for _ in range(args.repeats):
            start = time.perf_counter()
            devcontainer.exec_in_container(settings, ["true"], client=client, out=devnull.write, err=devnull.write)
            inproc.append(time.perf_counter() - start)
        devnull.close()
        results["in_process_exec_true"] = summary(inproc)
        results["in_process_vs_docker_exec_ratio"] = statistics.median(inproc) / statistics.median(raw)

        builds = [timed([*inv, "build"], env, root) for _ in range(max(3, args.repeats // 3))]
        results["no_change_build"] = summary(builds)

        timed([*inv, "commit", "--tag", f"{settings.tag}-compiled"], env, root)
        ups = []
        for _ in range(max(3, args.repeats // 3)):
            timed([*inv, "down"], env, root)
            ups.append(timed([*inv, "up"], env, root))
        results["up_from_committed_image"] = summary(ups)
        results["up_used_committed_image"] = client.containers.get(name).image.tags[0].endswith("-compiled")
    finally:
        subprocess.run([*inv, "down", "--volumes"], env=env, cwd=root, capture_output=True)
        if args.scratch:
            for img in client.images.list(name="wbtest-dev"):
                for t in img.tags:
                    if t.endswith("-compiled"):
                        client.images.remove(t, force=True)
        shutil.rmtree(tmp, ignore_errors=True)

    goals = {"shell_vs_docker_exec_ratio": 1.5, "no_change_build_s": 5.0, "up_from_committed_image_s": 2.0}
    record = {
        "benchmark": "container_ops",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "docker": client.version().get("Version"), "docker_sdk": docker.__version__},
        "scratch_project": args.scratch,
        "goals": goals,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    r = results
    print(fmt("invoke shell --cmd true", r["invoke_shell_cmd_true"],
              f"ratio {r['shell_vs_docker_exec_ratio']:.2f}x (goal <= 1.5x)"))
    print(fmt("docker exec NAME true", r["docker_exec_true"]))
    print(fmt("  python + invoke + docker SDK imports", r["python_invoke_docker_import"]))
    print(fmt("  in-process exec (SDK, connected)", r["in_process_exec_true"],
              f"ratio {r['in_process_vs_docker_exec_ratio']:.2f}x"))
    print(fmt("invoke build (no change)", r["no_change_build"], "goal <= 5 s"))
    print(fmt("invoke up from committed image", r["up_from_committed_image"],
              f"goal <= 2 s; used committed image: {r['up_used_committed_image']}"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
