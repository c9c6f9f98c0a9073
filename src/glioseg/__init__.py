"""glioseg: adult glioma segmentation on multi-parametric MRI for small, low-quality cohorts.

The package is laid out by pipeline stage:

``glioseg.data``         discovery, validation, loading/writing of BraTS cases, synthetic generator
``glioseg.models``       network builders (nnU-Net, MedNeXt) and safe checkpoints
``glioseg.train``        training and fine-tuning on PyTorch Lightning
``glioseg.infer``        sliding-window inference, test-time augmentation, ensembles
``glioseg.postprocess``  component removal and label redefinition
``glioseg.evaluate``     BraTS lesion-wise metrics
``glioseg.report``       previews and HTML/Markdown reports
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
        from glioseg.infer import segment

        return segment
    raise AttributeError(f"module 'glioseg' has no attribute {name!r}")
