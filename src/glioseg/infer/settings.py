"""One object for every inference setting, from ``glioseg predict``'s options to the innermost window loop.

Like MONAI's ``SlidingWindowInferer`` and nnU-Net's ``nnUNetPredictor``, the settings travel
together: the CLI builds an :class:`InferenceSettings` from a named mode and the user's
overrides, and :func:`glioseg.infer.ensemble.segment_case` and
:func:`glioseg.infer.windows.predict_probabilities` read it.

Named modes (``glioseg predict --mode``); every setting can still be changed alone:

``default``    all members, sliding windows (overlap 0.5, Gaussian), left-right mirroring.
``fast``       the first member of each ``--model``, one pass over the whole brain crop with
               window-matched normalisation, no mirroring: the CPU configuration for clinics
               without GPUs.
``balanced``   every member, one pass over the whole brain crop each (window-matched
               normalisation), the 8 mirrorings spread over the members (member *k* gets the
               *k*-th): the full ensemble at about half of ``accurate``'s time.
``accurate``   every member, sliding windows, one mirroring per member: the 8 mirrorings
               spread over the members (member *k* gets the *k*-th), so a 2 x 5-fold ensemble
               still covers them at 1/8 of the reference's passes.
``reference``  every member, sliding windows with overlap 0.5 and all 8 mirrorings per member
               (nnU-Net's default inference): the yardstick the other modes are compared with.

Why these choices, with the measured time and agreement of each mode: docs/performance.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from glioseg.errors import ConfigError

TTA_CHOICES = ("none", "flip", "full", "spread")
WINDOW_CHOICES = ("sliding", "whole")
ENGINE_CHOICES = ("torch", "onnx")


@dataclass(frozen=True)
class InferenceSettings:
    """How a case is segmented.

    Attributes
    ----------
    mode : the named mode these settings started from (recorded in outputs)
    tta : ``none``, ``flip`` (left-right), ``full`` (8 mirrorings) or ``spread`` (one per member)
    window : ``sliding`` (windows of the training patch) or ``whole`` (one pass over the brain crop)
    overlap : sliding-window overlap in [0, 1) (also the windows whose statistics ``window_norm`` uses)
    members_per_group : use only the first N members of each ``--model`` (``None``: all)
    engine : ``torch`` or ``onnx`` (ONNX Runtime, CPU)
    channels_last : ``channels_last_3d`` memory format; ``None`` decides per network
        (:func:`glioseg.models.prefers_channels_last`)
    lean : memory-lean forward for nnU-Net networks (:mod:`glioseg.infer.lean`; same outputs)
    native_size : whole-crop passes of lean networks take the crop at its own size instead of
        padding it to multiples of the down-sampling factor
    window_norm : whole-crop passes normalise with window-matched statistics
        (:mod:`glioseg.infer.window_norm`) instead of the whole crop's
    thresholds : probability thresholds for WT, TC, ET
    device : ``auto``, ``cpu`` or ``cuda``

    Examples
    --------
    >>> s = InferenceSettings.for_mode("fast", overlap=0.25)
    >>> s.window, s.tta, s.members_per_group, s.overlap
    ('whole', 'none', 1, 0.25)
    >>> InferenceSettings.for_mode("default", tta=None).tta  # None keeps the mode's value
    'flip'
    """

    mode: str = "default"
    tta: str = "flip"
    window: str = "sliding"
    overlap: float = 0.5
    members_per_group: int | None = None
    engine: str = "torch"
    channels_last: bool | None = None
    lean: bool = True
    native_size: bool = True
    window_norm: bool = True
    thresholds: tuple[float, float, float] = (0.5, 0.5, 0.5)
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.tta not in TTA_CHOICES:
            raise ConfigError(f"unknown TTA {self.tta!r}; expected one of {', '.join(TTA_CHOICES)}")
        if self.window not in WINDOW_CHOICES:
            raise ConfigError(f"unknown window {self.window!r}; expected sliding or whole")
        if self.engine not in ENGINE_CHOICES:
            raise ConfigError(f"unknown engine {self.engine!r}; expected torch or onnx")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")
        if len(self.thresholds) != 3 or not all(0 < t < 1 for t in self.thresholds):
            raise ConfigError(
                f"thresholds must be three numbers in (0, 1) for WT, TC, ET, got {self.thresholds}"
            )
        if self.members_per_group is not None and self.members_per_group < 1:
            raise ConfigError(f"members_per_group must be at least 1, got {self.members_per_group}")

    @classmethod
    def for_mode(cls, mode: str = "default", **overrides: Any) -> InferenceSettings:
        """The settings of a named mode with every non-``None`` keyword overriding it."""
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        changes = {k: v for k, v in overrides.items() if v is not None}
        if "thresholds" in changes:
            changes["thresholds"] = tuple(float(t) for t in changes["thresholds"])
        return replace(MODES[mode], mode=mode, **changes)

    def with_(self, **changes: Any) -> InferenceSettings:
        """A copy with some settings changed."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["thresholds"] = list(self.thresholds)
        return doc


MODES: dict[str, InferenceSettings] = {
    "default": InferenceSettings(mode="default"),
    "fast": InferenceSettings(mode="fast", tta="none", window="whole", members_per_group=1),
    "balanced": InferenceSettings(mode="balanced", tta="spread", window="whole"),
    "accurate": InferenceSettings(mode="accurate", tta="spread"),
    "reference": InferenceSettings(mode="reference", tta="full"),
}
