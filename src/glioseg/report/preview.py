"""Preview PNGs: three orthogonal slices through the tumour for each modality, labels overlaid.

Volumes are reoriented to RAS+ for display only (files are never changed) and shown
in neurological convention: patient's right on the image's right, anterior up on axial
slices, superior up on coronal and sagittal slices.  Every panel carries orientation markers
(R/L, A/P) and the figure states the convention, because radiologists usually read the
opposite (radiological) one.  The three planes cross at the centre of the largest tumour core
lesion (or of the largest whole-tumour lesion), so that a multifocal tumour is not cut between
its lesions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import cc3d  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from glioseg.data.io import atomic_path  # noqa: E402
from glioseg.data.labels import LABEL_COLOURS, LABEL_NAMES, region_mask  # noqa: E402
from glioseg.data.modalities import MODALITIES  # noqa: E402
from glioseg.evaluate.components import CONNECTIVITY  # noqa: E402

_PLANES = ("axial", "coronal", "sagittal")
#: Orientation markers (left edge, right edge) of each plane as displayed (RAS+, origin lower).
MARKERS = {"axial": ("L", "R"), "coronal": ("L", "R"), "sagittal": ("P", "A")}
CONVENTION = "neurological convention: patient's right (R) on the image's right"


def _label_cmap() -> ListedColormap:
    colours = [(0, 0, 0, 0)] + [(*LABEL_COLOURS[k], 1.0) for k in sorted(LABEL_COLOURS)]
    return ListedColormap(colours)


def to_ras(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorder/flip the last three axes of ``volume`` so that they run R, A, S (display only)."""
    ornt = nib.orientations.io_orientation(affine)
    if volume.ndim == 3:
        return nib.orientations.apply_orientation(volume, ornt)
    return np.stack([nib.orientations.apply_orientation(v, ornt) for v in volume])


def tumour_centre(labels: np.ndarray | None, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Voxel at the centre of the largest 26-connected tumour-core lesion (else whole-tumour lesion,
    else the volume centre); the lesion voxel nearest its centre of mass, so a curved lesion's
    centre is still inside it.

    >>> lab = np.zeros((20, 10, 10), np.uint8); lab[1:3, 1:3, 1:3] = 1; lab[10:16, 4:8, 4:8] = 3
    >>> tumour_centre(lab, lab.shape)  # the larger lesion, not the mean of both
    (12, 5, 5)
    """
    if labels is not None:
        for region in ("TC", "WT"):
            mask = region_mask(labels, region)
            if not mask.any():
                continue
            components = cc3d.connected_components(mask, connectivity=CONNECTIVITY)
            largest = np.argmax(np.bincount(components.ravel())[1:]) + 1
            voxels = np.argwhere(components == largest)
            nearest = voxels[np.argmin(((voxels - voxels.mean(axis=0)) ** 2).sum(axis=1))]
            return tuple(int(v) for v in nearest)
    return tuple(s // 2 for s in shape)


def _slice(volume: np.ndarray, plane: str, centre: Sequence[int]) -> np.ndarray:
    if plane == "axial":
        return volume[:, :, centre[2]].T
    if plane == "coronal":
        return volume[:, centre[1], :].T
    return volume[centre[0], :, :].T


def _grey(ax, image: np.ndarray, vmax: float, aspect: float) -> None:
    """One grey-scale panel (0..vmax, origin lower, physical aspect ratio)."""
    ax.imshow(image, cmap="gray", vmin=0, vmax=vmax, origin="lower", aspect=aspect)


def _markers(ax, plane: str) -> None:
    """The orientation letters of ``plane`` on the panel's left and right edges."""
    for x, text in zip((0.02, 0.98), MARKERS[plane], strict=True):
        ax.text(x, 0.5, text, transform=ax.transAxes, color="white", fontsize=8, fontweight="bold",
                ha="left" if x < 0.5 else "right", va="center")  # fmt: skip


def render_preview(
    image: np.ndarray,
    affine: np.ndarray,
    out_png: str | Path,
    labels: np.ndarray | None = None,
    title: str = "",
    compare_labels: np.ndarray | None = None,
    compare_title: str = "prediction",
    spacing: Sequence[float] | None = None,
) -> Path:
    """Write a preview PNG.

    Parameters
    ----------
    image : ndarray, shape (4, X, Y, Z)
        Modalities in the order ``t1n, t1c, t2w, t2f``.
    affine : (4, 4) array
        Voxel -> world of ``image`` (used to show anatomical planes).
    out_png : path-like
    labels : ndarray (X, Y, Z), optional
        Canonical labels overlaid on every panel (NETC red, SNFH green, ET yellow).
    compare_labels : ndarray (X, Y, Z), optional
        A second segmentation (e.g. a prediction) shown in an extra row on t2f/t1c.
    spacing : three floats, optional
        Voxel size, for the aspect ratio (default: from ``affine``).

    Returns
    -------
    Path of the PNG (written atomically).
    """
    img = to_ras(np.asarray(image), affine)
    lab = to_ras(np.asarray(labels), affine) if labels is not None else None
    cmp_ = to_ras(np.asarray(compare_labels), affine) if compare_labels is not None else None
    if spacing is None:
        spacing = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
        ornt = nib.orientations.io_orientation(affine)
        spacing = [spacing[int(ax)] for ax in np.argsort(ornt[:, 0])]
    centre = tumour_centre(lab if lab is not None else cmp_, img.shape[1:])
    aspect = {
        "axial": spacing[1] / spacing[0],
        "coronal": spacing[2] / spacing[0],
        "sagittal": spacing[2] / spacing[1],
    }
    rows = [(MODALITIES[i], img[i], lab) for i in range(len(MODALITIES))]
    if cmp_ is not None:
        rows.append((f"t2f + {compare_title}", img[MODALITIES.index("t2f")], cmp_))
    cmap = _label_cmap()
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 2.9 * len(rows)), facecolor="black")
    axes = np.atleast_2d(axes)
    for r, (name, vol, overlay) in enumerate(rows):
        brain = vol[vol > 0]
        vmax = float(np.percentile(brain, 99.5)) if brain.size else 1.0
        for c, plane in enumerate(_PLANES):
            ax = axes[r, c]
            _grey(ax, _slice(vol, plane, centre), vmax, aspect[plane])
            if overlay is not None:
                sl = _slice(overlay, plane, centre).astype(np.int16)
                ax.imshow(
                    np.ma.masked_equal(sl, 0),
                    cmap=cmap,
                    vmin=-0.5,
                    vmax=3.5,
                    alpha=0.45,
                    origin="lower",
                    aspect=aspect[plane],
                    interpolation="nearest",
                )
            ax.set_xticks([])
            ax.set_yticks([])
            _markers(ax, plane)
            if r == 0:
                ax.set_title(plane, color="white", fontsize=10)
            if c == 0:
                ax.set_ylabel(name, color="white", fontsize=10)
    handles = [
        matplotlib.patches.Patch(color=LABEL_COLOURS[k], label=LABEL_NAMES[k]) for k in sorted(LABEL_COLOURS)
    ]
    handles.append(matplotlib.patches.Patch(color="black", label=CONVENTION))
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, labelcolor="white", fontsize=9)
    if title:
        fig.suptitle(title, color="white", fontsize=11)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, facecolor="black", format="png")
    plt.close(fig)
    return Path(out_png)


