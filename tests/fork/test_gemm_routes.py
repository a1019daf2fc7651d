"""The GEMM hook for real: the patched vLLM source and the plugin on stock vLLM, imported on CPU.

Each case runs tests/support/linear_probe.py in a subprocess with the vLLM tree first on sys.path, builds
ReplicatedLinear layers with model-like prefixes, loads weights the way vLLM does and runs a forward
pass; custom_kernels.CALL_COUNTS says which layers went through ``custom_kernels.unquantized_gemm``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.vllm_source import make_fork_repo, release_deps, vllm_source_tree
from workbench.fork import patches as P
from workbench.fork.series import available_series, load_series

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "tests" / "support" / "linear_probe.py"
KERNELS = ROOT / "custom_kernels"
MLP = "model.layers.0.mlp.down_proj"
ATTN = "model.layers.0.self_attn.o_proj"
MLP1 = "model.layers.1.mlp.gate_up_proj"
LAYERS = [MLP, ATTN, MLP1]
# Route every selected layer, tuned winner or not: these tests check the route itself, on the CPU.
ROUTE_ALL = {"VLLM_CUSTOM_GEMM_ROUTE": "all"}
RELEASES = available_series(ROOT / "patches")  # every release the workbench ships a series for


def _load_plugin_module():
    """custom_kernels/src/custom_kernels/vllm_plugin.py by path: the test venv need not have the package installed."""
    path = KERNELS / "src" / "custom_kernels" / "vllm_plugin.py"
    spec = importlib.util.spec_from_file_location("_wb_vllm_plugin", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


layer_selected = _load_plugin_module().layer_selected


# --------------------------------------------------------------------------------------- layer filter (unit)
@pytest.mark.parametrize(("prefix", "patterns", "expected"), [
    (MLP, [], True),
    (MLP, ["*.mlp.*"], True),
    (ATTN, ["*.mlp.*"], False),
    (MLP1, ["model.layers.0"], False),  # no wildcard: that module and everything below it
    (MLP, ["model.layers.0"], True),
    ("model.layers.01.mlp.x", ["model.layers.0"], False),  # not a string prefix match
    (ATTN, ["model.layers.0", "!*.o_proj"], False),
    (MLP, ["!*.o_proj"], True),
    ("lm_head", ["*.mlp.*", "lm_head"], True),
])
def test_layer_filter_rules(prefix, patterns, expected):
    assert layer_selected(prefix, patterns) is expected


# --------------------------------------------------------------------------------------- helpers
def _entry_point_dist(tmp: Path) -> Path:
    """A folder holding custom_kernels' dist metadata with the `vllm.general_plugins` entry point exactly
    as custom_kernels/pyproject.toml declares it, so vLLM's own loader finds it without an install."""
    import tomllib

    declared = tomllib.loads((KERNELS / "pyproject.toml").read_text())["project"]["entry-points"]
    group = declared["vllm.general_plugins"]
    dist = tmp / "custom_kernels-0.1.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: custom-kernels\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[vllm.general_plugins]\n" +
                                           "".join(f"{k} = {v}\n" for k, v in group.items()))
    return tmp


