"""PNG of how balanced cross-validation folds are: cluster mix, tumour volume and image quality per fold."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from glioseg.data.io import atomic_path  # noqa: E402


def render_balance(
    per_case,
    out_png: str | Path,
    title: str = "",
    volume_column: str = "shape_wt_volume_ml",
    quality_column: str = "quality_snr",
) -> Path:
    """Write a three-panel PNG: validation cluster counts per fold (stacked bars), WT volume and SNR per fold.

    Parameters
    ----------
    per_case : pandas.DataFrame
        One row per case with columns ``fold`` (validation fold), ``cluster``, and
        optionally ``volume_column`` and ``quality_column`` (panels without data say so).
    out_png : path
        Written atomically.
    title : str
        Figure title (e.g. the strategy and balance statistics).

    Returns
    -------
    Path of the PNG.
    """
    folds = sorted(int(f) for f in per_case["fold"].unique())
    clusters = sorted(int(c) for c in per_case["cluster"].unique())
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), constrained_layout=True)
    cmap = plt.get_cmap("tab10")
    bottom = np.zeros(len(folds))
    for c in clusters:
        counts = np.array([int(((per_case["fold"] == f) & (per_case["cluster"] == c)).sum()) for f in folds])
        axes[0].bar(folds, counts, bottom=bottom, color=cmap(c % 10), label=f"cluster {c}")
        bottom += counts
    axes[0].set_xticks(folds)
    axes[0].set_xlabel("validation fold")
    axes[0].set_ylabel("cases")
    axes[0].set_title("clusters per validation set")
    axes[0].set_ylim(0, max(bottom.max(), 1) * 1.35)
    axes[0].legend(fontsize=8, loc="upper center", ncol=min(len(clusters), 4))
    for ax, column, label, log in (
        (axes[1], volume_column, "whole-tumour volume (mL)", True),
        (axes[2], quality_column, "image quality: median SNR over modalities", False),
    ):
        if column not in per_case or not np.isfinite(per_case[column].to_numpy(dtype=float)).any():
            ax.text(0.5, 0.5, f"no {column} column", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        data = []
        for f in folds:
            values = per_case.loc[per_case["fold"] == f, column].to_numpy(dtype=float)
            data.append(values[np.isfinite(values)])
        ax.boxplot(data, positions=folds, widths=0.6)
        for f, values in zip(folds, data, strict=True):
            jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(len(values))
            ax.plot(f + jitter, values, "o", ms=3, alpha=0.6, color="tab:blue")
        if log and all(len(v) and v.min() > 0 for v in data):
            ax.set_yscale("log")
        ax.set_xticks(folds)
        ax.set_xlabel("validation fold")
        ax.set_title(label)
    if title:
        fig.suptitle(title)
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(out_png)
