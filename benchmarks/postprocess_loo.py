"""Leave-one-out estimate of the post-processing gain on the real BraTS 2018 pairs, and the tuning speed.

Usage: python benchmarks/postprocess_loo.py [--data ../shared/data] [--definition brats2024-ssa] [--jobs 1]
       python benchmarks/postprocess_loo.py --pred release/brats-2mm/nnunet/oof --gt ../shared/data/brats2018

``--pred/--gt`` score any folder of predictions instead (e.g. a release's out-of-fold labels:
the honest estimate of what its tuned post-processing buys on unseen cases).

For each of the 20 cases with a prediction (``brats2018-predictions`` vs ``brats2018`` ground
truth), the post-processing setting is chosen by ``glioseg postprocess tune``'s rule on the
*other* 19 cases and applied to the held-out case; the table shows lesion-wise Dice per
region before and after, averaged over the 20 held-out cases, with the paired difference,
its bootstrap 95 % CI and the Wilcoxon signed-rank p-value.  No case is ever scored with a
setting tuned on itself.

The score of (case, setting) does not depend on the fold, so the full case x setting table
is computed once (the expensive part, timed) and each fold's selection is a table lookup.
The in-sample line (tuned and scored on all 20) is printed for contrast only.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from glioseg.data.labels import REGIONS  # noqa: E402
from glioseg.postprocess.grid import Grid  # noqa: E402
from glioseg.postprocess.scoring import stack_scores  # noqa: E402
from glioseg.postprocess.selection import leave_one_out, region_statistics, select_setting  # noqa: E402
from glioseg.postprocess.tune import score_cohort  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _table(title: str, stats: dict) -> list[str]:
    lines = [
        title,
        "| region | before | after | difference [95 % CI] | Wilcoxon p | better / worse / same |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for region in REGIONS:
        s = stats[region]["lesionwise_dice"]
        lines.append(
            f"| {region} | {s['before_mean']:.4f} | {s['after_mean']:.4f} | {s['mean_difference']:+.4f} "
            f"[{s['ci95_low']:+.4f}, {s['ci95_high']:+.4f}] | {s['wilcoxon_p']:.3g} | "
            f"{s['n_better']} / {s['n_worse']} / {s['n_unchanged']} |"
        )
    mean_before = np.mean([stats[r]["lesionwise_dice"]["before_mean"] for r in REGIONS])
    mean_after = np.mean([stats[r]["lesionwise_dice"]["after_mean"] for r in REGIONS])
    lines.append(
        f"| mean of regions | {mean_before:.4f} | {mean_after:.4f} | {mean_after - mean_before:+.4f} | | |"
    )
    hd_before = np.mean([stats[r]["lesionwise_hd95"]["before_mean"] for r in REGIONS])
    hd_after = np.mean([stats[r]["lesionwise_hd95"]["after_mean"] for r in REGIONS])
    lines.append(f"(mean lesion-wise HD95 over regions: {hd_before:.2f} mm -> {hd_after:.2f} mm)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--definition", default="brats2024-ssa", choices=("brats2024-ssa", "brats2023"))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument(
        "--grid", type=Path, default=None, help="JSON of threshold lists (default: the default Grid)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the LOO per-case results here")
    parser.add_argument(
        "--pred", type=Path, default=None, help="predictions (default: DATA/brats2018-predictions)"
    )
    parser.add_argument("--gt", type=Path, default=None, help="ground truth (default: DATA/brats2018)")
    args = parser.parse_args()

    pred_dir = args.pred or args.data / "brats2018-predictions"
    gt_dir = args.gt or args.data / "brats2018"
    grid = Grid.from_dict(json.loads(args.grid.read_text()), args.grid) if args.grid else Grid()
    settings = grid.settings()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
        f"{args.jobs} worker(s), one thread each; load average before: {_load_average()}"
    )
    print(f"definition {args.definition}; grid {len(settings)} settings: " + json.dumps(grid.to_dict()))

    began = time.perf_counter()
    cpu_began = time.process_time()

    def progress(case_id, scores, error):
        if scores is None:
            print(f"  {case_id}: FAILED {error}")
        else:
            print(
                f"  {case_id}: {scores.n_maps} maps scored in {scores.seconds:.1f} s "
                f"(components WT {scores.n_components['WT']}, TC {scores.n_components['TC']}, "
                f"ET {scores.n_components['ET']})"
            )

    scores, failures = score_cohort(
        pred_dir, gt_dir, settings, args.definition, "strict", args.jobs, progress=progress
    )
    seconds = time.perf_counter() - began
    cpu = time.process_time() - cpu_began
    for message in failures:
        print(f"not scored: {message}")
    n = len(scores)
    maps = sum(s.n_maps for s in scores)
    print(
        f"score table: {n} cases x {len(settings)} settings = {n * len(settings)} (case, setting) scores "
        f"from {maps} distinct label maps in {seconds:.1f} s wall ({cpu:.1f} s CPU of this process; "
        f"load average after: {_load_average()})"
    )

    dice, hd = stack_scores(scores)
    t0 = time.perf_counter()
    loo = leave_one_out(dice, hd)
    selection_seconds = time.perf_counter() - t0
    print(f"leave-one-out selection for {n} folds: {selection_seconds:.2f} s")
    loo_stats = region_statistics(dice, hd, loo)
    in_sample = np.full(n, select_setting(dice, hd))
    in_stats = region_statistics(dice, hd, in_sample)

    print()
    for line in _table(
        f"Leave-one-out ({n} held-out cases, each scored with the setting tuned on the other {n - 1}):",
        loo_stats,
    ):
        print(line)
    counts = collections.Counter(settings[s].describe() for s in loo)
    print("settings chosen by the folds: " + "; ".join(f"{d} ({c}x)" for d, c in counts.most_common()))
    print()
    for line in _table(f"In-sample, for contrast only (tuned and scored on all {n}; optimistic):", in_stats):
        print(line)
    print(f"in-sample setting: {settings[in_sample[0]].describe()}")

    if args.json is not None:
        rows = [
            {
                "case_id": s.case_id,
                "setting": settings[int(loo[i])].describe(),
                **{f"{r}_dice_before": float(dice[i, 0, j]) for j, r in enumerate(REGIONS)},
                **{f"{r}_dice_after": float(dice[i, loo[i], j]) for j, r in enumerate(REGIONS)},
            }
            for i, s in enumerate(scores)
        ]
        args.json.write_text(
            json.dumps({"definition": args.definition, "loo": loo_stats, "cases": rows}, indent=1)
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
