"""The devcontainer configurations, debug configurations, verify script and learning-path scripts, checked
without a daemon: they point at what exists (compose services, files), carry the debug environment, and
verify.py tells "not set up yet" from "broken" through real distribution metadata on sys.path."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workbench.config import Settings

ROOT = Path(__file__).resolve().parents[2]
VERIFY = ROOT / ".devcontainer" / "verify.py"
EXTENSIONS = {"ms-python.python", "ms-python.debugpy", "ms-vscode.cpptools", "nvidia.nsight-vscode-edition",
              "charliermarsh.ruff"}
CONTAINER_ROOT = "/workspace/workbench/"  # where .devcontainer/docker-compose.devcontainer.yml mounts the repo


def jsonc(path: Path) -> dict:
    """devcontainer.json / launch.json allow // comment lines; ours keep comments on their own lines."""
    return json.loads("\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("//")))


@pytest.mark.parametrize(("config", "service"), [(".devcontainer/devcontainer.json", "dev"),
                                                 (".devcontainer/cpu/devcontainer.json", "dev-cpu")])
def test_devcontainer_is_built_on_the_compose_file(config, service):
    path = ROOT / config
    cfg = jsonc(path)
    files = [(path.parent / f).resolve() for f in cfg["dockerComposeFile"]]
    assert files[0] == ROOT / "docker-compose.yml" and all(f.is_file() for f in files)
    compose = yaml.safe_load(files[0].read_text())
    assert cfg["service"] == service and cfg["runServices"] == [service]
    assert service in compose["services"]
    gpu_reserved = "deploy" in compose["services"][service]
    assert gpu_reserved == (service == "dev")  # the CPU configuration must not ask for GPUs
    # GPUs come from the compose file's reservation; hostRequirements.gpu would make the CLI add one of its
    # own to the service on any host with the NVIDIA runtime, the CPU service too (docs/workflow.md).
    assert "hostRequirements" not in cfg
    assert cfg["remoteUser"] == "dev" and cfg["workspaceFolder"] == compose["services"][service]["working_dir"]
    assert set(cfg["customizations"]["vscode"]["extensions"]) == EXTENSIONS
    post = cfg["postCreateCommand"].split()[-1]
    assert post.startswith(CONTAINER_ROOT) and (ROOT / post[len(CONTAINER_ROOT):]).is_file()
    override = yaml.safe_load(files[1].read_text())
    assert ".:/workspace/workbench" in override["services"][service]["volumes"]
    # The host folders are made by the module that reads this very configuration's compose files.
    init = cfg["initializeCommand"]
    assert init[init.index("-m") + 1] == "workbench.container.host_folders"
    assert init[-1] == "${localWorkspaceFolder}/" + config


@pytest.mark.parametrize("config", [".devcontainer/devcontainer.json", ".devcontainer/cpu/devcontainer.json"])
def test_tokens_reach_the_tools_processes_not_the_container(config):
    """remoteEnv is applied to what VS Code and `devcontainer exec` start; containerEnv would go into the
    container's create config, where `docker commit` bakes it into an image."""
    cfg = jsonc(ROOT / config)
    assert "containerEnv" not in cfg
    assert "HF_TOKEN" in cfg["remoteEnv"] and set(cfg["remoteEnv"]) <= set(Settings(root=ROOT).secrets)
    assert all(value == f"${{localEnv:{name}}}" for name, value in cfg["remoteEnv"].items())


def _image_venv() -> str:
    """The venv Dockerfile.dev puts first on PATH (ENV VIRTUAL_ENV=...)."""
    for line in (ROOT / "Dockerfile.dev").read_text().splitlines():
        if line.startswith("ENV VIRTUAL_ENV="):
            return line.split("=", 1)[1].strip()
    raise AssertionError("Dockerfile.dev sets no VIRTUAL_ENV")


def test_launch_configurations_debug_vllm_in_process():
    cfg = jsonc(ROOT / ".vscode" / "launch.json")
    python = f"{_image_venv()}/bin/python"
    for config in (".devcontainer/devcontainer.json", ".devcontainer/cpu/devcontainer.json"):
        settings = jsonc(ROOT / config)["customizations"]["vscode"]["settings"]
        assert settings["python.defaultInterpreterPath"] == python
    names = [c["name"] for c in cfg["configurations"]]
    assert any("offline inference" in n for n in names) and any(n.startswith("trace") for n in names)
    assert any(n.startswith("bench") for n in names)
    for c in cfg["configurations"]:
        assert c["justMyCode"] is False, c["name"]
        assert c["python"] == python and c["type"] == "debugpy"
        env = c["env"]
        assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and env["VLLM_LOGGING_LEVEL"] in ("DEBUG", "INFO")
        assert "CUDA_VISIBLE_DEVICES" in env
        program = c.get("program", "")
        if program.startswith(CONTAINER_ROOT):
            rel = program[len(CONTAINER_ROOT):]
            assert (ROOT / rel).is_file(), f"{c['name']}: {rel} missing"
        module = c.get("module", "")
        if module.startswith("workbench."):  # the workbench library is on the image venv's path
            assert importlib.util.find_spec(module) is not None, f"{c['name']}: {module} missing"
    tp = next(c for c in cfg["configurations"] if "tensor parallel" in c["name"])
    assert tp["subProcess"] is True and tp["env"]["CUDA_VISIBLE_DEVICES"] == "0,1"


STEPS = sorted((ROOT / "scripts" / "debug").glob("0*.py"))


def test_five_learning_steps():
    assert [p.name[:2] for p in STEPS] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("script", STEPS, ids=[p.name for p in STEPS])
def test_step_parses_its_flags_without_vllm(script):
    """--help works where vLLM is not installed; vLLM is imported inside functions only."""
    tree = ast.parse(script.read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert not any("vllm" in ast.dump(n) for n in top), "import vllm at module level"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--model" in out.stdout and "--max-model-len" in out.stdout


def _verify(tmp_path: Path, site: Path | None, fork: Path, kernels: Path, *extra: Path,
            only: str = "vllm,custom_kernels") -> dict:
    env = {**os.environ, "WORKBENCH_FORK_DIR": str(fork), "WORKBENCH_KERNELS_DIR": str(kernels)}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (site, *extra) if p)
    out = subprocess.run([sys.executable, str(VERIFY), "--json", "--only", only], capture_output=True, text=True,
                         env=env, timeout=120)
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    checks["_rc"] = out.returncode
    return checks


def _fork(tmp_path: Path) -> Path:
    fork = tmp_path / "fork"
    (fork / "vllm").mkdir(parents=True)
    (fork / "setup.py").write_text("# vLLM fork stand-in\n")
    (fork / "vllm" / "__init__.py").write_text("")
    return fork


def _dist(site: Path, direct_url: dict | None) -> None:
    info = site / "vllm-0.13.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.13.0\n")
    if direct_url is not None:
        (info / "direct_url.json").write_text(json.dumps(direct_url))


