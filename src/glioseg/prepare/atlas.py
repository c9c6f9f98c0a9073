"""Optional atlas space: MNI152 (ICBM 2009a, shipped in nilearn's wheel) on a BraTS-shaped grid.

BraTS cases lie in the SRI24 atlas space (Rohlfing et al. 2010: 24 older adults, 1 mm, 240 x 240
x 155, LPS). glioseg cannot ship SRI24 (it is not on a package registry), so ``--atlas mni152``
registers the skull-stripped t1n affinely (12 parameters, mutual information) to nilearn's MNI152
2009a brain and writes the case on a 240 x 240 x 155, 1 mm, LPS grid centred on the MNI152 brain
(MNI z from -72 to +82 mm covers the template's brain mask exactly). MNI152 and SRI24 differ: the
MNI152 brain is larger (young adults, averaged after affine scaling), its origin is the anterior
commissure but the axes are not SRI24's, so a brain in this space is a few millimetres to a few
percent off where a BraTS model saw brains. The models crop to the brain and work on any grid, so
``--atlas none`` (the subject's own space, rigidly aligned to t1c) is the default; docs/prepare.md
says what the atlas changes.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from glioseg.prepare.register import Grid, mutual_information_method, optimiser_record, to_sitk

#: The prepared grid in atlas space (LPS, 1 mm): origin of voxel 0 in LPS mm.
MNI_GRID = Grid((240, 240, 155), (1.0, 1.0, 1.0), (-120.0, -102.0, -72.0))


@lru_cache(maxsize=1)
def mni152_brain() -> tuple[np.ndarray, np.ndarray]:
    """nilearn's 1 mm MNI152 2009a T1 template times its brain mask: ``(array (197, 233, 189), RAS affine)``."""
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=1)
    mask = datasets.load_mni152_brain_mask(resolution=1)
    data = np.asarray(template.get_fdata(), dtype=np.float32) * (np.asarray(mask.get_fdata()) > 0)
    return data, np.asarray(template.affine, dtype=np.float64)


def register_to_mni(brain, seed: int = 1):
    """Affine transform from MNI152 points to the points of ``brain`` (a skull-stripped SimpleITK image).

    Initialised by the centres of mass; Mattes mutual information, two levels (4 and 2 mm),
    15% random samples with a fixed seed. Returns ``(transform, info)``.
    """
    import SimpleITK as sitk

    data, affine = mni152_brain()
    fixed = to_sitk(data, affine)
    moving = sitk.Cast(brain, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    method = mutual_information_method(seed, shrink_factors=(4, 2))
    method.SetInitialTransform(initial, inPlace=False)
    result = method.Execute(fixed, moving)
    transform = result.GetNthTransform(0) if isinstance(result, sitk.CompositeTransform) else result
    info = {"atlas": "MNI152 ICBM 2009a (nilearn), brain-masked", **optimiser_record(method)}
    return sitk.AffineTransform(transform), info
