"""Cross-validation folds stratified by radiomic clusters, and the saved cluster model.

The seed paper's recipe: radiomic features of each case -> normalise -> PCA -> k-means
-> stratified k-fold on the cluster labels, so that every fold's validation set holds
the cohort's kinds of cases in the cohort's proportions.

Here, precisely (:func:`fit_cluster_model`):

1. features: the numeric columns of a ``glioseg features`` table, without ``quality_*``
   unless asked; columns that are NaN (or infinite) in every case are dropped;
2. missing values (e.g. texture of an empty tumour, NETC/TC of a case without core) are
   imputed with the cohort median of the column;
3. each feature is standardised (cohort mean 0, standard deviation 1; a constant column
   gets scale 1), then each case's vector is scaled to unit L2 norm (the paper's "L2
   normalisation");
4. PCA keeps the fewest components that explain ``variance`` (default 90 %) of the
   variance, or a given number;
5. k-means (scikit-learn, ``n_init`` restarts, ``random_state=seed``) with ``k`` given or
   chosen by the best silhouette score over a range (ties: the smaller ``k``).

All fitted numbers are saved as JSON (:meth:`ClusterModel.save`), never pickled, and
:func:`assign_clusters` puts new cases into the saved clusters with the operations of
scikit-learn's ``transform``/``predict`` (equal up to floating-point rounding, so the
same clusters except for a case exactly half-way between two centres).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glioseg.data.io import read_json, write_text_atomic
from glioseg.errors import ConfigError, InputError

STRATEGIES = ("radiomics", "volume", "random")
MODEL_FORMAT = "glioseg-cluster-model"
MODEL_VERSION = 1
#: Columns of a feature table that are not features.
NON_FEATURE_COLUMNS = ("case_id", "label_source", "cluster")
VOLUME_COLUMN = "shape_wt_volume_ml"
QUALITY_COLUMN = "quality_snr"


def feature_columns(frame, include_quality: bool = False) -> list[str]:
    """Numeric feature columns of a feature table (ID columns and, by default, ``quality_*`` excluded)."""
    import pandas as pd

    names = []
    for name in frame.columns:
        if name in NON_FEATURE_COLUMNS or (not include_quality and str(name).startswith("quality_")):
            continue
        if pd.api.types.is_numeric_dtype(frame[name]):
            names.append(str(name))
    return names


def _matrix(frame, names: list[str]) -> np.ndarray:
    x = frame[names].to_numpy(dtype=np.float64, copy=True)
    x[~np.isfinite(x)] = np.nan
    return x


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


@dataclass
class ClusterModel:
    """A fitted normaliser + PCA + k-means, as plain arrays.

    Attributes
    ----------
    features : list of str
        Feature columns, in the order of every array below (length F).
    impute : ndarray, shape (F,)
        Cohort medians that replace missing values.
    scaler_mean, scaler_scale : ndarray, shape (F,)
        Standardisation ``(x - mean) / scale``.
    pca_mean : ndarray, shape (F,)
    pca_components : ndarray, shape (P, F)
    explained_variance_ratio : ndarray, shape (P,)
    centres : ndarray, shape (K, P)
        k-means centres in PCA space.
    row_l2 : bool
        Whether standardised vectors are scaled to unit L2 norm before the PCA.
    k_selection : dict
        ``{"method": "given" | "silhouette", "scores": {k: silhouette}}``.
    info : dict
        Seed, restarts, variance target, dropped features, cohort size, cluster sizes.
    """

    features: list[str]
    impute: np.ndarray
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    pca_mean: np.ndarray
    pca_components: np.ndarray
    explained_variance_ratio: np.ndarray
    centres: np.ndarray
    row_l2: bool = True
    k_selection: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        return int(self.centres.shape[0])

    def matrix(self, frame, source: str | Path = "features") -> np.ndarray:
        """The model's feature columns of ``frame`` as an ``(N, F)`` float array (NaN for missing)."""
        missing = [name for name in self.features if name not in frame.columns]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise InputError(
                source, f"feature table lacks {len(missing)} column(s) the cluster model needs: {shown}"
            )
        return _matrix(frame, self.features)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Impute, standardise, L2-normalise rows and project on the principal axes: ``(N, F) -> (N, P)``."""
        x = np.array(x, dtype=np.float64, copy=True)
        rows, cols = np.nonzero(np.isnan(x))
        x[rows, cols] = self.impute[cols]
        x -= self.scaler_mean
        x /= self.scaler_scale
        if self.row_l2:
            norms = np.sqrt(np.einsum("ij,ij->i", x, x))
            norms[norms == 0] = 1.0
            x /= norms[:, None]
        return (x - self.pca_mean) @ self.pca_components.T

    def distances(self, x: np.ndarray) -> np.ndarray:
        """Squared Euclidean distances ``(N, K)`` from each case (features ``(N, F)``) to each centre."""
        z = self.transform(x)
        return ((z[:, None, :] - self.centres[None, :, :]) ** 2).sum(axis=2)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Cluster of each case (nearest centre; ties go to the lower index), shape (N,)."""
        return np.argmin(self.distances(x), axis=1).astype(np.int64)

    def to_dict(self) -> dict:
        return {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "features": list(self.features),
            "impute_median": self.impute.tolist(),
            "scaler": {"mean": self.scaler_mean.tolist(), "scale": self.scaler_scale.tolist()},
            "row_l2_normalise": bool(self.row_l2),
            "pca": {
                "mean": self.pca_mean.tolist(),
                "components": self.pca_components.tolist(),
                "explained_variance_ratio": self.explained_variance_ratio.tolist(),
            },
            "kmeans": {"centres": self.centres.tolist()},
            "k_selection": self.k_selection,
            "info": self.info,
        }

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON (atomically; floats round-trip exactly)."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ClusterModel:
        """Read a model written by :meth:`save`; :class:`InputError` names the file on any problem."""
        p = Path(path)
        if not p.is_file():
            raise InputError(p, "cluster model not found")
        d = read_json(p, "cluster model")
        if not isinstance(d, dict) or d.get("format") != MODEL_FORMAT:
            raise InputError(p, f"not a glioseg cluster model (expected format {MODEL_FORMAT!r})")
        if d.get("version") != MODEL_VERSION:
            raise InputError(
                p, f"cluster model version {d.get('version')} is not supported (expected {MODEL_VERSION})"
            )
        try:
            model = cls(
                features=[str(n) for n in d["features"]],
                impute=np.asarray(d["impute_median"], dtype=np.float64),
                scaler_mean=np.asarray(d["scaler"]["mean"], dtype=np.float64),
                scaler_scale=np.asarray(d["scaler"]["scale"], dtype=np.float64),
                pca_mean=np.asarray(d["pca"]["mean"], dtype=np.float64),
                pca_components=np.asarray(d["pca"]["components"], dtype=np.float64),
                explained_variance_ratio=np.asarray(d["pca"]["explained_variance_ratio"], dtype=np.float64),
                centres=np.asarray(d["kmeans"]["centres"], dtype=np.float64),
                row_l2=bool(d["row_l2_normalise"]),
                k_selection=d.get("k_selection", {}),
                info=d.get("info", {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(p, f"incomplete cluster model ({type(exc).__name__}: {exc})") from None
        n = len(model.features)
        shapes_ok = (
            model.impute.shape
            == model.scaler_mean.shape
            == model.scaler_scale.shape
            == model.pca_mean.shape
            == (n,)
            and model.pca_components.ndim == 2
            and model.pca_components.shape[1] == n
            and model.centres.ndim == 2
            and model.centres.shape[1] == model.pca_components.shape[0]
        )
        if not shapes_ok:
            raise InputError(p, "cluster model arrays have inconsistent shapes")
        return model


def fit_cluster_model(
    frame,
    n_clusters: int | None = None,
    k_range: tuple[int, int] = (2, 6),
    variance: float = 0.9,
    n_components: int | None = None,
    seed: int = 0,
    include_quality: bool = False,
    n_init: int = 10,
    row_l2: bool = True,
) -> tuple[ClusterModel, np.ndarray]:
    """Fit the imputer, normaliser, PCA and k-means of the module docstring on a feature table.

    The fitting is scikit-learn's (``SimpleImputer(strategy="median")``,
    ``StandardScaler``, ``normalize``, ``PCA(svd_solver="full")``, ``KMeans``); the
    returned model holds their fitted arrays.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per case (``glioseg features`` output).
    n_clusters : int, optional
        ``k``; by default chosen by silhouette in ``k_range`` (inclusive, capped at N - 1).
    k_range : (int, int)
    variance : float in (0, 1]
        Fraction of the variance the PCA components must explain (ignored when
        ``n_components`` is given).
    n_components : int, optional
        Number of PCA components (capped at ``min(N, F)``).
    seed : int
        ``random_state`` of PCA and k-means.
    include_quality : bool
        Cluster on the ``quality_*`` columns too.
    n_init : int
        k-means restarts.
    row_l2 : bool
        Scale each standardised case vector to unit L2 norm before the PCA.

    Returns
    -------
    model : ClusterModel
    labels : ndarray of int64, shape (N,)
        Cluster of each row of ``frame``, in the frame's row order (``model.predict`` on the
        same rows, which equals the fitted ``KMeans.labels_``).  With a ``case_id`` column
        the fit uses the rows sorted by ID, so the row order of ``frame`` does not matter.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import silhouette_score
    from sklearn.preprocessing import StandardScaler, normalize

    original = frame
    if "case_id" in frame.columns:
        # k-means initialisation depends on row order: fit on rows sorted by case ID so that the
        # same cohort gives the same clusters whatever order its table is in
        frame = frame.iloc[np.argsort(frame["case_id"].astype(str).to_numpy(), kind="stable")]
    names = feature_columns(frame, include_quality)
    x = _matrix(frame, names)
    n = x.shape[0]
    if n < 3:
        raise ConfigError(f"clustering needs at least 3 cases, got {n}")
    all_nan = np.all(np.isnan(x), axis=0)
    dropped = [name for name, bad in zip(names, all_nan, strict=True) if bad]
    names = [name for name, bad in zip(names, all_nan, strict=True) if not bad]
    x = x[:, ~all_nan]
    if not names:
        raise ConfigError("the feature table has no usable numeric feature column")
    if n_components is None and not (0 < variance <= 1):
        raise ConfigError(f"PCA variance fraction must be in (0, 1], got {variance}")
    if n_components is not None and n_components < 1:
        raise ConfigError(f"PCA needs at least one component, got {n_components}")

    imputer = SimpleImputer(strategy="median").fit(x)
    scaler = StandardScaler().fit(imputer.transform(x))
    standardised = scaler.transform(imputer.transform(x))
    if row_l2:
        standardised = normalize(standardised, norm="l2")
    limit = min(n, len(names))
    if n_components is not None:
        wanted: float | int = min(int(n_components), limit)
    else:
        wanted = limit if variance >= 1 else float(variance)
    pca = PCA(n_components=wanted, svd_solver="full", random_state=seed).fit(standardised)
    z = pca.transform(standardised)

    def kmeans(k: int):
        return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(z)

    scores: dict[str, float] = {}
    if n_clusters is not None:
        if not (1 <= n_clusters <= n):
            raise ConfigError(f"cannot make {n_clusters} clusters of {n} cases")
        chosen = kmeans(n_clusters)
        method = "given"
    else:
        lo, hi = int(k_range[0]), min(int(k_range[1]), n - 1)
        if lo < 2 or hi < lo:
            raise ConfigError(
                f"cluster range {k_range[0]}..{k_range[1]} is not possible with {n} cases (need 2 <= k <= N - 1)"
            )
        best = None
        for k in range(lo, hi + 1):
            fitted = kmeans(k)
            distinct = len(np.unique(fitted.labels_))
            score = float(silhouette_score(z, fitted.labels_)) if 1 < distinct < n else -1.0
            scores[str(k)] = score
            if best is None or score > best[0] + 1e-12:
                best = (score, fitted)
        chosen = best[1]
        method = "silhouette"
    model = ClusterModel(
        features=names,
        impute=np.asarray(imputer.statistics_, dtype=np.float64),
        scaler_mean=np.asarray(scaler.mean_, dtype=np.float64),
        scaler_scale=np.asarray(scaler.scale_, dtype=np.float64),
        pca_mean=np.asarray(pca.mean_, dtype=np.float64),
        pca_components=np.asarray(pca.components_, dtype=np.float64),
        explained_variance_ratio=np.asarray(pca.explained_variance_ratio_, dtype=np.float64),
        centres=np.asarray(chosen.cluster_centers_, dtype=np.float64),
        row_l2=row_l2,
    )
    labels = model.predict(_matrix(original, names))
    model.k_selection = {"method": method, "scores": scores}
    model.info = {
        "seed": int(seed),
        "n_init": int(n_init),
        "variance_target": None if n_components is not None else float(variance),
        "n_components": int(model.pca_components.shape[0]),
        "explained_variance": float(model.explained_variance_ratio.sum()),
        "n_cases": int(n),
        "dropped_features": dropped,
        "include_quality": bool(include_quality),
        "cluster_sizes": np.bincount(labels, minlength=model.n_clusters).tolist(),
    }
    return model, labels


def assign_clusters(features_df, model_path: str | Path) -> np.ndarray:
    """Cluster of each row of ``features_df`` under a model saved by :meth:`ClusterModel.save`.

    Reproduces ``KMeans.predict(PCA.transform(normalise(x)))`` of the fitted
    scikit-learn objects from the saved arrays alone.

    Returns
    -------
    ndarray of int64, shape (N,)
    """
    model = ClusterModel.load(model_path)
    return model.predict(model.matrix(features_df, model_path))


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
        uses ``KFold``; both shuffle with ``random_state=seed``.
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


def read_feature_table(path: str | Path):
    """Read a ``glioseg features`` CSV, checking it has unique case IDs and numeric features."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "feature table not found")
    try:
        frame = pd.read_csv(p, float_precision="round_trip")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(p, f"unreadable CSV ({type(exc).__name__}: {exc})") from None
    if "case_id" not in frame.columns:
        raise InputError(p, "no case_id column (expected a table written by glioseg features)")
    frame["case_id"] = frame["case_id"].astype(str)
    duplicated = frame["case_id"][frame["case_id"].duplicated()].tolist()
    if duplicated:
        raise InputError(p, f"case IDs appear more than once: {', '.join(duplicated[:5])}")
    if not feature_columns(frame, include_quality=True):
        raise InputError(p, "no numeric feature column")
    return frame.sort_values("case_id", kind="stable").reset_index(drop=True)


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
    for key, g in (("cluster", clusters), ("volume", bins)):
        own = balance_chi2(splits, ids, g)
        reference = random_split_chi2(ids, g, n_folds, seeds) if n_random else np.array([np.nan])
        stats[f"{key}_chi2"] = own
        stats[f"{key}_max_deviation"] = max_proportion_deviation(splits, ids, g)
        stats[f"random_{key}_chi2_median"] = float(np.median(reference))
        stats[f"random_{key}_chi2_share_worse"] = float(np.mean(reference > own + 1e-9))
    return SplitResult(splits, model, per_case, balance_table(splits, frame, clusters), stats)
