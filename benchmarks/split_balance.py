"""How much better radiomics-stratified folds balance a mixed cohort than volume-stratified and random folds.

Usage: python benchmarks/split_balance.py [--cohorts 3] [--seeds 5] [--per-domain 15] [--folds 5]
    [--json benchmarks/results/split_balance.json]

For each synthetic cohort (``--per-domain`` adult + as many BraTS-Africa-like ``ssa``
cases, 48x48x40 voxels at 4 mm), features are computed in memory and, for each fold
seed, folds are built with every strategy.  Printed per strategy (mean over cohorts and
seeds):

- cluster chi2: Pearson chi-square of the validation-fold x radiomic-cluster table
  (0 = every validation set has the cohort's cluster mix), with the clusters of the
  radiomics model fitted with the same seed;
- domain chi2: the same for the adult/ssa domain, which no strategy sees;
- volume chi2: the same for WT-volume quartiles;
- share of 200 random (KFold) splits that are less balanced by cluster.

``--json`` also writes every run's row with where and with what it ran
(``benchmarks/provenance.py``); docs/transfer.md quotes that file (``scripts/docs_numbers.py``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from provenance import machine_record, write_result  # noqa: E402  (benchmarks/provenance.py)

from glioseg.data.radiomics import case_features  # noqa: E402
from glioseg.data.synthetic import generate_case  # noqa: E402
from glioseg.train.splits import balance_chi2, random_split_chi2, split_cohort, volume_bins  # noqa: E402

SHAPE, SPACING = (48, 48, 40), 4.0


def cohort(seed: int, per_domain: int) -> pd.DataFrame:
    rows = []
    for domain in ("adult", "ssa"):
        for index in range(1, per_domain + 1):
            case = generate_case(seed, index, domain, SHAPE, SPACING)
            rows.append({"case_id": case.case_id, **case_features(case.image, case.label, (SPACING,) * 3)})
    return pd.DataFrame(rows).sort_values("case_id").reset_index(drop=True)


def _summary(values: pd.Series) -> str:
    return f"{values.mean():.2f} ({values.min():.2f}-{values.max():.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--per-domain", type=int, default=15)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write every run's row here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    machine = machine_record(("scikit-learn", "pandas"))
    results = []
    for c in range(args.cohorts):
        t0 = time.perf_counter()
        frame = cohort(100 + c, args.per_domain)
        ids = frame["case_id"].tolist()
        domain = frame["case_id"].str.startswith("SynSSA").astype(int).to_numpy()
        bins = volume_bins(frame["shape_wt_volume_ml"].to_numpy(), 4)
        print(f"cohort {100 + c}: {len(frame)} cases, features in {time.perf_counter() - t0:.1f} s")
        for seed in range(args.seeds):
            reference = split_cohort(frame, args.folds, "radiomics", seed, n_random=0)
            clusters = reference.per_case["cluster"].to_numpy()
            random_chi2 = random_split_chi2(ids, clusters, args.folds, range(10_000, 10_200))
            for strategy in ("radiomics", "volume", "random"):
                splits = split_cohort(frame, args.folds, strategy, seed, n_random=0).splits
                own = balance_chi2(splits, ids, clusters)
                results.append(
                    {
                        "cohort": 100 + c,
                        "seed": seed,
                        "strategy": strategy,
                        "k": reference.model.n_clusters,
                        "cluster_chi2": own,
                        "random_median": float(np.median(random_chi2)),
                        "share_random_worse": float(np.mean(random_chi2 > own + 1e-9)),
                        "domain_chi2": balance_chi2(splits, ids, domain),
                        "volume_chi2": balance_chi2(splits, ids, bins),
                    }
                )
    table = pd.DataFrame(results)
    print(f"\n{args.cohorts} cohorts x {args.seeds} seeds, {args.folds} folds; mean (min-max) over runs")
    print(
        f"{'strategy':10s} {'cluster chi2':>20s} {'random worse':>13s} {'domain chi2':>18s} {'volume chi2':>20s}"
    )
    for strategy, rows in table.groupby("strategy", sort=False):
        cluster, domain, volume = (
            _summary(rows[col]) for col in ("cluster_chi2", "domain_chi2", "volume_chi2")
        )
        print(
            f"{strategy:10s} {cluster:>20s} {100 * rows['share_random_worse'].mean():>12.0f}% "
            f"{domain:>18s} {volume:>20s}"
        )
    print(
        f"median cluster chi2 of 200 random KFold splits (mean over runs): {table['random_median'].mean():.2f}"
    )
    print(f"clusters chosen (k): {sorted(table['k'].unique().tolist())}")
    if args.json:
        settings = {k: getattr(args, k) for k in ("cohorts", "seeds", "per_domain", "folds")}
        command = "python benchmarks/split_balance.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in settings.items()
        )
        result = {"command": command, **settings, "shape": SHAPE, "spacing_mm": SPACING, "runs": results}
        print(f"wrote {write_result(args.json, {**result, **machine})}")


if __name__ == "__main__":
    main()
