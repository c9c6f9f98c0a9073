"""Inference: sliding windows, mirroring TTA, fold and model ensembles, BraTS label maps.

One case: :func:`segment_case`; a batch with outputs on disk: :func:`glioseg.infer.batch.predict_cases`;
the one-call API with a bundled model's post-processing: :func:`glioseg.segment`.
"""

from __future__ import annotations

from glioseg.infer.ensemble import Prediction, segment_case
from glioseg.infer.models import ModelGroup, find_members, resolve_models
from glioseg.infer.settings import InferenceSettings

__all__ = [
    "InferenceSettings",
    "ModelGroup",
    "Prediction",
    "find_members",
    "resolve_models",
    "segment_case",
]