def probe(tree: Path, route: str, env: dict[str, str], version: str = "0.13.0",
          layers: list[str] = LAYERS, raw: bool = False) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    paths = [str(p) for p in (release_deps(version),) if p is not None]
    if route == "entrypoint":
        import tempfile

        paths.append(str(_entry_point_dist(Path(tempfile.mkdtemp(prefix="wb-ep-")))))
        clean["VLLM_PLUGINS"] = "custom_gemm"  # only ours, whatever else this venv has installed
    if paths:
        clean["PYTHONPATH"] = os.pathsep.join(paths)
    result = subprocess.run([sys.executable, str(PROBE), str(tree), str(KERNELS / "src"), route, *layers],
                            env={**clean, **env}, capture_output=True, text=True, timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.startswith("PROBE")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    report = json.loads(lines[-1][len("PROBE"):])
    assert Path(report["vllm_file"]).is_relative_to(tree), "imported a vLLM other than the tree under test"
    for layer in report["layers"].values():
        assert layer["max_abs_err"] < 1e-4  # same numbers as x @ W.T + b, whichever GEMM ran
    return report if raw else report["layers"]


def routed(layers: dict) -> set[str]:
    """Layers whose forward went through custom_kernels.unquantized_gemm (once) and flagged so."""
    out = set()
    for name, info in layers.items():
        assert info["calls"] == int(info["use_custom_gemm"]), (name, info)
        if info["calls"]:
            out.add(name)
    return out


def _patched(tmp_path_factory, version: str) -> Path:
    """A git repo of the release sdist with its series applied by workbench.fork.patches."""
    repo = make_fork_repo(version, tmp_path_factory.mktemp(f"patched-{version}") / "vllm")
    series = load_series(ROOT / "patches", version)
    P.apply_series(repo, series)
    assert P.series_state(repo, series).statuses == [P.APPLIED] * 3
    return repo


@pytest.fixture(scope="module")
def patched_tree(tmp_path_factory):
    return _patched(tmp_path_factory, "0.13.0")


# --------------------------------------------------------------------------------------- patched source
@pytest.mark.vllm_source
@pytest.mark.parametrize(("env", "expected"), [
    ({"VLLM_USE_CUSTOM_GEMM": "0", "VLLM_CUSTOM_GEMM_LAYERS": "*"}, set()),  # the filter alone does nothing
    ({"VLLM_USE_CUSTOM_GEMM": "1", **ROUTE_ALL}, {MLP, ATTN, MLP1}),
    ({"VLLM_USE_CUSTOM_GEMM": "1", "VLLM_CUSTOM_GEMM_LAYERS": "model.layers.0,!*.o_proj", **ROUTE_ALL}, {MLP}),
])
def test_patched_0_13_0_routes_replicated_linear(patched_tree, env, expected):
    assert routed(probe(patched_tree, "patched", env)) == expected


@pytest.mark.vllm_source
def test_plugin_stands_aside_on_a_patched_fork(patched_tree):
    # The fork routes by itself; the plugin must not wrap a second time (calls stay exactly 1).
    layers = probe(patched_tree, "plugin", {"VLLM_USE_CUSTOM_GEMM": "1", "VLLM_CUSTOM_GEMM_LAYERS": "*.mlp.*",
                                            **ROUTE_ALL})
    assert routed(layers) == {MLP, MLP1}


@pytest.fixture(scope="module")
def patched_trees(tmp_path_factory):
    """Each later release's fork with its series applied, made once for the module."""
    return {version: _patched(tmp_path_factory, version) for version in RELEASES if version != "0.13.0"}


@pytest.mark.vllm_source
@pytest.mark.parametrize("version", [v for v in RELEASES if v != "0.13.0"])
@pytest.mark.parametrize(("env", "expected"), [
    ({"VLLM_USE_CUSTOM_GEMM": "0", "VLLM_CUSTOM_GEMM_LAYERS": "*.mlp.*"}, set()),
    ({"VLLM_USE_CUSTOM_GEMM": "1", "VLLM_CUSTOM_GEMM_LAYERS": "*.mlp.*,!model.layers.1", **ROUTE_ALL}, {MLP}),
])
def test_patched_release_routes_with_the_layer_filter(patched_trees, version, env, expected):
    assert routed(probe(patched_trees[version], "patched", env, version=version)) == expected


# --------------------------------------------------------------------------------------- plugin on stock vLLM
@pytest.mark.vllm_source
@pytest.mark.parametrize("version", RELEASES)
@pytest.mark.parametrize(("route", "env", "expected"), [
    ("plugin", {}, set()),
    ("plugin", {"VLLM_USE_CUSTOM_GEMM": "1", **ROUTE_ALL}, {MLP, ATTN, MLP1}),
    # loaded while the switch was off, the layers built after it was set route (a forked engine core)
    ("plugin-late", {"VLLM_USE_CUSTOM_GEMM": "1", **ROUTE_ALL}, {MLP, ATTN, MLP1}),
    # through vLLM's own load_general_plugins() and the entry point custom_kernels declares
    ("entrypoint", {"VLLM_USE_CUSTOM_GEMM": "1", "VLLM_CUSTOM_GEMM_LAYERS": "*.self_attn.*", **ROUTE_ALL}, {ATTN}),
])
def test_plugin_routes_on_stock_vllm(version, route, env, expected):
    tree = vllm_source_tree(version)
    assert routed(probe(tree, route, env, version=version)) == expected


@pytest.mark.vllm_source
@pytest.mark.parametrize("route", ["plugin", "patched"])
def test_a_layer_without_a_tuned_winner_stays_on_vllms_own_gemm(patched_tree, route):
    # By default a selected layer routes only where the table has a non-cuBLAS winner for its shape: on the
    # CPU (fp32) there is none, so each layer goes back to vLLM's method when its weights load, and says why;
    # on a patched fork too (the plugin applies the rule to the layers the fork chose).
    tree = patched_tree if route == "patched" else vllm_source_tree("0.13.0")
    report = probe(tree, route, {"VLLM_USE_CUSTOM_GEMM": "1"}, raw=True)
    assert routed(report["layers"]) == set()
    assert set(report["routing"]) == set(LAYERS)
    assert all(v == "skipped: cpu/float32: F.linear is the only path" for v in report["routing"].values())
