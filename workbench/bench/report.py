"""How a session reads: a rich table of the comparison and a PNG of every run per metric."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from workbench.bench.results import METRICS, RunResult
from workbench.bench.stats import Comparison, median


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
        for m in metrics:
            a = [r.metrics[m.key] for r in records_a if r.mode == mode and r.arm == arms[0] and r.metrics]
            b = [r.metrics[m.key] for r in second if r.mode == mode and r.arm == arms[1] and r.metrics]
            if a and b:
                panels.append((mode, m, a, b))
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
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
