"""Write `vllm bench` result JSON with vLLM's own code, fed with chosen numbers instead of a GPU run.

The tail of ``main()`` in the real vllm/benchmarks/latency.py and throughput.py (from the point
where the measurements exist to the json.dump) is taken from the sdist with ``ast`` and executed,
so the fixture has exactly the keys and value shapes that release writes — no hand-written copy.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def _main_tail(tree: Path, module: str, first_stmt: str) -> ast.Module:
    source = (tree / "vllm" / "benchmarks" / f"{module}.py").read_text()
    main = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "main")
    start = next(i for i, stmt in enumerate(main.body) if ast.unparse(stmt).startswith(first_stmt))
    return ast.Module(body=main.body[start:], type_ignores=[])


def write_latency_json(tree: Path, path: Path, latencies_s: list[float]) -> dict:
    """Run latency.py's result block for these per-iteration latencies; returns the parsed file."""
    code = _main_tail(tree, "latency", "latencies = np.array(latencies)")
    args = SimpleNamespace(output_json=str(path))
    namespace = {"np": np, "json": json, "args": args, "latencies": list(latencies_s),
                 "save_to_pytorch_benchmark_format": lambda args, results: None, "print": lambda *a, **k: None}
    exec(compile(code, "vllm/benchmarks/latency.py", "exec"), namespace)
    return json.loads(path.read_text())


def write_throughput_json(tree: Path, path: Path, elapsed_time_s: float, num_requests: int, input_len: int,
                          output_len: int) -> dict:
    """Run throughput.py's result block (the no-request_outputs branch) for these numbers."""
    code = _main_tail(tree, "throughput", "if request_outputs:")
    args = SimpleNamespace(output_json=str(path), backend="vllm")
    requests = [SimpleNamespace(prompt_len=input_len, expected_output_len=output_len, multi_modal_data=None)
                for _ in range(num_requests)]
    namespace = {"json": json, "args": args, "requests": requests, "request_outputs": None,
                 "elapsed_time": elapsed_time_s, "is_multi_modal": False, "RequestOutput": object,
                 "save_to_pytorch_benchmark_format": lambda args, results: None, "print": lambda *a, **k: None}
    exec(compile(code, "vllm/benchmarks/throughput.py", "exec"), namespace)
    return json.loads(path.read_text())
