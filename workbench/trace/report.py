"""Rich tables for the three trace kinds. Each function prints from records (fresh or loaded from JSON)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.table import Table

from workbench.trace.records import GroupStat, KernelStat, LayerInfo, ModuleCall, ModuleStat, OperatorCount


def _shape(s: object) -> str:
    if s is None or s == [] or s == {}:
        return "-"
    if isinstance(s, list) and all(isinstance(x, int) for x in s):
        return "[" + ", ".join(map(str, s)) + "]"
    if isinstance(s, list):
        parts = [_shape(x) for x in s]
        parts = [p for p in parts if p != "-"] or ["-"]
        return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"
    if isinstance(s, dict):
        parts = [f"{k}={_shape(v)}" for k, v in s.items() if v is not None]
        return ", ".join(parts) or "-"
    return str(s)


def _table(title: str) -> Table:
    # Wide enough for its title: a narrow table would otherwise wrap the title over several lines.
    return Table(title=title, title_justify="left", min_width=min(len(title) + 2, 160))


def _trim(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def print_counts(console: Console, counts: dict[str, int], title: str) -> None:
    table = _table(title)
    table.add_column("module type")
    table.add_column("calls", justify="right")
    for k, v in sorted(counts.items(), key=lambda kv: -kv[1]):
        table.add_row(k, str(v))
    console.print(table)


def print_name_counts(console: Console, counts: dict[str, int], steps: int) -> None:
    """Per-module (path) call counts, folded: how many modules were called how often (all are in the JSON)."""
    by_count: dict[int, list[str]] = {}
    for name, n in counts.items():
        by_count.setdefault(n, []).append(name or "<root>")
    table = _table(f"Calls per module path ({len(counts)} modules, {steps} steps; every path is in the JSON)")
    table.add_column("calls", justify="right")
    table.add_column("modules", justify="right")
    table.add_column("e.g.")
    for n, names in sorted(by_count.items(), key=lambda kv: -kv[0]):
        table.add_row(str(n), str(len(names)), _trim(", ".join(names[:3]), 90))
    console.print(table)


def print_operator_summary(console: Console, ops: Sequence[OperatorCount], layers: LayerInfo | None,
                           steps: int) -> None:
    n = layers.count if layers else 0
    title = f"Per-step operator counts (derived from the trace: {steps} step(s), layers = {n})"
    table = _table(title)
    table.add_column("module type")
    table.add_column("per step", justify="right")
    table.add_column("as layers", justify="left")
    for o in ops:
        per_step = str(int(o.per_step)) if float(o.per_step).is_integer() else f"{o.per_step:.2f}"
        table.add_row(o.type, per_step, o.formula)
    console.print(table)


def print_call_order(console: Console, calls: Sequence[ModuleCall], title: str, base_depth: int | None = None) -> None:
    table = _table(title)
    table.add_column("#", justify="right")
    table.add_column("module")
    table.add_column("type")
    table.add_column("input shapes")
    table.add_column("output shapes")
    table.add_column("cpu µs", justify="right")
    if not calls:
        console.print(f"[yellow]{title}: no calls recorded[/]")
        return
    d0 = min(c.depth for c in calls) if base_depth is None else base_depth
    for c in calls:
        inputs = _shape(c.input_shapes)
        kw = _shape(c.kwarg_shapes) if c.kwarg_shapes else ""
        if kw and kw != "-":
            inputs = f"{inputs}; {kw}" if inputs != "-" else kw
        table.add_row(str(c.index), "  " * (c.depth - d0) + (c.name or "<root>"), c.type, _trim(inputs, 60),
                      _trim(_shape(c.output_shapes), 40), f"{c.cpu_time_us:.1f}")
    console.print(table)


def _trim_left(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def print_module_records(console: Console, calls: Sequence[ModuleCall], title: str, limit: int) -> None:
    has_cuda = any(c.cuda_time_us is not None for c in calls)
    table = _table(title)
    cols = [("#", "right"), ("step", "right"), ("module", "left"), ("type", "left"), ("called from", "left"),
            ("in", "left"), ("out", "left"), ("cpu µs", "right"), ("self µs", "right")]
    for col, just in cols + ([("cuda µs", "right")] if has_cuda else []):
        table.add_column(col, justify=just, no_wrap=col in ("called from", "module"))  # type: ignore[arg-type]
    for c in calls[:limit]:
        row = [str(c.index), str(c.step), c.name or "<root>", c.type, _trim_left(c.stack, 40),
               _trim(_shape(c.input_shapes), 30), _trim(_shape(c.output_shapes), 30),
               f"{c.cpu_time_us:.1f}", f"{c.self_cpu_time_us:.1f}"]
        if has_cuda:
            row.append("-" if c.cuda_time_us is None else f"{c.cuda_time_us:.1f}")
        table.add_row(*row)
    console.print(table)
    if len(calls) > limit:
        console.print(f"… {len(calls) - limit} more calls in the JSON file")


def print_module_stats(console: Console, rows: Sequence[ModuleStat], title: str, top: int) -> None:
    table = _table(title)
    for col in ("key", "calls", "total cpu µs", "self cpu µs", "mean µs", "min µs", "max µs", "total cuda µs"):
        table.add_column(col, justify="left" if col == "key" else "right")
    for s in rows[:top]:
        table.add_row(s.key or "<root>", str(s.calls), f"{s.total_cpu_time_us:.1f}", f"{s.self_cpu_time_us:.1f}",
                      f"{s.mean_cpu_time_us:.1f}", f"{s.min_cpu_time_us:.1f}", f"{s.max_cpu_time_us:.1f}",
                      "-" if s.total_cuda_time_us is None else f"{s.total_cuda_time_us:.1f}")
    console.print(table)


def _display_name(r: KernelStat) -> str:
    """The qualified name with its template arguments, without return type and parameter list
    (``vllm::rms_norm_kernel<c10::BFloat16, 8, 2>``): instantiations stay apart, the row stays short."""
    if r.device != "cuda" or r.short_name == r.name:
        return r.name
    from workbench.trace.kernel_names import split_kernel_name

    _, _, targs = split_kernel_name(r.name)
    return f"{r.short_name}<{targs}>" if targs else r.short_name


def print_kernel_table(console: Console, rows: Sequence[KernelStat], title: str, top: int, width: int = 70) -> None:
    table = _table(title)
    for col in ("kernel", "calls", "total µs", "avg µs", "%", "category", "origin", "source"):
        table.add_column(col, justify="right" if col in ("calls", "total µs", "avg µs", "%") else "left")
    for r in rows[:top]:
        src = r.source_file or ("(library)" if r.origin not in ("unknown",) else "unknown")
        if r.source_file and r.source_line:
            src = f"{r.source_file}:{r.source_line}"
        table.add_row(_trim(_display_name(r), width), str(r.calls), f"{r.total_time_us:.1f}", f"{r.avg_time_us:.2f}",
                      f"{r.percent:.1f}", r.category, r.origin, src)
    console.print(table)
    if len(rows) > top:
        console.print(f"… {len(rows) - top} more kernels in the JSON file")


def print_groups(console: Console, groups: Iterable[GroupStat], title: str) -> None:
    table = _table(title)
    for col in ("category", "origin", "kernels", "calls", "total µs", "%"):
        table.add_column(col, justify="left" if col in ("category", "origin") else "right")
    for g in groups:
        table.add_row(g.category, g.origin, str(g.kernels), str(g.calls), f"{g.total_time_us:.1f}", f"{g.percent:.1f}")
    console.print(table)
