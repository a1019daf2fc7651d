"""docker-compose.yml read by workbench.container.compose: interpolation, the spec, and agreement with a real
Compose implementation (docker-compose config) on the same file and variables."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from workbench.config import Settings
from workbench.container import compose_cli
from workbench.container.compose import compose_variables, interpolate, load_spec
from workbench.errors import WorkbenchError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("text", "env", "expected"), [
    ("${A}", {"A": "x"}, "x"),
    ("${A:-d}", {}, "d"),
    ("${A:-d}", {"A": ""}, "d"),
    ("${A-d}", {"A": ""}, ""),
    ("${A:+alt}", {"A": "1"}, "alt"),
    ("${A:+alt}", {}, ""),
    ("$A/b", {"A": "x"}, "x/b"),
    ("$$HOME", {"HOME": "h"}, "$HOME"),
])
def test_interpolate(text, env, expected):
    assert interpolate(text, env) == expected


def test_required_variable_error_is_one_line():
    with pytest.raises(WorkbenchError, match="variable A must be set: give A"):
        interpolate("${A:?give A}", {})


def _settings(tmp_path: Path, **kw) -> Settings:
    return Settings.from_mapping(ROOT, {"hf_cache": str(tmp_path / "hf"), **kw})


def test_dev_service_spec(tmp_path, monkeypatch):
    monkeypatch.delenv("WORKBENCH_ULIMIT_MEMLOCK", raising=False)
    spec = load_spec(_settings(tmp_path), "all")
    assert spec.service == "dev" and spec.name == "vllm-workbench" and spec.image == "vllm-workbench:dev"
    assert spec.init and spec.ipc_mode == "host" and spec.working_dir == "/workspace/vllm"
    assert ("memlock", -1, -1) in spec.ulimits and ("stack", 67108864, 67108864) in spec.ulimits
    targets = {m.target: m for m in spec.mounts}
    assert targets["/workspace/vllm"].source == str(ROOT / "vllm")
    assert targets["/cache/huggingface"].source == str(tmp_path / "hf")
    assert targets["/cache/ccache"].type == "volume" and targets["/cache/ccache"].source == "vllm-workbench-ccache"
    for sub in ("custom_kernels", "patches", "scripts", "results"):
        assert targets[f"/workspace/{sub}"].source == str(ROOT / sub)
    assert targets["/opt/workbench-src/workbench"].source == str(ROOT / "workbench")
    assert targets["/opt/workbench-src/workbench"].read_only
    assert [(g.count, g.capabilities) for g in spec.gpus] == [(-1, ("gpu",))]
    assert spec.environment["HF_HOME"] == "/cache/huggingface"


def test_gpu_selection_variants(tmp_path):
    cpu = load_spec(_settings(tmp_path), "none")
    assert cpu.service == "dev-cpu" and cpu.gpus == ()
    picked = load_spec(_settings(tmp_path), "0,2")
    assert [(g.count, g.device_ids) for g in picked.gpus] == [(None, ("0", "2"))]
    with pytest.raises(WorkbenchError, match="--gpus 'abc' is not valid"):
        load_spec(_settings(tmp_path), "abc")


def test_gpus_reach_docker_as_device_requests_and_podman_as_cdi_devices(tmp_path):
    """Podman's Docker-compatible API accepts a DeviceRequest and ignores it (the container would have no GPU):
    there the same selection goes as CDI device names."""
    picked = load_spec(_settings(tmp_path), "0,2").create_kwargs("Podman Engine")
    assert picked["devices"] == ["nvidia.com/gpu=0", "nvidia.com/gpu=2"] and "device_requests" not in picked
    every = load_spec(_settings(tmp_path), "all")
    assert every.create_kwargs("Podman Engine")["devices"] == ["nvidia.com/gpu=all"]
    docker_kwargs = every.create_kwargs("Engine")
    assert "devices" not in docker_kwargs
    assert [(r["Driver"], r["Count"]) for r in docker_kwargs["device_requests"]] == [("nvidia", -1)]
    assert "devices" not in load_spec(_settings(tmp_path), "none").create_kwargs("Podman Engine")


def test_config_reaches_the_file(tmp_path):
    s = _settings(tmp_path, image="myimg", tag="t1", container="c1", fork=str(tmp_path / "fork"),
                  ccache_volume="vol1")
    spec = load_spec(s, "none")
    assert (spec.image, spec.name) == ("myimg:t1", "c1")
    assert {m.target: m.source for m in spec.mounts}["/workspace/vllm"] == str(tmp_path / "fork")
    assert "vol1" in spec.volume_names()


def _copy_compose(tmp_path: Path, mutate, resolver: str = "auto") -> Settings:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mutate(doc)
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(doc))
    return Settings.from_mapping(tmp_path, {"hf_cache": str(tmp_path / "hf"), "compose_resolver": resolver})


# Both resolvers where a host has Compose: Compose itself (auto) and the workbench's own reader (builtin).
needs_compose = pytest.mark.skipif(compose_cli.compose_command() is None,
                                   reason="no Compose here (docker compose plugin or docker-compose)")
RESOLVERS = [pytest.param("auto", marks=needs_compose), "builtin"]


def test_secret_in_environment_is_refused(tmp_path):
    s = _copy_compose(tmp_path, lambda d: d["services"]["dev"].setdefault("environment", {}).update(HF_TOKEN="x"))
    with pytest.raises(WorkbenchError, match="puts HF_TOKEN into the container's create config"):
        load_spec(s, "all")


def test_unsupported_key_is_an_error_not_ignored(tmp_path):
    s = _copy_compose(tmp_path, lambda d: d["services"]["dev"].update(ports=["8000:8000"]))
    with pytest.raises(WorkbenchError, match="uses ports, which invoke up does not implement"):
        load_spec(s, "all")


def test_fingerprint_changes_with_the_file(tmp_path):
    base = load_spec(_settings(tmp_path), "all").fingerprint()
    s = _copy_compose(tmp_path, lambda d: d["services"]["dev"]["environment"].update(EXTRA="1"))
    (tmp_path / "Dockerfile.dev").write_text("")
    assert load_spec(s, "all").fingerprint() != base
    assert load_spec(_settings(tmp_path), "all").fingerprint() == base


@pytest.mark.parametrize("resolver", RESOLVERS)
def test_the_projects_env_file_counts_as_compose_counts_it(tmp_path, monkeypatch, resolver):
    monkeypatch.delenv("WORKBENCH_ULIMIT_MEMLOCK", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    s = _copy_compose(tmp_path, lambda d: None, resolver)
    env_file = tmp_path / ".env"
    env_file.write_text("# rootless Docker cannot raise memlock\nBASE=4096\nWORKBENCH_ULIMIT_MEMLOCK=${BASE}000\n")
    assert ("memlock", 4096000, 4096000) in load_spec(s, "all").ulimits
    env_file.write_text("WORKBENCH_ULIMIT_MEMLOCK=8192\n")  # an edit is seen at once (never a stale answer)
    assert ("memlock", 8192, 8192) in load_spec(s, "all").ulimits
    monkeypatch.setenv("WORKBENCH_ULIMIT_MEMLOCK", "65536")  # the shell's environment wins over .env
    assert ("memlock", 65536, 65536) in load_spec(s, "all").ulimits


def test_the_builtin_reader_refuses_an_override_file_rather_than_ignore_it(tmp_path):
    s = _copy_compose(tmp_path, lambda d: None, "builtin")
    (tmp_path / "docker-compose.override.yml").write_text("services:\n  dev:\n    environment:\n      X: '1'\n")
    with pytest.raises(WorkbenchError) as err:
        load_spec(s, "all")
    assert str(err.value).startswith("docker-compose.override.yml beside docker-compose.yml: `docker compose up` "
                                     "would merge it in")


@needs_compose
def test_compose_merges_the_override_file_as_docker_compose_up_does(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    s = _copy_compose(tmp_path, lambda d: None)
    (tmp_path / "docker-compose.override.yml").write_text(
        "services:\n  dev:\n    environment:\n      X: '1'\n  dev-cpu:\n    shm_size: 2gb\n")
    assert load_spec(s, "all").environment["X"] == "1"
    assert load_spec(s, "none").shm_size is not None  # the CPU service, behind its profile, gets it too
    cached = list((tmp_path / "cache" / "vllm-workbench" / "compose-config").glob("*.yaml"))
    stamps = {f: f.stat().st_mtime_ns for f in cached}
    load_spec(s, "all")  # the same files and variables: Compose's kept answer, not a second run
    assert {f: f.stat().st_mtime_ns for f in cached} == stamps and len(cached) == 1


@needs_compose
def test_a_file_compose_rejects_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    s = _copy_compose(tmp_path, lambda d: d["services"]["dev"].update(ulimits="lots"))
    with pytest.raises(WorkbenchError) as err:
        load_spec(s, "all")
    assert str(err.value).startswith("Compose cannot resolve docker-compose.yml: ") and "\n" not in str(err.value)


def test_the_resolver_setting_is_checked(tmp_path, monkeypatch):
    s = _copy_compose(tmp_path, lambda d: None, "kompose")
    with pytest.raises(WorkbenchError, match=r"workbench\.compose_resolver is 'kompose': use auto, compose, builtin"):
        load_spec(s, "all")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    if compose_cli.compose_command() is None:  # Compose installed in a plugin folder outside PATH stays found
        with pytest.raises(WorkbenchError, match="neither `docker compose` nor docker-compose is installed"):
            load_spec(_copy_compose(tmp_path, lambda d: None, "compose"), "all")
        assert load_spec(_copy_compose(tmp_path, lambda d: None, "auto"), "all").service == "dev"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose (Compose v1) not installed")
@pytest.mark.parametrize("service", ["dev", "dev-cpu"])
@pytest.mark.parametrize("resolver", ["auto", "builtin"])
def test_agrees_with_real_compose(tmp_path, service, resolver, monkeypatch):
    """The same file, variables and project .env through Compose itself give the same container definition, with
    either resolver (auto: our reading of Compose's answer; builtin: our own reader)."""
    monkeypatch.delenv("WORKBENCH_ULIMIT_MEMLOCK", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "docker-compose.yml").write_text((ROOT / "docker-compose.yml").read_text())
    (tmp_path / ".env").write_text("WORKBENCH_ULIMIT_MEMLOCK=8388608\n")  # a value only .env gives
    settings = Settings.from_mapping(tmp_path, {"hf_cache": str(tmp_path / "hf"), "fork": str(tmp_path / "fork"),
                                                "container": "agree", "compose_resolver": resolver})
    env = {**compose_variables(settings), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run(["docker-compose", "--profile", "cpu", "config"], cwd=tmp_path,
                         capture_output=True, text=True, env=env, check=True).stdout
    theirs = yaml.safe_load(out)["services"][service]
    volumes_decl = yaml.safe_load(out)["volumes"]
    ours = load_spec(settings, "none" if service == "dev-cpu" else "all")
    assert ours.image == theirs["image"] and ours.name == theirs["container_name"]
    assert ours.init == theirs["init"] and ours.ipc_mode == theirs["ipc"]
    assert ours.working_dir == theirs["working_dir"] and list(ours.command) == theirs["command"]
    assert ours.environment == {k: str(v) for k, v in theirs["environment"].items()}
    assert ours.labels == theirs["labels"]
    assert {(n, s) for n, s, _ in ours.ulimits} == {(n, v) for n, v in theirs["ulimits"].items()}
    assert theirs["ulimits"]["memlock"] == 8388608

    def normalise(entry: str) -> tuple[str, str]:
        src, dst = entry.split(":")[:2]
        return (volumes_decl[src]["name"] if src in volumes_decl else src, dst)

    assert {(m.source, m.target) for m in ours.mounts} == {normalise(v) for v in theirs["volumes"]}
    reserved = theirs.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    assert [(g.driver, "all" if g.count == -1 else g.count, list(g.capabilities)) for g in ours.gpus] == [
        (d["driver"], d["count"], d["capabilities"]) for d in reserved
    ], json.dumps(reserved)


def _resolve_at_once(settings, threads: int) -> tuple[list[str], list[Exception]]:
    """``threads`` load_spec calls released together; the services they got and the errors they raised."""
    import threading

    barrier, errors, services = threading.Barrier(threads), [], []

    def resolve():
        barrier.wait()
        try:
            services.append(load_spec(settings, "all").service)
        except Exception as err:  # collected and returned
            errors.append(err)

    workers = [threading.Thread(target=resolve) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return services, errors


@needs_compose
def test_concurrent_resolves_of_an_empty_cache_all_get_the_answer(tmp_path, monkeypatch):
    """Threads of one process (three `up`s in one test, an IDE's workers) share a pid: each keeps its own
    temporary answer, so none renames away another's."""
    s = _copy_compose(tmp_path, lambda d: None)
    for attempt in range(3):  # each attempt an empty cache: every thread runs Compose and writes its answer
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / f"cache{attempt}"))
        services, errors = _resolve_at_once(s, 6)
        assert not errors, errors
        assert services == ["dev"] * 6
        folder = tmp_path / f"cache{attempt}" / "vllm-workbench" / "compose-config"
        assert [f.suffix for f in folder.iterdir()] == [".yaml"], "one answer kept, no temporary left behind"
