"""The radiomic cluster model: features -> standardise -> L2 -> PCA -> k-means, saved as JSON.

The seed paper's recipe: radiomic features of each case -> normalise -> PCA -> k-means
-> stratified k-fold on the cluster labels (:mod:`glioseg.train.splits`).  The same clusters
choose per-cluster post-processing settings (:mod:`glioseg.postprocess`).

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glioseg.data.io import read_json, write_text_atomic
from glioseg.errors import ConfigError, InputError

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


def read_feature_table(path: str | Path):
    """Read a ``glioseg features`` CSV, checking it has unique case IDs and numeric features."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "feature table not found")
    try:
        # features must read back bit for bit (saved cluster models are applied to them): pandas 3
        # parses floats to the exact round trip by default and deprecates the option older ones need
        exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
        frame = pd.read_csv(p, **exact)
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
