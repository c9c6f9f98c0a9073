"""Cross-validation folds stratified by radiomic clusters (the seed paper's recipe), and their balance.

The clusters come from :mod:`glioseg.data.radiomics.clusters`; here they (or WT-volume
quartiles, or nothing) stratify k folds, and the balance of clusters and volumes over the
validation sets is measured against random splits.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glioseg.data.io import read_json
from glioseg.data.radiomics.clusters import (
    QUALITY_COLUMN,
    VOLUME_COLUMN,
    ClusterModel,
    fit_cluster_model,
)
from glioseg.errors import ConfigError, InputError

STRATEGIES = ("radiomics", "volume", "random")


def load_splits(path: str | Path) -> list[dict[str, list[str]]]:
    """Folds of a splits file (nnU-Net's splits_final.json shape); :class:`InputError` names the file."""
    p = Path(path)
    folds = read_json(p, "splits file")
    if (
        not isinstance(folds, list)
        or not folds
        or not all(isinstance(f, dict) and "train" in f and "val" in f for f in folds)
    ):
        raise InputError(p, 'expected a list of {"train": [...], "val": [...]} (nnU-Net splits_final.json)')
    return folds


def volume_bins(volumes: np.ndarray, n_bins: int) -> np.ndarray:
    """Quantile bin (0 .. n_bins - 1) of each volume, by rank so that ties never merge bins.

    Examples
    --------
    >>> volume_bins(np.array([5.0, 1.0, 3.0, 9.0]), 2).tolist()
    [1, 0, 0, 1]
    """
    v = np.asarray(volumes, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v), dtype=np.int64)
    ranks[order] = np.arange(len(v))
    return (ranks * n_bins // max(len(v), 1)).astype(np.int64)


def _stratifiable(groups: np.ndarray, n_folds: int) -> bool:
    """Whether scikit-learn's StratifiedKFold accepts ``groups``: some group has at least ``n_folds`` cases."""
    return int(np.bincount(np.unique(groups, return_inverse=True)[1]).max()) >= n_folds


def _dealt_folds(groups: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, val) index pairs: cases ordered by group (shuffled within each) and dealt round-robin.

    >>> [val.tolist() for _, val in _dealt_folds(np.array([0, 0, 1, 1, 2, 2]), 3, 0)]
    [[0, 3], [1, 4], [2, 5]]
    """
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(groups == g)) for g in np.unique(groups)])
    fold_of = np.empty(len(groups), dtype=int)
    fold_of[order] = np.arange(len(groups)) % n_folds
    every = np.arange(len(groups))
    return [(every[fold_of != k], every[fold_of == k]) for k in range(n_folds)]


def make_folds(
    case_ids: list[str],
    n_folds: int = 5,
    strategy: str = "radiomics",
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> list[dict[str, list[str]]]:
    """Cross-validation folds in nnU-Net's ``splits_final.json`` shape.

    Parameters
    ----------
    case_ids : list of str
        Unique case IDs; the folds do not depend on their order (they are sorted first).
    n_folds : int
    strategy : {"radiomics", "volume", "random"}
        ``radiomics`` and ``volume`` stratify by ``groups`` (cluster or volume bin of each
        case, aligned with ``case_ids``) with scikit-learn's ``StratifiedKFold``; ``random``
        uses ``KFold``; both shuffle with ``random_state=seed``.  When every group is smaller
        than ``n_folds`` (a small cohort), which ``StratifiedKFold`` refuses, the cases are
        dealt round-robin in group order instead (:func:`_dealt_folds`).
    seed : int
    groups : ndarray of int, shape (N,), optional
        Required for the stratified strategies.

    Returns
    -------
    list of ``{"train": [...], "val": [...]}``, one per fold, IDs sorted; every case is in
    exactly one validation set.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown split strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    ids = [str(c) for c in case_ids]
    if len(set(ids)) != len(ids):
        raise ConfigError("case IDs are not unique")
    if n_folds < 2:
        raise ConfigError(f"need at least 2 folds, got {n_folds}")
    if len(ids) < n_folds:
        raise ConfigError(f"cannot make {n_folds} folds of {len(ids)} cases")
    order = np.argsort(np.asarray(ids), kind="stable")
    sorted_ids = np.asarray(ids)[order]
    if strategy == "random":
        splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(sorted_ids)
    else:
        if groups is None or len(groups) != len(ids):
            raise ConfigError(f"strategy {strategy} needs one group label per case")
        y = np.asarray(groups)[order]
        if not _stratifiable(y, n_folds):
            # every group is smaller than the number of folds (a small cohort with several
            # clusters): scikit-learn refuses to stratify, so deal the cases into the folds group
            # by group in a shuffled order, which spreads each group over as many folds as it can
            splitter = _dealt_folds(y, n_folds, seed)
        else:
            with warnings.catch_warnings():
                # "The least populated class in y has only m members": such groups cannot be in every
                # fold, which the balance report shows; it is not an error.
                warnings.simplefilter("ignore", UserWarning)
                splitter = list(
                    StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(sorted_ids, y)
                )
    return [
        {"train": sorted(sorted_ids[tr].tolist()), "val": sorted(sorted_ids[va].tolist())}
        for tr, va in splitter
    ]


def validation_fold(splits: list[dict], case_ids: list[str]) -> np.ndarray:
    """Index of the fold whose validation set holds each case (-1 if none), shape (N,)."""
    where = {cid: f for f, fold in enumerate(splits) for cid in fold["val"]}
    return np.asarray([where.get(str(c), -1) for c in case_ids], dtype=np.int64)


def contingency(splits: list[dict], case_ids: list[str], groups: np.ndarray) -> np.ndarray:
    """Counts ``(n_folds, n_groups)`` of each group in each validation set."""
    fold = validation_fold(splits, case_ids)
    g = np.asarray(groups, dtype=np.int64)
    table = np.zeros((len(splits), int(g.max()) + 1), dtype=np.int64)
    np.add.at(table, (fold[fold >= 0], g[fold >= 0]), 1)
    return table


def balance_chi2(splits: list[dict], case_ids: list[str], groups: np.ndarray) -> float:
    """Pearson chi-square of the fold x group table of validation counts (0 = perfect balance).

    ``sum_(f, g) (O_fg - E_fg)^2 / E_fg`` with ``E_fg = n_f N_g / N``: how far the
    validation sets' group mixes are from the cohort's.  Lower is better balanced.
    """
    table = contingency(splits, case_ids, groups).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    return float(((table - expected) ** 2 / expected).sum())


def max_proportion_deviation(splits: list[dict], case_ids: list[str], groups: np.ndarray) -> float:
    """Largest ``|p_fg - p_g|`` between a validation set's group share and the cohort's."""
    table = contingency(splits, case_ids, groups).astype(np.float64)
    shares = table / table.sum(axis=1, keepdims=True)
    cohort = table.sum(axis=0) / table.sum()
    return float(np.abs(shares - cohort).max())


def random_split_chi2(
    case_ids: list[str], groups: np.ndarray, n_folds: int, seeds: range | list[int]
) -> np.ndarray:
    """:func:`balance_chi2` of random (``KFold``) splits, one per seed: the reference distribution."""
    return np.asarray(
        [balance_chi2(make_folds(case_ids, n_folds, "random", s), case_ids, groups) for s in seeds],
        dtype=np.float64,
    )


def balance_table(splits: list[dict], frame, clusters: np.ndarray):
    """Per-fold balance of the validation sets (one row per fold, then ``all``).

    Columns: ``fold``, ``n_val``, ``n_train``, ``cluster_<k>`` (validation counts),
    ``wt_volume_ml_median`` / ``_min`` / ``_max`` and, when the table has them,
    ``quality_snr_median`` and ``quality_sharpness_median`` of the validation cases.
    """
    import pandas as pd

    ids = frame["case_id"].astype(str).tolist()
    fold = validation_fold(splits, ids)
    k = int(np.max(clusters)) + 1
    rows = []
    for f in [*range(len(splits)), "all"]:
        sel = np.ones(len(ids), bool) if f == "all" else fold == f
        row = {"fold": f, "n_val": int(sel.sum()), "n_train": int(len(ids) - sel.sum()) if f != "all" else 0}
        counts = np.bincount(np.asarray(clusters)[sel], minlength=k)
        row.update({f"cluster_{c}": int(counts[c]) for c in range(k)})
        if VOLUME_COLUMN in frame:
            v = frame.loc[sel, VOLUME_COLUMN].to_numpy(dtype=np.float64)
            row.update(
                wt_volume_ml_median=float(np.median(v)),
                wt_volume_ml_min=float(v.min()),
                wt_volume_ml_max=float(v.max()),
            )
        for name in (QUALITY_COLUMN, "quality_sharpness"):
            if name in frame:
                q = frame.loc[sel, name].to_numpy(dtype=np.float64)
                q = q[np.isfinite(q)]
                row[f"{name}_median"] = float(np.median(q)) if q.size else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class SplitResult:
    """Everything :func:`split_cohort` decides and measures.

    Attributes
    ----------
    splits : list of {"train": [...], "val": [...]}
    model : ClusterModel
    per_case : pandas.DataFrame
        ``case_id``, ``cluster``, ``volume_bin``, ``fold`` (its validation fold) and, when
        present, the WT volume and quality columns.
    table : pandas.DataFrame
        :func:`balance_table`.
    stats : dict
        ``cluster_chi2`` of these folds, ``random_cluster_chi2_median`` and
        ``random_cluster_chi2_share_worse`` (share of ``n_random`` random splits that are
        less balanced) and the same for the WT-volume quartile bins (``volume_*``).
    """

    splits: list[dict]
    model: ClusterModel
    per_case: object
    table: object
    stats: dict


def split_cohort(
    frame,
    n_folds: int = 5,
    strategy: str = "radiomics",
    seed: int = 0,
    n_clusters: int | None = None,
    k_range: tuple[int, int] = (2, 6),
    variance: float = 0.9,
    n_components: int | None = None,
    include_quality: bool = False,
    volume_bins_count: int = 4,
    n_random: int = 200,
) -> SplitResult:
    """Cluster a cohort, build folds with ``strategy`` and measure their balance.

    The cluster model is fitted whatever the strategy, so that the balance of volume or
    random folds can be judged by the same clusters.  ``volume`` stratifies by
    ``volume_bins_count`` WT-volume quantile bins (fewer if the cohort is small: at least
    ``n_folds`` cases per bin).
    """
    import pandas as pd

    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown split strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    frame = frame.assign(case_id=frame["case_id"].astype(str)).sort_values("case_id", kind="stable")
    frame = frame.reset_index(drop=True)
    ids = frame["case_id"].tolist()
    if len(ids) < n_folds:
        raise ConfigError(f"cannot make {n_folds} folds of {len(ids)} cases")
    model, clusters = fit_cluster_model(
        frame, n_clusters, k_range, variance, n_components, seed, include_quality
    )
    n_bins = max(1, min(volume_bins_count, len(ids) // n_folds))
    if VOLUME_COLUMN in frame:
        bins = volume_bins(frame[VOLUME_COLUMN].to_numpy(dtype=np.float64), n_bins)
    elif strategy == "volume":
        raise ConfigError(f"strategy volume needs the {VOLUME_COLUMN} column in the feature table")
    else:
        bins = np.zeros(len(ids), dtype=np.int64)
    groups = {"radiomics": clusters, "volume": bins, "random": None}[strategy]
    splits = make_folds(ids, n_folds, strategy, seed, groups)
    per_case = pd.DataFrame(
        {"case_id": ids, "cluster": clusters, "volume_bin": bins, "fold": validation_fold(splits, ids)}
    )
    for name in (VOLUME_COLUMN, QUALITY_COLUMN, "quality_sharpness"):
        if name in frame:
            per_case[name] = frame[name].to_numpy()
    seeds = range(10_000, 10_000 + n_random)
    stats: dict = {}
    if strategy != "random" and not _stratifiable(groups, n_folds):
        stats["fallback"] = (
            f"every {'cluster' if strategy == 'radiomics' else 'volume bin'} is smaller than {n_folds} folds, so the "
            "cases were dealt into the folds group by group instead of scikit-learn's StratifiedKFold"
        )
    for key, g in (("cluster", clusters), ("volume", bins)):
        own = balance_chi2(splits, ids, g)
        reference = random_split_chi2(ids, g, n_folds, seeds) if n_random else np.array([np.nan])
        stats[f"{key}_chi2"] = own
        stats[f"{key}_max_deviation"] = max_proportion_deviation(splits, ids, g)
        stats[f"random_{key}_chi2_median"] = float(np.median(reference))
        stats[f"random_{key}_chi2_share_worse"] = float(np.mean(reference > own + 1e-9))
    return SplitResult(splits, model, per_case, balance_table(splits, frame, clusters), stats)
