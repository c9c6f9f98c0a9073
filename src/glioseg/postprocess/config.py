"""Post-processing configurations: an ordered list of operations, optionally one per radiomic cluster.

A configuration is a JSON file (``glioseg postprocess tune`` writes it, ``glioseg
postprocess apply`` and ``glioseg predict --postprocess`` read it)::

    {
      "format": "glioseg-postprocess",
      "version": 1,
      "definition": "brats2024-ssa",
      "operations": [
        {"op": "remove_small_components", "target": "WT", "min_size": 300, "fill": 0, "min_size_mm3": 300.0},
        {"op": "remove_small_components", "target": "TC", "min_size": 50, "fill": 2, "min_size_mm3": 50.0},
        {"op": "remove_small_components", "target": "ET", "min_size": 25, "fill": 1, "min_size_mm3": 25.0},
        {"op": "redefine_label", "label": 3, "into": 1, "min_fraction": 0.04, "of": "WT"}
      ],
      "clusters": null,
      "tuning": {...}
    }

``operations`` run in the order listed (see :mod:`glioseg.postprocess.operations` for each
one).  Sizes are voxels of the label map's own grid; ``min_size_mm3`` records the same
threshold in mm^3 on the tuning set's grid and is informational only.  An empty list is
the identity.

With ``clusters``, each case is first put into a radiomic cluster (features of the
*unprocessed* label map, :func:`glioseg.data.radiomics.case_features`, with the case's
images; cluster model of ``glioseg split``, stored inline so the file is self-contained)
and gets that cluster's operations::

    "clusters": {
      "model_path": "splits.model.json",     # where the model came from (informational)
      "model": {... the cluster model JSON ...},
      "min_cases": 5,
      "operations": {"0": [...], "1": [...]}, # one list per cluster
      "source": {"0": "cluster", "1": "global"}
    }

``source`` says whether a cluster's list was tuned on that cluster's cases or is the global
setting (clusters with fewer than ``min_cases`` tuning cases).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glioseg.data.io import read_json, write_text_atomic
from glioseg.errors import InputError
from glioseg.postprocess.operations import (
    TARGET_LABELS,
    keep_largest_components,
    redefine_label,
    remove_small_components,
)

CONFIG_FORMAT = "glioseg-postprocess"
CONFIG_VERSION = 1

#: Parameters of each operation: name -> (type, required).  Keys ending in ``_mm3`` are informational.
_OPERATIONS: dict[str, dict[str, tuple[type, bool]]] = {
    "remove_small_components": {"target": (str, True), "min_size": (int, True), "fill": (int, False)},
    "keep_largest_components": {"target": (str, True), "k": (int, True), "fill": (int, False)},
    "redefine_label": {
        "label": (int, True),
        "into": (int, True),
        "min_fraction": (float, True),
        "of": (str, False),
    },
}
_INFORMATIONAL = ("min_size_mm3",)


@dataclass(frozen=True)
class Operation:
    """One step of a configuration: an operation name and its parameters.

    Examples
    --------
    >>> op = Operation("remove_small_components", {"target": "ET", "min_size": 25})
    >>> lab = np.zeros((5, 5, 5), np.uint8); lab[1, 1, 1] = 3
    >>> int(op(lab)[1, 1, 1])
    1
    """

    op: str
    params: dict = field(default_factory=dict)

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        p = {k: v for k, v in self.params.items() if k not in _INFORMATIONAL}
        if self.op == "remove_small_components":
            return remove_small_components(labels, p["target"], int(p["min_size"]), p.get("fill"))
        if self.op == "keep_largest_components":
            return keep_largest_components(labels, p["target"], int(p["k"]), p.get("fill"))
        if self.op == "redefine_label":
            return redefine_label(
                labels, int(p["label"]), int(p["into"]), float(p["min_fraction"]), p.get("of", "WT")
            )
        raise ValueError(f"unknown operation {self.op!r}")

    def to_dict(self) -> dict:
        return {"op": self.op, **self.params}

    @classmethod
    def from_dict(cls, d: dict, source: str | Path = "configuration", where: str = "operation") -> Operation:
        """Validate one ``{"op": ..., ...}`` entry; :class:`InputError` names ``source`` and the entry."""
        if not isinstance(d, dict) or "op" not in d:
            raise InputError(source, f'{where}: expected an object with an "op" key')
        name = d["op"]
        if name not in _OPERATIONS:
            raise InputError(source, f"{where}: unknown operation {name!r} (known: {', '.join(_OPERATIONS)})")
        spec = _OPERATIONS[name]
        params = {}
        for key, value in d.items():
            if key == "op":
                continue
            if key in _INFORMATIONAL:
                params[key] = value
                continue
            if key not in spec:
                raise InputError(source, f"{where} ({name}): unknown parameter {key!r}")
            kind = spec[key][0]
            ok = (
                isinstance(value, str)
                if kind is str
                else (
                    isinstance(value, int | float)
                    and not isinstance(value, bool)
                    and math.isfinite(value)
                    and (kind is float or float(value).is_integer())
                )
            )
            if not ok:
                raise InputError(
                    source,
                    f"{where} ({name}): {key} must be {'a string' if kind is str else kind.__name__}, got {value!r}",
                )
            params[key] = kind(value)
        missing = [k for k, (_, required) in spec.items() if required and k not in params]
        if missing:
            raise InputError(source, f"{where} ({name}): missing {', '.join(missing)}")
        op = cls(name, params)
        try:  # parameter values (targets, labels, fills) are checked by running the operation once
            op(np.zeros((1, 1, 1), np.uint8))
        except ValueError as exc:
            raise InputError(source, f"{where} ({name}): {exc}") from None
        for key in ("target", "of"):
            if key in params and params[key] not in TARGET_LABELS:
                raise InputError(source, f"{where} ({name}): unknown {key} {params[key]!r}")
        return op


def apply_operations(labels: np.ndarray, operations: list[Operation]) -> np.ndarray:
    """Run ``operations`` in order on a canonical label map ``(X, Y, Z)``; returns a new uint8 map."""
    out = np.array(labels, dtype=np.uint8, copy=True)
    for op in operations:
        out = op(out)
    return out


def _cluster_model_from_dict(d: dict, source: str | Path):
    """A :class:`~glioseg.train.splits.ClusterModel` from its JSON dict (as written by ``ClusterModel.save``)."""
    import tempfile

    from glioseg.data.radiomics.clusters import ClusterModel

    # ClusterModel.load owns the format checks; give it the inline copy as a file of its own
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.json"
        path.write_text(json.dumps(d), encoding="utf-8")
        try:
            return ClusterModel.load(path)
        except InputError as exc:
            raise InputError(source, f"inline cluster model: {exc.problem}") from None


@dataclass
class PostprocessConfig:
    """Operations to run on a label map, globally or per radiomic cluster.

    Attributes
    ----------
    operations : list of Operation
        The global pipeline (used for every case when there are no clusters).
    definition : str
        Metric definition the configuration was tuned for (informational).
    cluster_model : ClusterModel or None
    cluster_model_path : str or None
        Where the cluster model was read from when tuning (informational).
    cluster_operations : dict of int -> list of Operation
        Pipeline of each cluster.
    cluster_source : dict of int -> str
        ``"cluster"`` (tuned on the cluster's cases) or ``"global"`` (too few cases).
    min_cases : int
        Fewest tuning cases for a cluster to get its own setting.
    tuning : dict
        What the tuning measured (grid, cases, gains); informational.
    """

    operations: list[Operation] = field(default_factory=list)
    definition: str = "brats2024-ssa"
    cluster_model: object | None = None
    cluster_model_path: str | None = None
    cluster_operations: dict[int, list[Operation]] = field(default_factory=dict)
    cluster_source: dict[int, str] = field(default_factory=dict)
    min_cases: int = 0
    tuning: dict = field(default_factory=dict)

    @property
    def has_clusters(self) -> bool:
        return self.cluster_model is not None

    def operations_for(self, cluster: int | None) -> list[Operation]:
        """Pipeline of a cluster (the global one for ``None`` or a cluster without its own list)."""
        if cluster is None or not self.has_clusters:
            return self.operations
        return self.cluster_operations.get(int(cluster), self.operations)

    def apply(self, labels: np.ndarray, cluster: int | None = None) -> np.ndarray:
        """Run the pipeline of ``cluster`` (or the global one) on a canonical label map."""
        return apply_operations(labels, self.operations_for(cluster))

    def assign_cluster(
        self, image: np.ndarray, labels: np.ndarray, spacing: tuple[float, float, float]
    ) -> int:
        """Cluster of a case from the radiomic features of ``labels`` (unprocessed) and its images (4, X, Y, Z)."""
        if not self.has_clusters:
            raise ValueError("this configuration has no cluster model")
        return assign_from_labels(self.cluster_model, image, labels, spacing)

    def to_dict(self) -> dict:
        clusters = None
        if self.has_clusters:
            clusters = {
                "model_path": self.cluster_model_path,
                "model": self.cluster_model.to_dict(),
                "min_cases": int(self.min_cases),
                "operations": {
                    str(k): [op.to_dict() for op in v] for k, v in sorted(self.cluster_operations.items())
                },
                "source": {str(k): v for k, v in sorted(self.cluster_source.items())},
            }
        return {
            "format": CONFIG_FORMAT,
            "version": CONFIG_VERSION,
            "definition": self.definition,
            "operations": [op.to_dict() for op in self.operations],
            "clusters": clusters,
            "tuning": self.tuning,
        }

    def save(self, path: str | Path) -> Path:
        """Write the configuration as JSON (atomically)."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def from_dict(cls, d: dict, source: str | Path = "configuration") -> PostprocessConfig:
        if not isinstance(d, dict) or d.get("format") != CONFIG_FORMAT:
            raise InputError(
                source, f"not a glioseg post-processing configuration (expected format {CONFIG_FORMAT!r})"
            )
        if d.get("version") != CONFIG_VERSION:
            raise InputError(
                source,
                f"configuration version {d.get('version')} is not supported (expected {CONFIG_VERSION})",
            )

        def operation_list(items, where: str) -> list[Operation]:
            if not isinstance(items, list):
                raise InputError(source, f"{where}: expected a list of operations")
            return [Operation.from_dict(item, source, f"{where}[{i}]") for i, item in enumerate(items)]

        config = cls(
            operations=operation_list(d.get("operations", []), "operations"),
            definition=str(d.get("definition", "brats2024-ssa")),
            tuning=d.get("tuning") or {},
        )
        clusters = d.get("clusters")
        if clusters:
            if not isinstance(clusters, dict) or "model" not in clusters or "operations" not in clusters:
                raise InputError(source, 'clusters: expected {"model": ..., "operations": {...}}')
            config.cluster_model = _cluster_model_from_dict(clusters["model"], source)
            config.cluster_model_path = clusters.get("model_path")
            config.min_cases = int(clusters.get("min_cases", 0))
            try:
                config.cluster_operations = {
                    int(k): operation_list(v, f"clusters.operations[{k}]")
                    for k, v in clusters["operations"].items()
                }
                config.cluster_source = {int(k): str(v) for k, v in (clusters.get("source") or {}).items()}
            except (AttributeError, ValueError) as exc:
                raise InputError(source, f"clusters: cluster numbers must be integers ({exc})") from None
            extra = sorted(set(config.cluster_operations) - set(range(config.cluster_model.n_clusters)))
            if extra:
                raise InputError(
                    source, f"clusters: operations for cluster(s) {extra} the model does not have"
                )
        return config

    @classmethod
    def load(cls, path: str | Path) -> PostprocessConfig:
        """Read a configuration; :class:`InputError` names the file and the problem (one line)."""
        p = Path(path)
        if not p.is_file():
            raise InputError(p, "post-processing configuration not found")
        return cls.from_dict(read_json(p, "post-processing configuration"), p)


def needs_quality(model) -> bool:
    """Whether a cluster model uses the image-quality features (slower to compute)."""
    return any(str(name).startswith("quality_") for name in model.features)


def assign_from_labels(
    model, image: np.ndarray, labels: np.ndarray, spacing: tuple[float, float, float]
) -> int:
    """Cluster of one case from the radiomic features of ``labels`` and ``image`` (4, X, Y, Z)."""
    import pandas as pd

    from glioseg.data.radiomics import case_features

    features = case_features(image, labels, spacing, include_quality=needs_quality(model))
    frame = pd.DataFrame([features])
    return int(model.predict(model.matrix(frame, "prediction features"))[0])


def make_postprocessor(config: PostprocessConfig) -> Callable[[np.ndarray, object], np.ndarray]:
    """The ``PredictOptions.postprocess`` hook of a configuration: ``(labels, case_data) -> labels``.

    For a per-cluster configuration the hook computes the radiomic features of the raw
    prediction with ``case_data.image`` (4, X, Y, Z) and ``case_data.spacing``, assigns the
    cluster and runs that cluster's operations.
    """

    def postprocess(labels: np.ndarray, case_data) -> np.ndarray:
        cluster = None
        if config.has_clusters:
            cluster = config.assign_cluster(case_data.image, labels, case_data.spacing)
        return config.apply(labels, cluster)

    return postprocess
