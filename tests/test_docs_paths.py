"""Docs stay honest: every vLLM source path (``vllm/...``, ``csrc/...``) and every ``path::Symbol`` named in
docs/*.md and README.md exists in the pinned vLLM release (the real 0.13.0 sdist).

What counts as a path: a token starting with ``vllm/`` or ``csrc/`` (not preceded by a word character, ``/``,
``.`` or ``-``, so ``/workspace/vllm/...`` and ``vllm/vllm-openai:v0.13.0`` are not taken) that ends in a
file extension or ``/`` (a directory). ``path::Name`` and ``path::Class.method`` must name a top-level
def/class (and a method of it) in a Python file, or appear as a word in a C++/CUDA file.
A reference struck through (``~~vllm/v1/executor/gpu_executor.py~~``) says "this does not exist": it must
then be absent, so a claim that something is gone stays honest too.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from tests.support.vllm_source import PINNED, vllm_source_tree

ROOT = Path(__file__).resolve().parent.parent
PATH_RE = re.compile(r"(?<![\w/.\-])((?:vllm|csrc)/[\w./\-]*?(?:\.(?:py|cu|cuh|h|hpp|cpp|c|txt|cmake|json|yaml|toml"
                     r"|md|sh|jinja)|/))(?:::([A-Za-z_][\w.]*))?(?![\w\-])")
STALE_EXAMPLE = "vllm/v1/executor/gpu_executor.py"  # cited by many guides; V1 never had it


def doc_files(root: Path = ROOT) -> list[Path]:
    return sorted((root / "docs").glob("*.md")) + [p for p in [root / "README.md"] if p.is_file()]


STRUCK_RE = re.compile(r"~~(.+?)~~")


def references(text: str) -> list[tuple[str, str | None]]:
    """(path, symbol or None) for each source reference in a Markdown text, struck-through ones excluded."""
    return [(m.group(1), m.group(2)) for m in PATH_RE.finditer(STRUCK_RE.sub("", text))]


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


def stale_references(tree: Path, files: list[Path]) -> list[str]:
    found = []
    for doc in files:
        name = doc.relative_to(doc.parent.parent) if doc.parent.name == "docs" else doc.name
        text = doc.read_text(encoding="utf-8")
        for path, symbol in references(text):
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


@pytest.mark.vllm_source
def test_docs_name_only_what_the_pinned_source_has():
    tree = vllm_source_tree(PINNED)
    files = doc_files()
    assert any(f.parent.name == "docs" for f in files), "no docs/*.md found"
    refs = [r for f in files for r in references(f.read_text(encoding="utf-8"))]
    assert len(refs) >= 30, "the docs should cite the source they describe"
    stale = stale_references(tree, files)
    assert not stale, f"{len(stale)} stale reference(s) to vLLM {PINNED}:\n" + "\n".join(stale)


@pytest.mark.vllm_source
def test_a_stale_reference_fails_with_the_list(tmp_path):
    tree = vllm_source_tree(PINNED)
    (tmp_path / "docs").mkdir()
    doc = tmp_path / "docs" / "old-guide.md"
    doc.write_text(f"The executor lives in `{STALE_EXAMPLE}`; the worker in "
                   "`vllm/v1/worker/gpu_worker.py::Worker.no_such_method`; the runner in "
                   "`vllm/v1/worker/gpu_model_runner.py::GPUModelRunner.execute_model`. Gone: ~~`vllm/envs.py`~~, "
                   "~~`vllm/worker/`~~.\n")
    (tmp_path / "README.md").write_text("Hook: `csrc/no_such_kernel.cu`, "
                                        "`csrc/cache_kernels.cu::reshape_and_cache_flash`\n")
    stale = stale_references(tree, doc_files(tmp_path))
    assert stale == ["README.md: csrc/no_such_kernel.cu: no such file",
                     "docs/old-guide.md: vllm/v1/executor/gpu_executor.py: no such file",
                     "docs/old-guide.md: vllm/v1/worker/gpu_worker.py::Worker.no_such_method: no such top-level "
                     "def/class (or Class.method)",
                     "docs/old-guide.md: ~~vllm/envs.py~~ is struck through as absent, but it exists"]
