"""Option choices shared by the CLI commands (typer needs them as enums)."""

from __future__ import annotations

from enum import Enum


class Definition(str, Enum):
    """The lesion-wise metric definitions (:data:`glioseg.evaluate.DEFINITIONS`)."""

    brats2024_ssa = "brats2024-ssa"
    brats2023 = "brats2023"


class GeometryCheck(str, Enum):
    """How a prediction's grid is checked against the ground truth's (``evaluate.runner.GEOMETRY_MODES``)."""

    strict = "strict"
    shape = "shape"


class MissingPrediction(str, Enum):
    """What ``glioseg evaluate`` does with a ground-truth case that has no prediction
    (``evaluate.runner.MISSING_POLICIES``)."""

    error = "error"
    skip = "skip"
    empty = "empty"


class Severity(str, Enum):
    """How strongly ``glioseg degrade`` degrades a case (:data:`glioseg.data.degrade.SEVERITIES`)."""

    mild = "mild"
    moderate = "moderate"
    severe = "severe"
