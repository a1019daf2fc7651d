"""Plot a GEMM benchmark JSON: per shape, TFLOP/s vs M and ratio vs cuBLAS vs M (one PNG)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def plot_results(json_path: str | Path, png_path: str | Path | None = None) -> Path:
    """Draw the figure next to the JSON (same stem, .png) unless ``png_path`` is given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(Path(json_path).read_text())
    rows = [r for r in data["rows"] if r["valid"]]
    shapes = sorted({(r["n"], r["k"]) for r in rows}, key=lambda s: s[0] * s[1])
    variants = ["cublas", "dispatch", "triton", "cublaslt"]
    colors = {"cublas": "tab:gray", "dispatch": "tab:blue", "triton": "tab:orange", "cublaslt": "tab:green"}
    fig, axes = plt.subplots(len(shapes), 2, figsize=(12, 2.4 * len(shapes)), squeeze=False)
    for i, (n, k) in enumerate(shapes):
        layers = next(r["layers"] for r in rows if (r["n"], r["k"]) == (n, k))
        for variant in variants:
            pts = sorted((r["m"], r["tflops"], r["ratio_vs_cublas"]) for r in rows
                         if (r["n"], r["k"], r["variant"]) == (n, k, variant))
            if not pts:
                continue
            ms, tf, ratio = zip(*pts, strict=False)
            axes[i][0].plot(ms, tf, marker=".", label=variant, color=colors[variant])
            if variant != "cublas":
                axes[i][1].plot(ms, ratio, marker=".", label=variant, color=colors[variant])
        axes[i][0].set_title(f"N={n} K={k} ({layers[:60]})", fontsize=8)
        axes[i][0].set_ylabel("TFLOP/s")
        axes[i][1].axhline(1.0, color="grey", linewidth=0.8)
        axes[i][1].set_ylabel("x cuBLAS")
        for ax in axes[i]:
            ax.set_xscale("log", base=2)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    axes[0][1].legend(fontsize=7)
    axes[-1][0].set_xlabel("M (tokens)")
    axes[-1][1].set_xlabel("M (tokens)")
    env = data["env"]
    if isinstance(env["torch"], dict):
        t = env["torch"]
        fig.suptitle(f"{t['device']} · torch {t['version']} · triton {t['triton']} · {env['time_utc']}", fontsize=9)
    else:  # results written before the names matched the workbench's environment capture
        fig.suptitle(f"{env['gpu']} · torch {env['torch']} · triton {env['triton']} · {env.get('created', '')}",
                     fontsize=9)
    fig.tight_layout()
    out = Path(png_path) if png_path else Path(json_path).with_suffix(".png")
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(plot_results(*sys.argv[1:]))
