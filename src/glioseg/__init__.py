"""glioseg: adult glioma segmentation on multi-parametric MRI for small, low-quality cohorts.

The package is laid out by pipeline stage, lowest layer first; a module imports only from its
own layer and the layers below (docs/architecture.md; tests/test_architecture.py enforces it):

``glioseg.data``         discovery, validation, loading/writing of BraTS cases, radiomics, synthetic generator
``glioseg.evaluate``     BraTS lesion-wise metrics
``glioseg.models``       networks (nnU-Net, MedNeXt), the plan, safe checkpoints, bundled models
``glioseg.infer``        inference settings, sliding windows, test-time mirroring, ensembles
``glioseg.postprocess``  component removal and label redefinition, tuned for lesion-wise Dice
``glioseg.train``        training, fine-tuning and cross-validation on PyTorch Lightning, releases
``glioseg.pipeline``     the one-call API ``glioseg.segment``
``glioseg.report``       previews, case reports, model cards
``glioseg.experiment``   the seed paper's comparison end to end
``glioseg.cli``          the ``glioseg`` command

Conventions used everywhere: channel order ``t1n, t1c, t2w, t2f``; labels
``1 = NETC, 2 = SNFH (edema), 3 = ET`` (legacy ET = 4 is mapped to 3 on load);
regions ``WT = {1, 2, 3}``, ``TC = {1, 3}``, ``ET = {3}`` in that order.
"""

from __future__ import annotations

from glioseg._version import __version__

__all__ = ["__version__", "segment"]


def __getattr__(name: str):
    # ``glioseg.segment`` without importing torch at ``import glioseg``
    if name == "segment":
        from glioseg.pipeline import segment

        return segment
    raise AttributeError(f"module 'glioseg' has no attribute {name!r}")
