"""The GEMM hook for real: the patched vLLM source and the plugin on stock vLLM, imported on CPU.

tests/support/linear_probe.py runs in a subprocess with the vLLM tree first on sys.path, registers the hook,
and per scenario (the switches it sets) builds ReplicatedLinear layers with model-like prefixes, loads
weights the way vLLM does and runs a forward pass; custom_kernels.CALL_COUNTS says which layers went through
``custom_kernels.unquantized_gemm``. One process per tree and registration serves all of its scenarios
(importing vLLM costs seconds each time); its result is shared by the tests that read it.
"""

from __future__ import annotations

import functools
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


def probe(tree: Path, route: str, scenarios: dict[str, dict[str, str]], version: str) -> dict[str, dict]:
    """Each scenario's report (layers, routing) from one probe process, in the order given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    paths = [str(p) for p in (release_deps(version),) if p is not None]
    if route == "entrypoint":
        import tempfile

        paths.append(str(_entry_point_dist(Path(tempfile.mkdtemp(prefix="wb-ep-")))))
        clean["VLLM_PLUGINS"] = "custom_gemm"  # only ours, whatever else this venv has installed
    if paths:
        clean["PYTHONPATH"] = os.pathsep.join(paths)
    plan = json.dumps([{"env": env, "layers": LAYERS} for env in scenarios.values()])
    result = subprocess.run([sys.executable, str(PROBE), str(tree), str(KERNELS / "src"), route, plan],
                            env=clean, capture_output=True, text=True, timeout=600)
    lines = [line for line in result.stdout.splitlines() if line.startswith("PROBE")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    reports = json.loads(lines[-1][len("PROBE"):])
    assert len(reports) == len(scenarios)
    for report in reports:
        assert Path(report["vllm_file"]).is_relative_to(tree), "imported a vLLM other than the tree under test"
        for layer in report["layers"].values():
            assert layer["max_abs_err"] < 1e-4  # same numbers as x @ W.T + b, whichever GEMM ran
    return dict(zip(scenarios, reports, strict=True))


def routed(layers: dict) -> set[str]:
    """Layers whose forward went through custom_kernels.unquantized_gemm (once) and flagged so."""
    out = set()
    for name, info in layers.items():
        assert info["calls"] == int(info["use_custom_gemm"]), (name, info)
        if info["calls"]:
            out.add(name)
    return out


ON = {"VLLM_USE_CUSTOM_GEMM": "1"}
# By default a selected layer routes only where the table has a non-cuBLAS winner for its shape: on the CPU
# (fp32) there is none, so each layer goes back to vLLM's method when its weights load, and says why.
TUNED_SKIP = "skipped: cpu/float32: F.linear is the only path"

# The scenarios run in this order in one process; the switches of each are set before its layers are built.
STOCK = {  # the plugin registers with the first scenario's switches (off)
    "off": ({}, set()),
    "late": ({**ON, **ROUTE_ALL}, {MLP, ATTN, MLP1}),  # switched on after the plugin loaded: a forked engine core
    "filter": ({**ON, "VLLM_CUSTOM_GEMM_LAYERS": "*.mlp.*,!model.layers.1", **ROUTE_ALL}, {MLP}),
    "tuned": (ON, set()),
}
PATCHED = {
    "13": {  # 0.13.0: ReplicatedLinear routes through the fork's own choice
        "filter-alone": ({"VLLM_USE_CUSTOM_GEMM": "0", "VLLM_CUSTOM_GEMM_LAYERS": "*"}, set()),
        "all": ({**ON, **ROUTE_ALL}, {MLP, ATTN, MLP1}),
        "exclude": ({**ON, "VLLM_CUSTOM_GEMM_LAYERS": "model.layers.0,!*.o_proj", **ROUTE_ALL}, {MLP}),
        # the plugin is loaded too (custom_kernels is installed): it must not route a second time (calls stay 1)
        "mlp": ({**ON, "VLLM_CUSTOM_GEMM_LAYERS": "*.mlp.*", **ROUTE_ALL}, {MLP, MLP1}),
        "tuned": (ON, set()),
    },
    "later": {
        "filter-alone": ({"VLLM_USE_CUSTOM_GEMM": "0", "VLLM_CUSTOM_GEMM_LAYERS": "*.mlp.*"}, set()),
        "filter": ({**ON, "VLLM_CUSTOM_GEMM_LAYERS": "*.mlp.*,!model.layers.1", **ROUTE_ALL}, {MLP}),
        "tuned": (ON, set()),
    },
}


def _cases(table: dict) -> dict[str, dict[str, str]]:
    return {name: env for name, (env, _) in table.items()}


@functools.cache
def stock_reports(version: str, route: str) -> dict[str, dict]:
    if route == "entrypoint":  # registered by vLLM's loader with the switch on: an early registration
        return probe(vllm_source_tree(version), route, {"attn": {**ON, "VLLM_CUSTOM_GEMM_LAYERS": "*.self_attn.*",
                                                                 **ROUTE_ALL}}, version)
    return probe(vllm_source_tree(version), route, _cases(STOCK), version)


@pytest.fixture(scope="module")
def patched_reports(tmp_path_factory):
    """Each release's fork with its series applied by workbench.fork.patches, probed once for the module."""
    cache: dict[str, dict] = {}

    def get(version: str) -> dict[str, dict]:
        if version not in cache:
            repo = make_fork_repo(version, tmp_path_factory.mktemp(f"patched-{version}") / "vllm")
            series = load_series(ROOT / "patches", version)
            P.apply_series(repo, series)
            assert P.series_state(repo, series).statuses == [P.APPLIED] * 3
            table = PATCHED["13" if version == "0.13.0" else "later"]
            cache[version] = probe(repo, "patched", _cases(table), version)
        return cache[version]

    return get


# --------------------------------------------------------------------------------------- patched source
@pytest.mark.vllm_source
@pytest.mark.parametrize(("version", "case"), [(v, c) for v in RELEASES
                                               for c in PATCHED["13" if v == "0.13.0" else "later"]])
def test_patched_fork_routes_the_layers_it_chose(patched_reports, version, case):
    _, expected = PATCHED["13" if version == "0.13.0" else "later"][case]
    report = patched_reports(version)[case]
    assert routed(report["layers"]) == expected
    if case == "tuned":  # the plugin applies the route rule to the layers the fork chose
        assert set(report["routing"]) == set(LAYERS)
        assert set(report["routing"].values()) == {TUNED_SKIP}


# --------------------------------------------------------------------------------------- plugin on stock vLLM
@pytest.mark.vllm_source
@pytest.mark.parametrize("version", RELEASES)
@pytest.mark.parametrize("case", list(STOCK))
def test_plugin_routes_on_stock_vllm(version, case):
    report = stock_reports(version, "plugin")[case]
    assert routed(report["layers"]) == STOCK[case][1]
    if case == "tuned":
        assert set(report["routing"]) == set(LAYERS)
        assert set(report["routing"].values()) == {TUNED_SKIP}


@pytest.mark.vllm_source
@pytest.mark.parametrize("version", RELEASES)
def test_plugin_loads_through_vllms_entry_point(version):
    # vLLM's own load_general_plugins() and the entry point custom_kernels declares
    assert routed(stock_reports(version, "entrypoint")["attn"]["layers"]) == {ATTN}
