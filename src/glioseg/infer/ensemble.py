"""Segment one case with one or more models: per-model probabilities on the input grid, weighted mean, labels.

Every member predicts in its own preprocessed space (its plan's spacing); the weighted
probabilities of members that share a spacing are summed there and put back on the input grid
once (restoring is linear), into one ``(3, X, Y, Z)`` array, so memory does not grow with the
number of models.  Labels follow from the averaged
probabilities with the nesting enforced (see :func:`glioseg.data.labels.probabilities_to_labels`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from glioseg.data.cases import CaseData
from glioseg.data.labels import REGIONS, probabilities_to_labels
from glioseg.data.preprocess import preprocess_case, restore_to_original
from glioseg.errors import ConfigError
from glioseg.infer.models import ModelGroup
from glioseg.infer.settings import InferenceSettings
from glioseg.infer.windows import member_flips, predict_probabilities
from glioseg.models import prefers_channels_last

DEFAULT_SETTINGS = InferenceSettings()


@dataclass
class Prediction:
    """Result for one case on its input grid: labels ``(X, Y, Z)`` uint8, probabilities ``(3, X, Y, Z)``."""

    case_id: str
    labels: np.ndarray
    probabilities: np.ndarray
    member_probabilities_variance: np.ndarray | None = None


def normalise_weights(weights: Sequence | np.ndarray | None, n_groups: int) -> np.ndarray:
    """Per-group, per-region weights ``(n_groups, 3)``; equal when ``None``.

    Accepts one number per group or three (WT, TC, ET) per group.
    """
    if weights is None:
        return np.ones((n_groups, len(REGIONS)))
    w = np.asarray(weights, dtype=float)
    if w.ndim == 1:
        w = np.repeat(w[:, None], len(REGIONS), axis=1)
    if w.shape != (n_groups, len(REGIONS)):
        raise ConfigError(f"got weights for {w.shape[0]} model(s) but {n_groups} --model argument(s)")
    if np.any(w < 0) or np.any(w.sum(axis=0) <= 0):
        raise ConfigError("ensemble weights must be non-negative with a positive sum per region")
    return w


def segment_case(
    data: CaseData,
    groups: Sequence[ModelGroup],
    weights: Sequence | np.ndarray | None = None,
    settings: InferenceSettings = DEFAULT_SETTINGS,
    track_variance: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Prediction:
    """Ensemble prediction for a loaded case.

    Parameters
    ----------
    data : CaseData (images ``(4, X, Y, Z)``)
    groups : one :class:`ModelGroup` per ``--model`` (its members are averaged with equal weight)
    weights : per group, one number or (WT, TC, ET) numbers; default equal
    settings : how to predict (mirroring, windows, members, engine, thresholds, device;
        :class:`glioseg.infer.settings.InferenceSettings`); ``device="auto"`` means the CPU here
        (:func:`glioseg.infer.batch.resolve_device` picks a GPU for batches)
    track_variance : also return the voxel-wise variance of the member probabilities
        (for the uncertainty score of reports)

    Returns
    -------
    Prediction
    """
    device = "cpu" if settings.device == "auto" else settings.device
    members_per_group = settings.members_per_group
    w = normalise_weights(weights, len(groups))
    shape = data.image.shape[1:]
    accumulated = np.zeros((len(REGIONS), *shape), dtype=np.float32)
    first_moment = np.zeros_like(accumulated) if track_variance else None
    second_moment = np.zeros_like(accumulated) if track_variance else None
    n_members = 0
    preprocessed: dict[tuple[float, ...], tuple[np.ndarray, object]] = {}
    # Restoring to the input grid (crop, resample) is linear, so without variance tracking the
    # weighted member probabilities are summed on each plan's grid and restored once per spacing.
    on_plan_grid: dict[tuple[float, ...], np.ndarray] = {}
    member_index = 0
    for group, group_weights in zip(groups, w, strict=True):
        share = (group_weights / w.sum(axis=0)).astype(np.float32)[:, None, None, None]
        members = group.members[:members_per_group] if members_per_group else group.members
        for member in members:
            plan = member.plan
            spacing = tuple(float(s) for s in plan.target_spacing)
            if spacing not in preprocessed:
                image, _, info = preprocess_case(
                    CaseData(data.case_id, data.image, None, data.reference), spacing
                )
                preprocessed[spacing] = (image, info)
            image, info = preprocessed[spacing]
            if progress:
                progress(f"{data.case_id}: {group.name}/{member.name}")
            config = member.config
            channels_last = settings.engine == "torch" and (
                prefers_channels_last(config.family, device)
                if settings.channels_last is None
                else settings.channels_last
            )
            network = _predictor(member, device, settings.engine, channels_last)
            flips = member_flips(settings.tta, member_index, data.affine)
            probs = predict_probabilities(
                network,
                image,
                plan.patch_size,
                settings.with_(channels_last=channels_last, device=device),
                flips,
                divisor=2 ** (config.n_stages - 1),
            )
            del network
            member_index += 1
            n_members += 1
            if second_moment is None:
                weighted = share * probs / len(members)
                if spacing in on_plan_grid:
                    on_plan_grid[spacing] += weighted
                else:
                    on_plan_grid[spacing] = weighted
                continue
            full = restore_to_original(probs, info)
            accumulated += share * full / len(members)
            first_moment += full
            second_moment += full * full
            del full, probs
    for spacing, summed in on_plan_grid.items():
        accumulated += restore_to_original(summed, preprocessed[spacing][1])
    variance = None
    if second_moment is not None:  # spread of the members' probabilities (each member counted once)
        mean = first_moment / max(n_members, 1)
        variance = np.maximum(second_moment / max(n_members, 1) - mean * mean, 0)
    labels = probabilities_to_labels(accumulated, settings.thresholds)
    return Prediction(data.case_id, labels, accumulated, variance)


def _predictor(member, device: str, engine: str, channels_last: bool):
    if engine == "onnx":
        from glioseg.infer.onnx_engine import onnx_predictor

        if device != "cpu":
            raise ConfigError("--engine onnx runs on the CPU; use --device cpu")
        return onnx_predictor(member)
    if engine != "torch":
        raise ConfigError(f"unknown engine {engine!r}; expected torch or onnx")
    network = member.load(device)
    if channels_last:
        import torch

        network = network.to(memory_format=torch.channels_last_3d)
    return network
