"""Quality-control pictures of each prepare step (PNG, one row of panels each).

Every panel is shown in neurological convention (patient's right on the image's right, anterior
up on axial slices), reoriented for display only with nibabel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glioseg.data.io import atomic_path


@dataclass
class Panel:
    """One picture: a title, a 2-D slice (rows, columns) and, optionally, a mask whose outline is drawn."""

    title: str
    image: np.ndarray
    outline: np.ndarray | None = None


def axial(volume: np.ndarray, affine: np.ndarray, z: float | None = None) -> np.ndarray:
    """An axial slice (rows run posterior to anterior, so anterior is up with ``origin='lower'``;
    columns run patient left to right, so the patient's right is on the image's right) at fraction ``z`` of the height (default: middle)."""
    import nibabel as nib

    ras = nib.orientations.apply_orientation(volume, nib.orientations.io_orientation(affine))
    index = int(round((ras.shape[2] - 1) * (0.5 if z is None else z)))
    return ras[:, :, index].T  # rows: A/P (display with origin lower), columns: L..R


def checkerboard(a: np.ndarray, b: np.ndarray, tiles: int = 8) -> np.ndarray:
    """Alternate tiles of two slices of one shape (each scaled to its own 1-99 percentile range)."""
    a, b = _scaled(a), _scaled(b)
    rows, cols = np.indices(a.shape)
    board = ((rows * tiles // a.shape[0]) + (cols * tiles // a.shape[1])) % 2 == 0
    return np.where(board, a, b)


def _scaled(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    nonzero = x[x > 0]
    lo, hi = np.percentile(nonzero, [1, 99]) if nonzero.size else (0.0, 1.0)
    return np.clip((x - lo) / max(float(hi - lo), 1e-6), 0, 1)


def save_row(path: Path, title: str, panels: Sequence[Panel], dpi: int = 72) -> Path:
    """Write ``panels`` side by side under ``title`` as a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        ax.imshow(_scaled(panel.image), cmap="gray", origin="lower", vmin=0, vmax=1, interpolation="nearest")
        if panel.outline is not None and panel.outline.any():
            ax.contour(
                panel.outline.astype(float), levels=[0.5], colors="red", linewidths=0.8, origin="lower"
            )
        ax.set_title(panel.title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.02, 0.5, "L", transform=ax.transAxes, color="yellow", fontsize=7, va="center")
        ax.text(0.95, 0.5, "R", transform=ax.transAxes, color="yellow", fontsize=7, va="center")
    fig.suptitle(f"{title} (neurological: patient's right on the right)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return path
