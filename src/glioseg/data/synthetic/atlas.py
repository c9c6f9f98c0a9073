"""The anatomical atlas the generator deforms: nilearn's MNI152 (ICBM 2009a) templates.

nilearn ships the 1 mm MNI152 T1 template with grey- and white-matter probability
maps inside its wheel, so no download is needed.  They are loaded once and cached
(as float32 ``.npy`` files in ``$GLIOSEG_CACHE`` or ``~/.cache/glioseg``) because
importing ``nilearn.datasets`` and decompressing the maps costs about three seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from glioseg.data.io import atomic_path
from glioseg.paths import cache_dir

_CACHE_VERSION = "mni152-2009a-v1"
#: Atlas channels, in the order of :attr:`Atlas.channels`.
CHANNELS = ("t1", "gm", "wm", "csf", "brain")


@dataclass(frozen=True)
class Atlas:
    """Tissue maps on the MNI152 1 mm grid.

    Attributes
    ----------
    channels : ndarray, float32, shape (5, 197, 233, 189)
        T1 template (scaled so that median white matter = 1), grey-matter, white-matter
        and CSF probabilities, and a soft brain mask, all in [0, 1] except the T1.
    affine : ndarray, shape (4, 4)
        Voxel -> MNI world (mm, RAS+).
    brain_centre : ndarray, shape (3,)
        Centroid of the brain mask in world mm.
    """

    channels: np.ndarray
    affine: np.ndarray
    brain_centre: np.ndarray


def _build_from_nilearn() -> tuple[np.ndarray, np.ndarray]:
    from nilearn import datasets  # slow import, only on a cold cache

    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1)
    wm = datasets.load_mni152_wm_template(resolution=1)
    brain = datasets.load_mni152_brain_mask(resolution=1)
    t1d = np.asarray(t1.get_fdata(), dtype=np.float32)
    gmd = np.clip(np.asarray(gm.get_fdata(), dtype=np.float32), 0, 1)
    wmd = np.clip(np.asarray(wm.get_fdata(), dtype=np.float32), 0, 1)
    maskd = (np.asarray(brain.get_fdata()) > 0).astype(np.float32)
    # Tissue inside the mask that is neither GM nor WM is CSF (ventricles, sulci).
    csf = np.clip(maskd - gmd - wmd, 0, 1)
    total = gmd + wmd + csf
    scale = np.where(total > 1, 1.0 / np.maximum(total, 1e-6), 1.0).astype(np.float32)
    gmd, wmd, csf = gmd * scale * maskd, wmd * scale * maskd, csf * scale * maskd
    wm_core = (wmd > 0.9) & (maskd > 0)
    t1n = t1d / float(np.median(t1d[wm_core]))
    channels = np.stack([t1n * maskd, gmd, wmd, csf, maskd]).astype(np.float32)
    return channels, np.asarray(t1.affine, dtype=np.float64)


@lru_cache(maxsize=1)
def load_atlas() -> Atlas:
    """Return the atlas, building the cache from nilearn's files on first use."""
    folder = cache_dir() / _CACHE_VERSION
    chan_file, aff_file = folder / "channels.npy", folder / "affine.npy"
    channels = affine = None
    if chan_file.exists() and aff_file.exists():
        try:
            channels = np.load(chan_file, allow_pickle=False)
            affine = np.load(aff_file, allow_pickle=False)
            if channels.shape[0] != len(CHANNELS):
                channels = None
        except (OSError, ValueError):
            channels = None
    if channels is None or affine is None:
        channels, affine = _build_from_nilearn()
        try:
            for path, arr in ((chan_file, channels), (aff_file, affine)):
                with atomic_path(path, suffix=".npy") as tmp:
                    np.save(tmp, arr, allow_pickle=False)
        except OSError:
            pass  # a read-only home is fine: we simply rebuild next time
    brain = channels[CHANNELS.index("brain")] > 0.5
    idx = np.argwhere(brain).mean(axis=0)
    centre = affine[:3, :3] @ idx + affine[:3, 3]
    return Atlas(channels=channels, affine=affine, brain_centre=centre)
