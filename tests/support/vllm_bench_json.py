"""Write `vllm bench` result JSON with vLLM's own code, fed with chosen numbers instead of a GPU run.

The tail of ``main()`` in the real vllm/benchmarks/latency.py and throughput.py (from the point
where the measurements exist to the json.dump) is taken from the sdist with ``ast`` and executed,
so the fixture has exactly the keys and value shapes that release writes — no hand-written copy.
`vllm bench serve` likewise: its metric code, the tail of benchmark() and of main_async(), on the
request outputs a client measured (the stand-in's, against the stand-in server).
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


def _serve_parts(tree: Path) -> tuple[ast.Module, ast.Module, ast.Module]:
    """From the release's vllm/benchmarks/serve.py: (the metric classes and functions the result code calls,
    the tail of benchmark() from calculate_metrics to the printed summary, the tail of main_async() from the
    result document to the saved file), returns dropped."""
    module = ast.parse((tree / "vllm" / "benchmarks" / "serve.py").read_text())
    wanted = {"TaskType", "BenchmarkMetrics", "EmbedBenchmarkMetrics", "calculate_metrics",
              "calculate_metrics_for_embeddings", "compute_result_filename", "_get_server_metrics_results"}
    defs = [n for n in module.body if isinstance(n, ast.ClassDef | ast.FunctionDef) and n.name in wanted]

    def body(name: str, first: str, stop: str | None) -> ast.Module:
        fn = next(n for n in module.body if isinstance(n, ast.AsyncFunctionDef) and n.name == name)
        start = next(i for i, s in enumerate(fn.body) if ast.unparse(s).startswith(first))
        end = next((i for i, s in enumerate(fn.body) if i > start and stop and ast.unparse(s).startswith(stop)),
                   len(fn.body))
        return ast.Module(body=[s for s in fn.body[start:end] if not isinstance(s, ast.Return)], type_ignores=[])

    return (ast.Module(body=defs, type_ignores=[]),
            body("benchmark", "if task_type == TaskType.GENERATION:\n    metrics, actual_output_lens", "if profile:"),
            body("main_async", "result_json: dict[str, Any] = {}", None))


def _request_output_class(tree: Path, namespace: dict) -> type:
    """The release's own RequestFuncOutput dataclass (vllm/benchmarks/lib/endpoint_request_func.py)."""
    module = ast.parse((tree / "vllm" / "benchmarks" / "lib" / "endpoint_request_func.py").read_text())
    cls = next(n for n in module.body if isinstance(n, ast.ClassDef) and n.name == "RequestFuncOutput")
    exec(compile(ast.Module(body=[cls], type_ignores=[]), "endpoint_request_func.py", "exec"), namespace)
    return namespace["RequestFuncOutput"]


def write_serve_json(tree: Path, outputs: list[dict], duration_s: float, args: SimpleNamespace,
                     tokenizer: object) -> dict:
    """Run `vllm bench serve`'s own result code (calculate_metrics, the result dict, the saved document) on these
    request outputs (fields of the release's RequestFuncOutput: success, output_tokens, prompt_len, latency,
    ttft, itl, start_time, error, generated_text; the ones it lacks are dropped); ``args`` as the CLI parsed
    them (with --save-result: the document goes to the file it names). Returns the document."""
    import math
    import os
    import warnings
    from dataclasses import dataclass, field
    from datetime import datetime
    from enum import Enum
    from typing import Any

    defs, bench_tail, main_tail = _serve_parts(tree)
    namespace: dict = {"np": np, "json": json, "os": os, "math": math, "warnings": warnings, "dataclass": dataclass,
                       "field": field, "datetime": datetime, "Enum": Enum, "Any": Any, "Path": Path,
                       "MILLISECONDS_TO_SECONDS_CONVERSION": 1000, "TERM_PLOTLIB_AVAILABLE": False,
                       "print": lambda *a, **k: None}
    exec(compile(defs, "vllm/benchmarks/serve.py", "exec"), namespace)
    output_class = _request_output_class(tree, namespace)
    known = set(output_class.__dataclass_fields__)
    outputs = [output_class(**{k: v for k, v in o.items() if k in known}) for o in outputs]
    percentiles = [float(p) for p in args.metric_percentiles.split(",")]
    namespace.update(
        task_type=namespace["TaskType"].GENERATION, outputs=outputs,
        input_requests=[SimpleNamespace(prompt_len=o.prompt_len, expected_output_len=o.output_tokens) for o in outputs],
        benchmark_duration=duration_s, tokenizer=tokenizer, selected_percentiles=percentiles,
        selected_percentile_metrics=args.percentile_metrics.split(","), goodput_config_dict={},
        max_concurrency=args.max_concurrency, request_rate=args.request_rate, rps_change_events=[],
        spec_decode_stats=None, diffusion_stats=None, probe_task=None, profile=False)
    exec(compile(bench_tail, "vllm/benchmarks/serve.py", "exec"), namespace)
    namespace.update(benchmark_result=namespace["result"], label=args.label, model_id=args.model,
                     tokenizer_id=args.tokenizer or args.model,
                     save_to_pytorch_benchmark_format=lambda args, results, file_name: None)
    namespace["args"] = args
    exec(compile(main_tail, "vllm/benchmarks/serve.py", "exec"), namespace)
    return namespace["result_json"]
