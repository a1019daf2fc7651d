"""The house rules, checked on the code as it is: the import graph (no cycles, the ground floor imports no
wing, nothing imports the task layer), module size, and the kernels package importable from the root."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "workbench"
WINGS = ("bench", "container", "fork", "guest", "memory", "profile", "trace")
MAX_LINES = 450


def _graph() -> dict[str, set[str]]:
    """module -> the workbench modules it imports, at module level or inside a function alike."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                          for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in (*WINGS, "tasks")) else ""


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_nothing_imports_upward():
    bad = []
    for module, imports in _graph().items():
        for target in imports:
            if _wing(target) == "tasks" and _wing(module) != "tasks":
                bad.append(f"{module} imports the task layer ({target})")
            if not _wing(module) and _wing(target):
                bad.append(f"ground-floor {module} imports the {_wing(target)} wing ({target})")
    assert not bad, "; ".join(sorted(bad))


def test_no_module_is_over_the_size_limit():
    big = {str(p.relative_to(ROOT)): n for p in [*PACKAGE.rglob("*.py"), *(ROOT / "custom_kernels").rglob("*.py")]
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_custom_kernels_imports_from_the_repository_root(tmp_path):
    # An editable install of the kernels package, then `python -c "import custom_kernels"` run from the root:
    # the project folder custom_kernels/ must not shadow the package as an empty namespace package.
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(site), "-e", str(ROOT / "custom_kernels")], check=True, capture_output=True, timeout=300)
    code = (f"import site; site.addsitedir({str(site)!r}); import custom_kernels; "
            "print(custom_kernels.__file__, hasattr(custom_kernels, 'unquantized_gemm'))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "TRITON_INTERPRET": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    path, routed = done.stdout.split()
    assert Path(path) == ROOT / "custom_kernels" / "src" / "custom_kernels" / "__init__.py" and routed == "True"
