"""Docs stay honest: every vLLM source path (``vllm/...``, ``csrc/...``) and every ``path::Symbol`` named in
docs/*.md and README.md exists in every vLLM release the workbench supports (those with a patch series under
patches/, e.g. the real 0.13.0, 0.24.0 and 0.33.0 sdists), unless the docs say which release it belongs to.

What counts as a path: a token starting with ``vllm/`` or ``csrc/`` (not preceded by a word character, ``/``,
``.`` or ``-``, so ``/workspace/vllm/...`` and ``vllm/vllm-openai:v0.13.0`` are not taken) that ends in a
file extension or ``/`` (a directory). ``path::Name`` and ``path::Class.method`` must name a top-level
def/class (and a method of it) in a Python file, or appear as a word in a C++/CUDA file.
A reference struck through (``~~vllm/v1/executor/gpu_executor.py~~``) says "this does not exist": it must
then be absent, so a claim that something is gone stays honest too.
A reference followed by a release in parentheses (`` `vllm/attention/layer.py` (0.13.0)``), or several
(`` `csrc/cache_kernels.cu` (0.13.0, 0.33.0)``), belongs to those releases only and is checked against them; a
file that moved is named once per place it lived. Sample output of one
release is wrapped in ``<!-- vllm 0.13.0 -->`` ... ``<!-- /vllm -->`` (invisible when rendered).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from tests.support.vllm_source import PINNED, vllm_source_tree
from workbench.fork.series import available_series

ROOT = Path(__file__).resolve().parent.parent
# The releases the workbench supports: one home, the patch series it ships.
RELEASES = available_series(ROOT / "patches")
PATH_RE = re.compile(r"(?<![\w/.\-])((?:vllm|csrc)/[\w./\-]*?(?:\.(?:py|cu|cuh|h|hpp|cpp|c|txt|cmake|json|yaml|toml"
                     r"|md|sh|jinja)|/))(?:::([A-Za-z_][\w.]*))?(?![\w\-])")
STALE_EXAMPLE = "vllm/v1/executor/gpu_executor.py"  # cited by many guides; V1 never had it


def doc_files(root: Path = ROOT) -> list[Path]:
    return sorted((root / "docs").glob("*.md")) + [p for p in [root / "README.md"] if p.is_file()]


STRUCK_RE = re.compile(r"~~(.+?)~~")
# Right after a reference: the release(s) it is from.
RELEASE_RE = re.compile(r"`?[ \t]*\((\d+\.\d+\.\d+(?:,[ \t]*\d+\.\d+\.\d+)*)\)")


def marked_releases(marker: str) -> set[str]:
    """The releases a marker names ("0.13.0" or "0.13.0, 0.33.0")."""
    return set(re.split(r",[ \t]*", marker))


REGION_RE = re.compile(r"<!-- vllm (\d+\.\d+\.\d+) -->(.*?)<!-- /vllm -->", re.S)


def release_references(text: str) -> list[tuple[str, str | None, str | None]]:
    """(path, symbol or None, release or None) for each source reference, struck-through ones excluded."""
    found = []
    plain = STRUCK_RE.sub("", text)
    regions = [(m.start(2), m.end(2), m.group(1)) for m in REGION_RE.finditer(plain)]
    for m in PATH_RE.finditer(plain):
        release = RELEASE_RE.match(plain, m.end())
        region = next((r for start, end, r in regions if start <= m.start() < end), None)
        found.append((m.group(1), m.group(2), release.group(1) if release else region))
    return found


def references(text: str) -> list[tuple[str, str | None]]:
    """(path, symbol or None) for each source reference in a Markdown text, struck-through ones excluded."""
    return [(path, symbol) for path, symbol, _ in release_references(text)]


def struck_references(text: str) -> list[tuple[str, str | None]]:
    """References inside ~~...~~: named as absent from the pinned source."""
    return [ref for span in STRUCK_RE.findall(text) for ref in references(span)]


@cache
def _python_symbols(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names |= {f"{node.name}.{n.name}" for n in node.body
                          if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return frozenset(names)


def problem(tree: Path, path: str, symbol: str | None) -> str | None:
    """Why a reference is stale, or None when it holds in the source tree."""
    target = tree / path
    if not (target.is_dir() if path.endswith("/") else target.is_file()):
        return f"{path}: no such {'directory' if path.endswith('/') else 'file'}"
    if symbol is None:
        return None
    if target.suffix == ".py":
        if symbol not in _python_symbols(target):
            return f"{path}::{symbol}: no such top-level def/class (or Class.method)"
    elif not re.search(rf"\b{re.escape(symbol.split('.')[-1])}\b", target.read_text(errors="replace")):
        return f"{path}::{symbol}: symbol not found in the file"
    return None


def stale_references(tree: Path, files: list[Path], release: str | None = None) -> list[str]:
    """Why each reference is stale in ``tree`` (the source of ``release``; references marked for
    another release are not checked against it)."""
    found = []
    for doc in files:
        name = doc.relative_to(doc.parent.parent) if doc.parent.name == "docs" else doc.name
        text = doc.read_text(encoding="utf-8")
        for path, symbol, only in release_references(text):
            if only is not None and release is not None and release not in marked_releases(only):
                continue
            why = problem(tree, path, symbol)
            if why:
                found.append(f"{name}: {why}")
        for path, symbol in struck_references(text):
            if problem(tree, path, symbol) is None:
                ref = path + (f"::{symbol}" if symbol else "")
                found.append(f"{name}: ~~{ref}~~ is struck through as absent, but it exists")
    return sorted(set(found))


def test_reference_syntax():
    text = ("see `vllm/v1/worker/gpu_worker.py::Worker.determine_available_memory`, csrc/attention/ and "
            "vllm/vllm-openai:v0.13.0, /workspace/vllm/vllm/envs.py and vllm/ alone; not ~~`vllm/worker/`~~")
    assert references(text) == [("vllm/v1/worker/gpu_worker.py", "Worker.determine_available_memory"),
                                ("csrc/attention/", None)]
    assert struck_references(text) == [("vllm/worker/", None)]


def test_release_markers_name_supported_releases():
    text = ("`vllm/attention/layer.py::Attention.forward` (0.13.0) / "
            "`vllm/model_executor/layers/attention/attention.py::Attention.forward` (0.33.0), and `csrc/x.cu` (see)")
    assert release_references(text) == [("vllm/attention/layer.py", "Attention.forward", "0.13.0"),
                                        ("vllm/model_executor/layers/attention/attention.py", "Attention.forward",
                                         "0.33.0"),
                                        ("csrc/x.cu", None, None)]
    region = "<!-- vllm 0.13.0 -->\n```\nvllm/attention/ops/x.py:57\n```\n<!-- /vllm -->\n`csrc/y.cu`"
    assert release_references(region) == [("vllm/attention/ops/x.py", None, "0.13.0"), ("csrc/y.cu", None, None)]
    moved = "`csrc/a.cu::k` (0.13.0, 0.33.0) / `csrc/stable/a.cu::k` (0.24.0)"
    assert release_references(moved) == [("csrc/a.cu", "k", "0.13.0, 0.33.0"), ("csrc/stable/a.cu", "k", "0.24.0")]
    assert marked_releases("0.13.0, 0.33.0") == {"0.13.0", "0.33.0"}
    assert RELEASES[:1] == [PINNED] and len(RELEASES) >= 2
    marked = {one for f in doc_files() for *_, release in release_references(f.read_text(encoding="utf-8"))
              if release for one in marked_releases(release)}
    assert marked <= set(RELEASES), f"docs mark references for releases without a series: {marked - set(RELEASES)}"


@pytest.mark.vllm_source
@pytest.mark.parametrize("release", RELEASES)
def test_docs_name_only_what_each_release_has(release):
    tree = vllm_source_tree(release)
    files = doc_files()
    assert any(f.parent.name == "docs" for f in files), "no docs/*.md found"
    refs = [r for f in files for r in references(f.read_text(encoding="utf-8"))]
    assert len(refs) >= 30, "the docs should cite the source they describe"
    stale = stale_references(tree, files, release)
    assert not stale, f"{len(stale)} stale reference(s) to vLLM {release}:\n" + "\n".join(stale)


@pytest.mark.vllm_source
def test_a_stale_reference_fails_with_the_list(tmp_path):
    tree = vllm_source_tree(PINNED)
    (tmp_path / "docs").mkdir()
    doc = tmp_path / "docs" / "old-guide.md"
    doc.write_text(f"The executor lives in `{STALE_EXAMPLE}`; the worker in "
                   "`vllm/v1/worker/gpu_worker.py::Worker.no_such_method`; the runner in "
                   "`vllm/v1/worker/gpu_model_runner.py::GPUModelRunner.execute_model`. Gone: ~~`vllm/envs.py`~~, "
                   "~~`vllm/worker/`~~. Planning: `vllm/v1/core/kv_cache_planning.py::get_kv_cache_configs` "
                   "(0.33.0), `vllm/v1/core/kv_cache_utils.py::get_kv_cache_configs` (0.13.0), "
                   "`vllm/v1/core/kv_cache_utils.py::no_such_function` (0.13.0). Moved: "
                   "`csrc/libtorch_stable/cache_kernels.cu` (0.24.0), `csrc/nowhere.cu` (0.13.0, 0.33.0).\n")
    (tmp_path / "README.md").write_text("Hook: `csrc/no_such_kernel.cu`, "
                                        "`csrc/cache_kernels.cu::reshape_and_cache_flash`\n")
    # A reference marked for 0.33.0 is not held against 0.13.0; one marked for 0.13.0 (alone or among
    # others) is.
    stale = stale_references(tree, doc_files(tmp_path), PINNED)
    assert stale == ["README.md: csrc/no_such_kernel.cu: no such file",
                     "docs/old-guide.md: csrc/nowhere.cu: no such file",
                     "docs/old-guide.md: vllm/v1/core/kv_cache_utils.py::no_such_function: no such top-level "
                     "def/class (or Class.method)",
                     "docs/old-guide.md: vllm/v1/executor/gpu_executor.py: no such file",
                     "docs/old-guide.md: vllm/v1/worker/gpu_worker.py::Worker.no_such_method: no such top-level "
                     "def/class (or Class.method)",
                     "docs/old-guide.md: ~~vllm/envs.py~~ is struck through as absent, but it exists"]
