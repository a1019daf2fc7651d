"""How a session reads: a rich table of the comparison, a PNG of every run per metric, and for serve mode a table
of each arm's medians per load point and its latency-throughput plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.bench import timeline
from workbench.bench.results import METRICS, RunResult, group
from workbench.bench.stats import Comparison, median

PLOT_MISSING = "plot skipped: matplotlib is not installed (pip install -e '.[plot]')"


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def render_table(rows: Sequence[tuple[str, Comparison]], labels: tuple[str, str] = ("baseline", "custom")):
    """A rich Table: per metric the two medians with IQR and min/max, delta %, p, CI, verdict."""
    from rich.table import Table

    table = Table(title=f"{labels[0]} vs {labels[1]} (median [IQR] (min–max) over runs)")
    for col in ("mode", "metric", labels[0], labels[1], "delta", "floor", "p (MWU)", "95% CI ratio", "verdict"):
        table.add_column(col, justify="right" if col not in ("mode", "metric", "verdict") else "left")
    for mode, c in rows:
        table.add_row(mode, f"{c.metric} ({'↑' if c.higher_is_better else '↓'} better)",
                      _fmt_arm(c.baseline_median, c.baseline_iqr, c.baseline_range, c.n_baseline),
                      _fmt_arm(c.custom_median, c.custom_iqr, c.custom_range, c.n_custom),
                      f"{c.delta_pct:+.2f}%", f"{c.floor_pct:.1f}%", f"{c.p_value:.3f}",
                      f"{c.ratio_ci[0]:.3f}–{c.ratio_ci[1]:.3f}",
                      c.verdict)
    return table


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _fmt_arm(med: float, iqr: tuple[float, float], rng: tuple[float, float], n: int) -> str:
    return f"{_fmt(med)} [{_fmt(iqr[0])}–{_fmt(iqr[1])}] ({_fmt(rng[0])}–{_fmt(rng[1])}) n={n}"


def plot_chart(records_a: Sequence[RunResult], path: Path, records_b: Sequence[RunResult] | None = None,
               arms: tuple[str, str] = ("baseline", "custom"), labels: tuple[str, str] = ("baseline", "custom"),
               title: str = "") -> Path | None:
    """PNG: per metric, every run as a dot (in execution order) and each arm's median as a bar.

    Returns None when matplotlib is missing (the table and JSON still carry every number)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    second = records_a if records_b is None else records_b
    panels = []
    for mode, metrics in METRICS.items():
        # serve: one panel per load point, its first metric only (serve.png draws the rest)
        for point in dict.fromkeys(r.point for r in records_a if r.mode == mode):
            for m in metrics[:1] if point else metrics:
                a = [r.metrics[m.key] for r in records_a
                     if r.mode == mode and r.point == point and r.arm == arms[0] and r.metrics]
                b = [r.metrics[m.key] for r in second
                     if r.mode == mode and r.point == point and r.arm == arms[1] and r.metrics]
                if a and b:
                    panels.append((group(mode, point), m, a, b))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (mode, m, a, b) in zip(axes[0], panels, strict=True):
        for x, values, color in ((0, a, "tab:gray"), (1, b, "tab:blue")):
            ax.bar(x, median(values), color=color, alpha=0.35, width=0.6)
            ax.scatter([x + (i - (len(values) - 1) / 2) * 0.06 for i in range(len(values))], values,
                       color=color, s=14, zorder=3)
        ax.set_xticks([0, 1], labels=list(labels), fontsize=8)
        ax.set_title(f"{mode}: {m.key}\n({'higher' if m.higher_is_better else 'lower'} is better)", fontsize=8)
        ax.set_ylabel(m.unit, fontsize=8)
        lo = min(min(a), min(b))
        hi = max(max(a), max(b))
        pad = (hi - lo) * 0.5 or abs(hi) * 0.05 or 1.0
        ax.set_ylim(max(0.0, lo - pad), hi + pad)  # zoomed: differences of a few % stay visible
        ax.tick_params(labelsize=7)
    return _save(fig, path, title)


SERVE_COLUMNS = (("TTFT p50", "ttft_p50_ms"), ("TTFT p99", "ttft_p99_ms"), ("TPOT p50", "tpot_p50_ms"),
                 ("TPOT p99", "tpot_p99_ms"), ("ITL p50", "itl_p50_ms"), ("ITL p99", "itl_p99_ms"),
                 ("out tok/s", "output_throughput_tok_s"))


