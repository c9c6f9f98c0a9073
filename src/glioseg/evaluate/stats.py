"""Paired comparisons of per-case scores: mean difference, bootstrap confidence interval, Wilcoxon test."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class PairedDifference:
    """Summary of ``b - a`` over paired cases.

    Attributes
    ----------
    n : number of pairs
    mean_a, mean_b, mean_difference : means
    ci_low, ci_high : percentile bootstrap interval of the mean difference
    p_wilcoxon : two-sided Wilcoxon signed-rank p-value (1.0 when every difference is zero)
    """

    n: int
    mean_a: float
    mean_b: float
    mean_difference: float
    ci_low: float
    ci_high: float
    p_wilcoxon: float
    confidence: float

    @property
    def significant(self) -> bool:
        """True when the bootstrap interval excludes zero and the Wilcoxon p-value is below 0.05.

        Both are required: with few cases the bootstrap interval is too narrow (three cases
        that improve alike give an interval that excludes zero, but a Wilcoxon p of 0.25).
        """
        return (self.ci_low > 0 or self.ci_high < 0) and self.p_wilcoxon < 0.05

    def to_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant}


def paired_difference(
    a: Sequence[float], b: Sequence[float], n_boot: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> PairedDifference:
    """Compare paired per-case scores ``b`` against ``a``.

    Examples
    --------
    >>> d = paired_difference([0.5, 0.6, 0.7, 0.8], [0.6, 0.7, 0.8, 0.9])
    >>> round(d.mean_difference, 3), d.significant  # four cases cannot reach p < 0.05
    (0.1, False)
    """
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired scores must be two 1-D arrays of one length, got {x.shape} and {y.shape}")
    if x.size == 0:
        raise ValueError("no pairs to compare")
    diff = y - x
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(n_boot, diff.size))
    boot = diff[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    if np.allclose(diff, 0):
        p = 1.0
    else:
        from scipy.stats import wilcoxon

        p = float(wilcoxon(diff, zero_method="wilcox").pvalue) if np.count_nonzero(diff) > 0 else 1.0
    return PairedDifference(
        n=int(diff.size),
        mean_a=float(x.mean()),
        mean_b=float(y.mean()),
        mean_difference=float(diff.mean()),
        ci_low=float(low),
        ci_high=float(high),
        p_wilcoxon=p,
        confidence=confidence,
    )
