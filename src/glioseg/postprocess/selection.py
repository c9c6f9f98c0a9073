"""Choice of the post-processing setting from a case x setting table, and its paired statistics.

Selection rule (:func:`select_setting`): maximise the mean over cases of the mean
lesion-wise Dice of WT, TC and ET, subject to **no region's mean Dice being lower than
without post-processing** on the tuning cases (the identity, setting 0, is always a
candidate); ties go to the lower mean lesion-wise HD95, then to the earlier setting in grid
order (smaller thresholds first).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from glioseg.data.labels import REGIONS

#: Floating-point slack of the never-lower rule (scores of identical maps are identical).
_TOLERANCE = 1e-12


def select_setting(
    dice: np.ndarray, hd95: np.ndarray, cases: np.ndarray | Sequence[int] | None = None
) -> int:
    """Index of the best setting on ``cases`` (rows of the case x setting tables).

    Parameters
    ----------
    dice, hd95 : ndarray, shape (N, S, 3)
        Lesion-wise Dice and HD95 of N cases under S settings (setting 0 = identity), regions
        in :data:`REGIONS` order.
    cases : indices into N, optional
        The tuning cases (default all).

    Returns
    -------
    int
        The setting with the highest mean (over cases and regions) lesion-wise Dice among
        those that lower no region's mean Dice below the identity's; ties: lower mean HD95,
        then the lower index.  0 when nothing qualifies better than the identity.
    """
    rows = np.arange(dice.shape[0]) if cases is None else np.asarray(cases, dtype=np.int64)
    if rows.size == 0:
        return 0
    region_dice = dice[rows].mean(axis=0)  # (S, 3)
    feasible = np.all(region_dice >= region_dice[0] - _TOLERANCE, axis=1)
    objective = region_dice.mean(axis=1)
    mean_hd = hd95[rows].mean(axis=(0, 2))
    best = 0
    for s in np.flatnonzero(feasible):
        if objective[s] > objective[best] + _TOLERANCE or (
            abs(objective[s] - objective[best]) <= _TOLERANCE and mean_hd[s] < mean_hd[best] - _TOLERANCE
        ):
            best = int(s)
    return best


def leave_one_out(
    dice: np.ndarray,
    hd95: np.ndarray,
    clusters: np.ndarray | None = None,
    min_cluster_cases: int = 5,
) -> np.ndarray:
    """The setting of each case chosen by :func:`select_setting` on the *other* cases (shape (N,)).

    Post-processing case ``i`` with setting ``result[i]`` estimates what tuning buys on unseen
    cases: no case is scored with a setting tuned on itself.  With ``clusters`` (one per case)
    the rule of ``glioseg postprocess tune --clusters`` applies: the other cases of ``i``'s
    cluster when there are at least ``min_cluster_cases`` of them, else all other cases.

    >>> dice = np.zeros((3, 2, 3)); dice[:, 1] = 0.5; dice[0, 1] = 0.0
    >>> leave_one_out(dice, np.zeros_like(dice)).tolist()
    [1, 1, 1]
    """
    n = dice.shape[0]
    chosen = []
    for i in range(n):
        rows = np.delete(np.arange(n), i)
        if clusters is not None:
            same = rows[np.asarray(clusters)[rows] == clusters[i]]
            rows = same if same.size >= min_cluster_cases else rows
        chosen.append(select_setting(dice, hd95, rows))
    return np.array(chosen, dtype=np.int64)


def paired_statistics(
    before: np.ndarray, after: np.ndarray, higher_is_better: bool = True, n_boot: int = 10_000, seed: int = 0
) -> dict:
    """Paired comparison of per-case scores after vs. before post-processing.

    Returns ``n``, ``before_mean``, ``after_mean``, ``mean_difference`` (after - before), a
    percentile bootstrap 95 % CI of the mean difference (``n_boot`` resamples of the cases,
    ``numpy.random.default_rng(seed)``), the two-sided Wilcoxon signed-rank p-value
    (``scipy.stats.wilcoxon``, zero differences dropped; 1.0 when every difference is 0),
    and how many cases got better, worse or stayed the same.
    """
    from glioseg.evaluate.stats import paired_difference

    b = np.asarray(before, dtype=np.float64)
    a = np.asarray(after, dtype=np.float64)
    d = a - b
    n = int(d.size)
    if n == 0:
        return {"n": 0}
    stats = paired_difference(b, a, n_boot=n_boot, confidence=0.95, seed=seed)
    sign = 1 if higher_is_better else -1
    return {
        "n": n,
        "before_mean": stats.mean_a,
        "after_mean": stats.mean_b,
        "mean_difference": stats.mean_difference,
        "ci95_low": stats.ci_low,
        "ci95_high": stats.ci_high,
        "wilcoxon_p": stats.p_wilcoxon,
        "n_better": int(np.sum(sign * d > 0)),
        "n_worse": int(np.sum(sign * d < 0)),
        "n_unchanged": int(np.sum(d == 0)),
    }


def region_statistics(dice: np.ndarray, hd95: np.ndarray, chosen: np.ndarray, **options) -> dict:
    """:func:`paired_statistics` per region and metric of the per-case ``chosen`` settings vs. the identity.

    ``dice`` / ``hd95`` are (N, S, 3) tables; ``chosen`` (N,) the setting index applied to each case.
    Returns ``{region: {"lesionwise_dice": stats, "lesionwise_hd95": stats}}``.
    """
    rows = np.arange(dice.shape[0])
    out = {}
    for i, region in enumerate(REGIONS):
        out[region] = {
            "lesionwise_dice": paired_statistics(dice[:, 0, i], dice[rows, chosen, i], True, **options),
            "lesionwise_hd95": paired_statistics(hd95[:, 0, i], hd95[rows, chosen, i], False, **options),
        }
    return out