def render_before_after(
    before: np.ndarray,
    after: np.ndarray,
    affine: np.ndarray,
    out_png: str | Path,
    labels: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """Write a PNG comparing two versions of a case (e.g. ``glioseg degrade``'s source and copy).

    Rows are the modalities; columns are the axial and coronal slices through the tumour,
    before and after, each pair on the same grey scale (the source's 99.5th percentile), so
    that contrast and bias changes are visible.  Labels, when given, are outlined on the
    ``before`` panels only, to keep the degraded image readable.

    Parameters
    ----------
    before, after : ndarray, shape (4, X, Y, Z), same grid
    affine : (4, 4) voxel -> world of both
    out_png : path-like (written atomically)
    labels : ndarray (X, Y, Z), optional, canonical labels (choose the slices)
    """
    if before.shape != after.shape:
        raise ValueError(f"before {before.shape} and after {after.shape} differ")
    old, new = to_ras(np.asarray(before), affine), to_ras(np.asarray(after), affine)
    lab = to_ras(np.asarray(labels), affine) if labels is not None else None
    centre = tumour_centre(lab, old.shape[1:])
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    ornt = nib.orientations.io_orientation(affine)
    spacing = [zooms[int(ax)] for ax in np.argsort(ornt[:, 0])]
    aspect = {"axial": spacing[1] / spacing[0], "coronal": spacing[2] / spacing[0]}
    columns = [(p, when) for p in ("axial", "coronal") for when in ("before", "after")]
    fig, axes = plt.subplots(len(MODALITIES), 4, figsize=(11, 2.9 * len(MODALITIES)), facecolor="black")
    for r, name in enumerate(MODALITIES):
        brain = old[r][old[r] > 0]
        vmax = float(np.percentile(brain, 99.5)) if brain.size else 1.0
        for c, (plane, when) in enumerate(columns):
            ax = axes[r, c]
            vol = old[r] if when == "before" else new[r]
            _grey(ax, _slice(vol, plane, centre), vmax, aspect[plane])
            if lab is not None and when == "before":
                ax.contour(
                    _slice(region_mask(lab, "WT"), plane, centre), levels=[0.5], colors="lime", linewidths=0.6
                )
            ax.set_xticks([])
            ax.set_yticks([])
            _markers(ax, plane)
            if r == 0:
                ax.set_title(f"{plane}, {when}", color="white", fontsize=10)
            if c == 0:
                ax.set_ylabel(name, color="white", fontsize=10)
    fig.text(0.5, 0.01, f"{CONVENTION}; green: whole-tumour outline", color="white", ha="center", fontsize=9)
    if title:
        fig.suptitle(title, color="white", fontsize=11)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80, facecolor="black", format="png")
    plt.close(fig)
    return Path(out_png)