def _save(fig, path: Path, title: str) -> Path:
    """Title, layout and the PNG (110 dpi) every bench chart shares; the figure is closed."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_serve_table(medians: dict[str, dict[str, dict[str, float]]], labels: dict[str, str]):
    """A rich Table: per load point and arm, the median over runs of TTFT/TPOT/ITL p50 and p99 (ms) and the
    output throughput."""
    from rich.table import Table

    table = Table(title="serve: median over runs per load point (latencies in ms)")
    table.add_column("point")
    table.add_column("arm")
    for title, _ in SERVE_COLUMNS:
        table.add_column(title, justify="right")
    points = list(dict.fromkeys(p for by_point in medians.values() for p in by_point))
    for point in points:
        for arm, by_point in medians.items():
            if point in by_point:
                table.add_row(point, labels.get(arm, arm), *(_fmt(by_point[point][k]) for _, k in SERVE_COLUMNS))
    return table


def plot_serve(records: Sequence[RunResult], path: Path, labels: dict[str, str], title: str = "") -> Path | None:
    """PNG: latency against output throughput, one curve per arm through its load points (the median of its runs,
    every run a faint dot), TTFT p50 and TPOT p50 side by side. None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    runs = [r for r in records if r.mode == "serve" and r.metrics]
    if not runs:
        return None
    colors = {"baseline": "tab:gray", "custom": "tab:blue"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), squeeze=False)
    for ax, key, name in ((axes[0][0], "ttft_p50_ms", "TTFT p50"), (axes[0][1], "tpot_p50_ms", "TPOT p50")):
        for arm in dict.fromkeys(r.arm for r in runs):
            mine = [r for r in runs if r.arm == arm]
            color = colors.get(arm, "tab:orange")
            ax.scatter([r.metrics["output_throughput_tok_s"] for r in mine], [r.metrics[key] for r in mine],
                       color=color, alpha=0.3, s=12)
            curve: list[tuple[float, float, str]] = []
            for point in dict.fromkeys(r.point for r in mine):
                at = [r.metrics for r in mine if r.point == point]
                curve.append((median([m["output_throughput_tok_s"] for m in at]), median([m[key] for m in at]), point))
            ax.plot([c[0] for c in curve], [c[1] for c in curve], marker="o", color=color, label=labels.get(arm, arm))
            for x, y, point in curve:
                ax.annotate(point, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
        ax.set_xlabel("output throughput (tok/s)", fontsize=8)
        ax.set_ylabel(f"{name} (ms, lower is better)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    return _save(fig, path, title)


def serve_section(medians: dict[str, Any], plot: Path | None) -> dict[str, Any]:
    """summary.json's "serve": each arm's medians per load point, and the plot's file name (None: not drawn)."""
    return {"points": list(dict.fromkeys(p for by_point in medians.values() for p in by_point)),
            "medians": medians, "plot": plot.name if plot else None}


def summary_lines(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """What a session's summary.json says beyond its table, one (rich style, plain text) pair per printed line: per
    paired mode the ratio with its interval and verdict, how the batches were admitted, each arm's timeline and the
    A/A of the same rounds; the table's prediction; the spread and the runs a 2% effect needs; the budget's cut."""
    out: list[tuple[str, str]] = []
    for mode, p in (summary.get("paired") or {}).items():
        out.append(("", f"{mode} (paired): time custom/baseline {p['time_ratio']:.4f} [{p['ci95'][0]:.4f}–"
                        f"{p['ci95'][1]:.4f}] over {p['rounds']} rounds, per round {p['round_ratios']}, floor "
                        f"{p['floor_pct']:.1f}%: {p['verdict']} (batches {p.get('admission', 'stream')})"))
        if p.get("admission_refused"):
            out.append(("yellow", f"{mode} (paired): asked for whole batches, got request-by-request arrival: "
                                  f"{p['admission_refused']}"))
        for arm, stamped in (p.get("timeline") or {}).items():
            out.append(("", f"{mode} (paired) steps, {timeline.describe(arm, stamped)}"))
        c = p.get("control")
        if c:
            out.append(("", f"{mode} (paired): A/A in the same rounds, control/baseline {c['time_ratio']:.4f} "
                            f"[{c['ci95'][0]:.4f}–{c['ci95'][1]:.4f}], per round {c['round_ratios']}: "
                            f"floor {c['aa_floor_pct']:.1f}%"))
    for mode, p in (summary.get("prediction") or {}).items():
        host = (f"; at most {p['time_ratio_with_host']:.4f} with the op's host time in its "
                f"{p['routed_calls_outside_graphs']} calls outside CUDA graphs, {p['host_s'] * 1e3:.2f} ms, where the "
                "host bounds the step" if p.get("host_s") is not None else "")
        by = p.get("winners_priced_by") or {}
        tuned = (f"; {by['tune']} of its {by['tune'] + by.get('bench', 0)} winners priced at the tune's timing, "
                 "which runs high (no bench confirmed them)" if by.get("tune") else "")
        out.append(("", f"{mode}: the dispatch table predicts time custom/baseline {p['time_ratio']:.4f} (it saves "
                        f"{p['saved_s'] * 1e3:.2f} ms of GEMM per generate; GEMMs take {p['gemm_share']:.0%} of the "
                        f"baseline's {p['baseline_s']:.3f} s at cuBLAS's table timings{host}{tuned})"))
    for mode, s in summary.get("spread", {}).items():
        cv = s.get("pooled_between_runs_cv_pct")
        arms = (s.get("baseline", {}), s.get("custom", {}))
        within = [w for a in arms if (w := a.get("within_run_cv_pct")) is not None]
        if cv is not None:
            out.append(("", f"{mode}: runs vary by {cv:.1f}% (CV between runs)"
                            + (f", iterations within a run by {max(within):.1f}%" if within else "")
                            + f": a 2% effect needs ~{s.get('runs_per_arm_for_2pct')} runs per arm"))
    budget = summary.get("budget")
    if budget:
        out.append(("yellow", f"--budget-min {budget['minutes']:g}: {budget['runs_not_started']} planned run(s) not "
                              "started (they would have ended past it); judged on the finished ones"))
    return out
