"""Radiomics-stratified folds: determinism, coverage, balance against random splits, saved cluster model."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.radiomics import case_features
from glioseg.data.radiomics.clusters import (
    ClusterModel,
    assign_clusters,
    feature_columns,
    fit_cluster_model,
    read_feature_table,
)
from glioseg.data.synthetic import generate_case
from glioseg.errors import ConfigError, InputError
from glioseg.train.splits import (
    balance_chi2,
    contingency,
    make_folds,
    random_split_chi2,
    split_cohort,
)

from .conftest import SMALL_SHAPE, SMALL_SPACING

runner = CliRunner()


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    """Features of 30 small synthetic cases, 15 adult and 15 BraTS-Africa-like (ssa), computed in memory."""
    import torch

    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the generator's tensors are tiny here: threads only add overhead
    try:
        for domain in ("adult", "ssa"):
            for index in range(1, 16):
                case = generate_case(21, index, domain, SMALL_SHAPE, SMALL_SPACING)
                features = case_features(case.image, case.label, (SMALL_SPACING,) * 3)
                rows.append({"case_id": case.case_id, "label_source": "truth", **features})
    finally:
        torch.set_num_threads(threads)
    return pd.DataFrame(rows).sort_values("case_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def cohort_csv(cohort, tmp_path_factory):
    path = tmp_path_factory.mktemp("features") / "features.csv"
    cohort.to_csv(path, index=False)
    return path


def _domain(frame):
    return frame["case_id"].str.startswith("SynSSA").astype(int).to_numpy()


@pytest.mark.parametrize("strategy", ["radiomics", "volume", "random"])
def test_folds_cover_every_case_once_and_are_deterministic(cohort, strategy):
    ids = cohort["case_id"].tolist()
    result = split_cohort(cohort, 5, strategy, seed=3, n_random=0)
    splits = result.splits
    assert len(splits) == 5
    validation = [c for fold in splits for c in fold["val"]]
    assert sorted(validation) == sorted(ids) and len(set(validation)) == len(ids)
    for fold in splits:
        assert not set(fold["train"]) & set(fold["val"])
        assert sorted(fold["train"] + fold["val"]) == sorted(ids)
        assert fold["val"] == sorted(fold["val"]) and 5 <= len(fold["val"]) <= 7
    again = split_cohort(cohort.sample(frac=1.0, random_state=1), 5, strategy, seed=3, n_random=0)
    assert again.splits == splits  # same seed, any row order: same folds
    assert split_cohort(cohort, 5, strategy, seed=4, n_random=0).splits != splits


def test_radiomics_folds_are_better_balanced_than_random_folds(cohort):
    ids = cohort["case_id"].tolist()
    result = split_cohort(cohort, 5, "radiomics", seed=0, n_random=200)
    clusters = result.per_case["cluster"].to_numpy()
    assert result.model.n_clusters >= 2
    own = balance_chi2(result.splits, ids, clusters)
    random_chi2 = random_split_chi2(ids, clusters, 5, range(200))
    assert own < np.median(random_chi2)
    assert np.mean(random_chi2 > own) >= 0.9
    assert result.stats["cluster_chi2"] == pytest.approx(own)
    # the clusters were found from images and masks alone; the acquisition domain (adult vs
    # BraTS-Africa-like), which the clustering never saw, is balanced better too
    domain = _domain(cohort)
    assert balance_chi2(result.splits, ids, domain) < np.median(random_split_chi2(ids, domain, 5, range(200)))


def test_balance_statistic_by_hand():
    ids = [f"c{i}" for i in range(8)]
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    even = [{"train": [], "val": ["c0", "c1", "c4", "c5"]}, {"train": [], "val": ["c2", "c3", "c6", "c7"]}]
    skewed = [{"train": [], "val": ["c0", "c1", "c2", "c3"]}, {"train": [], "val": ["c4", "c5", "c6", "c7"]}]
    assert contingency(even, ids, groups).tolist() == [[2, 2], [2, 2]]
    assert balance_chi2(even, ids, groups) == 0
    # every expected count is 2 and every observed one is 4 or 0: 4 cells x (2^2 / 2)
    assert balance_chi2(skewed, ids, groups) == pytest.approx(8.0)


def test_volume_folds_hold_each_volume_quartile_evenly(cohort):
    result = split_cohort(cohort, 5, "volume", seed=0, n_random=0)
    table = pd.crosstab(result.per_case["fold"], result.per_case["volume_bin"])
    assert (table.max() - table.min()).max() <= 1


def test_saved_model_reproduces_scikit_learn(cohort, tmp_path):
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler

    train, new = cohort.iloc[:24].copy(), cohort.iloc[24:].copy()
    train.loc[train.index[0], "glcm_t1c_contrast"] = np.nan  # a missing value to impute
    model, labels = fit_cluster_model(train, n_clusters=3, seed=5)
    path = model.save(tmp_path / "model.json")
    assert json.loads(path.read_text())["format"] == "glioseg-cluster-model"

    names = feature_columns(train)
    reference = make_pipeline(
        SimpleImputer(strategy="median"),
        StandardScaler(),
        Normalizer(),
        PCA(n_components=0.9, svd_solver="full"),
    ).fit(train[names].to_numpy())
    kmeans = KMeans(n_clusters=3, n_init=10, random_state=5).fit(reference.transform(train[names].to_numpy()))
    assert labels.tolist() == kmeans.labels_.tolist()
    new.loc[new.index[0], "shape_sphericity"] = np.nan
    expected = kmeans.predict(reference.transform(new[names].to_numpy()))
    assert assign_clusters(new, path).tolist() == expected.tolist()
    assert assign_clusters(train, path).tolist() == labels.tolist()
    loaded = ClusterModel.load(path)
    np.testing.assert_allclose(
        loaded.transform(new[names].to_numpy()),
        reference.transform(new[names].to_numpy()),
        rtol=1e-9,
        atol=1e-12,
    )


def test_k_is_chosen_by_silhouette_in_range(cohort):
    model, labels = fit_cluster_model(cohort, k_range=(2, 4), seed=0)
    scores = {int(k): v for k, v in model.k_selection["scores"].items()}
    assert sorted(scores) == [2, 3, 4]
    assert model.n_clusters == max(scores, key=scores.get)
    assert sorted(np.unique(labels).tolist()) == list(range(model.n_clusters))


def test_all_nan_and_empty_tumour_columns_are_handled(cohort):
    frame = cohort.copy()
    frame["shape_netc_tc_ratio"] = np.nan
    frame.loc[0, [c for c in frame.columns if c.startswith("glcm_")]] = np.nan  # as for an empty tumour
    model, labels = fit_cluster_model(frame, n_clusters=2)
    assert "shape_netc_tc_ratio" in model.info["dropped_features"]
    assert "shape_netc_tc_ratio" not in model.features
    j = model.features.index("glcm_t1c_contrast")
    assert model.impute[j] == pytest.approx(np.median(frame["glcm_t1c_contrast"].dropna()))
    assert len(labels) == len(frame)


def test_bad_inputs(cohort, tmp_path):
    ids = cohort["case_id"].tolist()
    with pytest.raises(ConfigError, match="cannot make 5 folds of 3 cases"):
        make_folds(ids[:3], 5, "random")
    with pytest.raises(ConfigError, match="unknown split strategy"):
        make_folds(ids, 5, "alphabetical")
    with pytest.raises(ConfigError, match="not unique"):
        make_folds(ids[:5] + ids[:1], 2, "random")
    bad = tmp_path / "model.json"
    bad.write_text('{"format": "glioseg-cluster-model", "version": 1, "features": ["a"]}')
    with pytest.raises(InputError, match="incomplete cluster model") as info:
        assign_clusters(cohort, bad)
    assert str(info.value).startswith(str(bad))
    model, _ = fit_cluster_model(cohort, n_clusters=2)
    model.save(bad)
    with pytest.raises(InputError, match="lacks 1 column"):
        assign_clusters(cohort.drop(columns=["shape_sphericity"]), bad)
    duplicated = tmp_path / "dup.csv"
    pd.concat([cohort.iloc[:2], cohort.iloc[:1]]).to_csv(duplicated, index=False)
    with pytest.raises(InputError, match="more than once"):
        read_feature_table(duplicated)


def test_split_cli_writes_nnunet_splits_report_and_model(cohort_csv, tmp_path):
    out = tmp_path / "run" / "splits.json"
    result = runner.invoke(app, ["split", str(cohort_csv), "--folds", "5", "--seed", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    splits = json.loads(out.read_text())
    assert isinstance(splits, list) and len(splits) == 5
    assert all(set(fold) == {"train", "val"} for fold in splits)
    balance = pd.read_csv(tmp_path / "run" / "splits.balance.csv")
    assert balance["fold"].astype(str).tolist() == ["0", "1", "2", "3", "4", "all"]
    assert balance.loc[5, "n_val"] == 30
    cluster_columns = [c for c in balance.columns if c.startswith("cluster_")]
    assert balance[cluster_columns].iloc[:5].to_numpy().sum() == 30
    assert {"wt_volume_ml_median", "quality_snr_median"} <= set(balance.columns)
    assert (tmp_path / "run" / "splits.balance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cases = pd.read_csv(tmp_path / "run" / "splits.cases.csv")
    model_path = tmp_path / "run" / "splits.model.json"
    frame = read_feature_table(cohort_csv)
    assert assign_clusters(frame, model_path).tolist() == cases["cluster"].tolist()
    assert "chi2" in result.output and "random splits" in result.output
    again = tmp_path / "again.json"
    runner.invoke(app, ["split", str(cohort_csv), "--folds", "5", "--seed", "1", "--out", str(again)])
    assert json.loads(again.read_text()) == splits


def test_split_cli_on_a_folder_and_assigning_new_cases(small_cohort, tmp_path):
    out = tmp_path / "s.json"
    result = runner.invoke(
        app, ["split", str(small_cohort), "--folds", "2", "--clusters", "2", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.features.csv").exists() and len(json.loads(out.read_text())) == 2
    features = tmp_path / "new.csv"
    result = runner.invoke(
        app,
        ["features", str(small_cohort), "--out", str(features), "--assign", str(tmp_path / "s.model.json")],
    )
    assert result.exit_code == 0, result.output
    clusters = pd.read_csv(features)["cluster"].tolist()
    assert clusters == pd.read_csv(tmp_path / "s.cases.csv")["cluster"].tolist()


def test_split_cli_errors_are_one_line(tmp_path):
    missing = tmp_path / "none.csv"
    missing.write_text("a,b\n1,2\n")
    result = runner.invoke(app, ["split", str(missing), "--out", str(tmp_path / "s.json")])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error:") and "no case_id column" in result.output
    assert not (tmp_path / "s.json").exists()


def test_small_cohort_with_clusters_smaller_than_the_folds_still_splits(tmp_path):
    """6 cases in 3 clusters of 2 and 3 folds: scikit-learn refuses to stratify; the cases are dealt
    into the folds cluster by cluster instead, and the CLI says so (it crashed with a traceback)."""
    import pandas as pd

    ids = [f"C{i}" for i in range(6)]
    groups = np.array([0, 0, 1, 1, 2, 2])
    splits = make_folds(ids, 3, "radiomics", seed=4, groups=groups)
    validation = [c for fold in splits for c in fold["val"]]
    assert sorted(validation) == ids and all(len(fold["val"]) == 2 for fold in splits)
    for fold in splits:  # each validation set takes its two cases from two different clusters
        assert len({int(groups[ids.index(c)]) for c in fold["val"]}) == 2
        assert sorted(fold["train"] + fold["val"]) == ids
    rng = np.random.default_rng(0)
    centres = np.repeat(np.eye(3) * 10, 2, axis=0)
    frame = pd.DataFrame(centres + rng.normal(0, 0.1, (6, 3)), columns=["f_a", "f_b", "f_c"])
    frame.insert(0, "case_id", ids)
    table = tmp_path / "features.csv"
    frame.to_csv(table, index=False)
    out = tmp_path / "splits.json"
    result = runner.invoke(app, ["split", str(table), "--folds", "3", "--clusters", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "dealt into the folds group by group" in result.output
    assert sorted(c for fold in json.loads(out.read_text()) for c in fold["val"]) == ids