def test_verify_not_installed_yet_is_pending_not_broken(tmp_path):
    kernels = tmp_path / "ck"
    kernels.mkdir()
    (kernels / "pyproject.toml").write_text("[project]\nname='custom-kernels'\n")
    checks = _verify(tmp_path, None, _fork(tmp_path), kernels, only="")
    if "vllm" in sys.modules or checks["vllm"]["status"] == "ok":  # a real vllm in this venv: nothing to test
        pytest.skip("vllm is installed in the test environment")
    assert checks["vllm"]["status"] == "pending" and checks["vllm"]["fix"] == "invoke install --precompiled"
    assert checks["custom_kernels"]["status"] == "pending"
    assert checks["cuda"]["status"] in ("info", "ok")  # a GPU-less host is not an error
    broken = [k for k, c in checks.items() if k != "_rc" and c["status"] == "broken"]
    assert checks["_rc"] == (1 if broken else 0)


def test_verify_editable_fork_is_ok_and_a_foreign_one_broken(tmp_path):
    fork = _fork(tmp_path)
    site = tmp_path / "site"
    _dist(site, {"url": f"file://{fork}", "dir_info": {"editable": True}})
    # An editable install puts the fork on sys.path (a .pth in site-packages); PYTHONPATH does the same here.
    checks = _verify(tmp_path, site, fork, tmp_path / "none", fork)
    assert checks["vllm"]["status"] == "ok", checks["vllm"]
    other = tmp_path / "elsewhere"
    other.mkdir()
    site2 = tmp_path / "site2"
    _dist(site2, {"url": f"file://{other}", "dir_info": {"editable": True}})
    checks = _verify(tmp_path, site2, fork, tmp_path / "none")
    assert checks["vllm"]["status"] == "broken" and "not" in checks["vllm"]["detail"]
    assert checks["_rc"] == 1


def test_verify_regular_install_is_pending_and_missing_fork_broken(tmp_path):
    site = tmp_path / "site"
    _dist(site, None)
    assert _verify(tmp_path, site, _fork(tmp_path), tmp_path)["vllm"]["status"] == "pending"
    missing = _verify(tmp_path, None, tmp_path / "no-fork", tmp_path)
    assert missing["vllm"]["status"] == "broken" and "submodule" in missing["vllm"]["fix"]
    assert missing["_rc"] == 1


def test_verify_prints_icons_and_no_fail_exits_zero(tmp_path):
    env = {**os.environ, "WORKBENCH_FORK_DIR": str(tmp_path / "no-fork"), "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, str(VERIFY), "--no-fail", "--only", "python,vllm"], capture_output=True,
                         text=True, env=env)
    assert out.returncode == 0
    assert "❌ vllm (broken)" in out.stdout and "fix: on the host: git submodule update" in out.stdout
    assert "✅ python" in out.stdout or "❌ python" in out.stdout
