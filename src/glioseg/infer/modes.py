"""Named inference configurations (``glioseg predict --mode``); every knob can still be set alone.

``default``    all members, sliding windows (overlap 0.5, Gaussian), left-right mirroring.
``fast``       the first member of each ``--model``, one pass over the whole brain crop with
               window-matched normalisation, no mirroring: the CPU configuration for clinics
               without GPUs.
``accurate``   every member, sliding windows (overlap 0.5, Gaussian), one mirroring per member:
               the 8 mirrorings spread over the members (member *k* gets the *k*-th), so a
               2 x 5-fold ensemble still covers them at 1/8 of the reference's passes.  On a
               trained 2 x 5 ensemble (three synthetic cases) its labels agreed with the
               reference's at 0.984 / 0.971 / 0.956 Dice (WT / TC / ET, mean); with
               ``--window whole`` (one pass per member, window-matched norms) at 0.949 / 0.870 /
               0.828, with a Dice against the truth within 0.01 of the reference's.  At the
               BraTS plan on a 2-core CPU that is 7.4 min against 32.3 min.
``reference``  every member, sliding windows with overlap 0.5 and all 8 mirrorings per member
               (nnU-Net's default inference): the yardstick the other modes are compared with.

Measured time and agreement of each mode: docs/performance.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from glioseg.errors import ConfigError


@dataclass(frozen=True)
class ModeSettings:
    tta: str
    window: str
    overlap: float
    members_per_group: int | None
    engine: str = "torch"
    channels_last: bool | None = None  # None: per architecture (glioseg.models.prefers_channels_last)
    window_norm: bool = True  # whole-crop passes: window-matched instance norms (glioseg.infer.window_norm)


MODES: dict[str, ModeSettings] = {
    "default": ModeSettings(tta="flip", window="sliding", overlap=0.5, members_per_group=None),
    "fast": ModeSettings(tta="none", window="whole", overlap=0.5, members_per_group=1),
    "accurate": ModeSettings(tta="spread", window="sliding", overlap=0.5, members_per_group=None),
    "reference": ModeSettings(tta="full", window="sliding", overlap=0.5, members_per_group=None),
}


def resolve_mode(mode: str = "default", **overrides) -> ModeSettings:
    """Settings of ``mode`` with any non-``None`` keyword overriding it."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    base = MODES[mode].__dict__ | {k: v for k, v in overrides.items() if v is not None}
    return ModeSettings(**base)
