"""Paired comparison of two scored runs on the same cases, as the experiment report makes it.

Usage: python scripts/compare_runs.py BASELINE.csv COMPARED.csv [--metric lesionwise_dice]

Each file is a ``per_case.csv`` of ``glioseg evaluate`` (or of a cross-validation's ``cv/``
folder). For ET, TC and WT it prints the mean of each, the mean per-case difference (compared
minus baseline), its 95 % percentile-bootstrap interval (10,000 resamples, seed 0), the two-sided
Wilcoxon signed-rank p and whether the difference is significant (interval excludes 0 and
p < 0.05): ``glioseg.evaluate.stats.paired_difference``, the statistics of
``glioseg experiment transfer``'s report. Both files must score the same cases.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from glioseg.evaluate.stats import paired_difference

REGIONS = ("ET", "TC", "WT")


def read_scores(path: Path, metric: str) -> dict[str, dict[str, float]]:
    """``{case_id: {region: value}}`` of one ``per_case.csv``; a clear error for a wrong file."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    columns = [f"{region}_{metric}" for region in REGIONS]
    if not rows or "case_id" not in rows[0] or any(c not in rows[0] for c in columns):
        raise SystemExit(f"{path}: not a per_case.csv with case_id and {', '.join(columns)}")
    return {row["case_id"]: {r: float(row[f"{r}_{metric}"]) for r in REGIONS} for row in rows}


def compare(baseline: Path, compared: Path, metric: str = "lesionwise_dice") -> list[dict]:
    """One row per region: means, mean difference, interval, Wilcoxon p, significance."""
    a, b = read_scores(baseline, metric), read_scores(compared, metric)
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise SystemExit(f"{compared}: scores other cases than {baseline} (e.g. {only[0]})")
    cases = sorted(a)
    rows = []
    for region in REGIONS:
        d = paired_difference([a[c][region] for c in cases], [b[c][region] for c in cases])
        rows.append(
            {
                "region": region,
                "n": d.n,
                "baseline": d.mean_a,
                "compared": d.mean_b,
                "difference": d.mean_difference,
                "ci_low": d.ci_low,
                "ci_high": d.ci_high,
                "p_wilcoxon": d.p_wilcoxon,
                "significant": d.significant,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path)
    parser.add_argument("compared", type=Path)
    parser.add_argument("--metric", default="lesionwise_dice", help="column suffix, e.g. legacy_dice")
    args = parser.parse_args()
    print("| region | n | baseline | compared | difference | 95 % CI | Wilcoxon p | significant |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in compare(args.baseline, args.compared, args.metric):
        p = "nan" if math.isnan(r["p_wilcoxon"]) else f"{r['p_wilcoxon']:.3f}"
        print(
            f"| {r['region']} | {r['n']} | {r['baseline']:.3f} | {r['compared']:.3f} | {r['difference']:+.3f} "
            f"| [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {p} | {'yes' if r['significant'] else 'no'} |"
        )


if __name__ == "__main__":
    main()
