"""The grid of post-processing settings that ``glioseg postprocess tune`` searches.

The pipeline that is tuned (canonical order, see ``docs/postprocessing.md``)::

    1. remove WT components smaller than wt_min_size voxels      -> background
    2. keep the wt_keep largest WT components (0 = all)          -> background
    3. remove TC components smaller than tc_min_size voxels      -> SNFH
    4. remove ET components smaller than et_min_size voxels      -> NETC
    5. if ET voxels / WT voxels < et_ratio: all ET               -> NETC

Coarse to fine, so that every step only ever removes *whole components of the original
prediction*: a WT removal takes its TC and ET components with it, a TC removal its ET
components, an ET removal (to NETC) or the ratio rule changes neither TC nor WT.  Hence

* the result of any setting is a lookup table away from the components of the
  unprocessed prediction, labelled **once** per case and region
  (:class:`~glioseg.postprocess.scoring.CasePlan`);
* applying the result again changes nothing (idempotence): the surviving components
  already pass every size test, and the ET / WT ratio the rule saw is the final one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from glioseg.data.labels import ET, NETC, SNFH
from glioseg.errors import ConfigError, InputError
from glioseg.postprocess.config import Operation


@dataclass(frozen=True)
class Setting:
    """One point of the grid: thresholds of the canonical pipeline (module docstring).

    Sizes are voxels of the prediction grid; ``0`` (or ``1``) disables a size test,
    ``wt_keep = 0`` keeps every component and ``et_ratio = 0`` disables the ratio rule.
    """

    wt_min_size: int = 0
    wt_keep: int = 0
    tc_min_size: int = 0
    et_min_size: int = 0
    et_ratio: float = 0.0

    @property
    def is_identity(self) -> bool:
        return (
            self.wt_min_size <= 1
            and self.wt_keep <= 0
            and self.tc_min_size <= 1
            and self.et_min_size <= 1
            and self.et_ratio <= 0
        )

    def operations(self, voxel_mm3: float | None = None) -> list[Operation]:
        """The configuration operations of this setting (no-op steps left out; identity -> [])."""

        def size_param(n: int) -> dict:
            return {"min_size": int(n)} | ({"min_size_mm3": round(n * voxel_mm3, 3)} if voxel_mm3 else {})

        ops = []
        if self.wt_min_size > 1:
            ops.append(
                Operation(
                    "remove_small_components", {"target": "WT", **size_param(self.wt_min_size), "fill": 0}
                )
            )
        if self.wt_keep > 0:
            ops.append(
                Operation("keep_largest_components", {"target": "WT", "k": int(self.wt_keep), "fill": 0})
            )
        if self.tc_min_size > 1:
            ops.append(
                Operation(
                    "remove_small_components", {"target": "TC", **size_param(self.tc_min_size), "fill": SNFH}
                )
            )
        if self.et_min_size > 1:
            ops.append(
                Operation(
                    "remove_small_components", {"target": "ET", **size_param(self.et_min_size), "fill": NETC}
                )
            )
        if self.et_ratio > 0:
            ops.append(
                Operation(
                    "redefine_label",
                    {"label": ET, "into": NETC, "min_fraction": float(self.et_ratio), "of": "WT"},
                )
            )
        return ops

    def describe(self) -> str:
        if self.is_identity:
            return "identity"
        parts = []
        if self.wt_min_size > 1:
            parts.append(f"WT<{self.wt_min_size}")
        if self.wt_keep > 0:
            parts.append(f"WT keep {self.wt_keep}")
        if self.tc_min_size > 1:
            parts.append(f"TC<{self.tc_min_size}")
        if self.et_min_size > 1:
            parts.append(f"ET<{self.et_min_size}")
        if self.et_ratio > 0:
            parts.append(f"ET/WT<{self.et_ratio:g}->NETC")
        return ", ".join(parts)


@dataclass(frozen=True)
class Grid:
    """Values tried for each threshold; the search is the full product (identity always included).

    The defaults: 10 WT sizes x 10 TC sizes x 10 ET sizes x 7 ratios = 7,000 settings.
    """

    wt_min_size: tuple[int, ...] = (0, 25, 50, 100, 200, 300, 500, 1000, 1500, 2000)
    wt_keep: tuple[int, ...] = (0,)
    tc_min_size: tuple[int, ...] = (0, 10, 25, 50, 75, 100, 150, 200, 300, 500)
    et_min_size: tuple[int, ...] = (0, 10, 25, 50, 75, 100, 150, 200, 300, 500)
    et_ratio: tuple[float, ...] = (0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1)

    def axes(self) -> dict[str, list]:
        """Sorted values of each axis, each including its 'off' value 0."""
        out = {}
        for name in ("wt_min_size", "wt_keep", "tc_min_size", "et_min_size", "et_ratio"):
            kind = float if name == "et_ratio" else int
            values = sorted({kind(v) for v in getattr(self, name)} | {kind(0)})
            if values[0] < 0:
                raise ConfigError(f"grid {name}: values must be >= 0, got {values[0]}")
            out[name] = values
        return out

    def settings(self) -> list[Setting]:
        """Every combination, in lexicographic order of the sorted axes; index 0 is the identity."""
        return [Setting(*combo) for combo in itertools.product(*self.axes().values())]

    def to_dict(self) -> dict:
        return self.axes()

    @classmethod
    def from_dict(cls, d: dict, source: str | Path = "grid") -> Grid:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(source, f"unknown grid axis {unknown[0]!r} (known: {', '.join(sorted(known))})")
        try:
            values = {k: tuple(float(x) if k == "et_ratio" else int(x) for x in v) for k, v in d.items()}
        except (TypeError, ValueError) as exc:
            raise InputError(source, f"grid values must be lists of numbers ({exc})") from None
        return cls(**values)
