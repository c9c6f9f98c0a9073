"""Out-of-fold accuracy of a release's ensemble under another inference configuration.

Usage:
    OMP_NUM_THREADS=2 python benchmarks/oof_settings.py --release release/brats-2mm \
        --data ../shared/data/brats2018 --out runs/oof-whole --window whole --tta flip
    python benchmarks/postprocess_loo.py --pred runs/oof-whole/ensemble --gt ../shared/data/brats2018

A release's out-of-fold (OOF) predictions were made with one inference configuration (sliding
windows, left-right mirroring: ``glioseg train --fold all``).  A faster configuration must be
judged by the same yardstick, not by agreement alone: this script predicts every fold's
validation cases again with that fold's members of each cross-validation run named in the
release's ``weights.json``, combines them with the release's weights (as ``glioseg
ensemble-weights --oof-out`` does) and scores the ensemble's labels lesion-wise against the
truth, beside the release's own OOF ensemble, with the paired difference per region (bootstrap
95 % CI, Wilcoxon p).  Post-processing is then measured leave-one-out on the new labels by
``benchmarks/postprocess_loo.py`` (the second command above).

Time per case and member is printed (prediction only: the members are loaded per fold).
Resumable: cases whose probabilities exist in ``--out`` are not predicted again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import machine_record, write_result  # noqa: E402

from glioseg.data.labels import REGIONS  # noqa: E402
from glioseg.evaluate import evaluate  # noqa: E402
from glioseg.infer.settings import InferenceSettings  # noqa: E402
from glioseg.infer.weights import combine_out_of_fold  # noqa: E402
from glioseg.postprocess.selection import paired_statistics  # noqa: E402
from glioseg.train.crossval import predict_out_of_fold  # noqa: E402
from glioseg.train.splits import load_splits  # noqa: E402


def lesionwise_dice(pred: Path, gt: Path, definition: str) -> dict[str, np.ndarray]:
    """Per-case lesion-wise Dice ``{region: (n_cases,)}``, cases in ID order."""
    run = evaluate(pred, gt, definition=definition)
    if run.failures:
        raise SystemExit(f"{pred}: could not score {run.failures[0].case_id}: {run.failures[0].message}")
    results = sorted(run.results, key=lambda r: r.case_id)
    return {r: np.array([c.regions[r].lesionwise_dice for c in results]) for r in REGIONS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", type=Path, default=Path("release/brats-2mm"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/brats2018"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--window", default="whole", choices=("sliding", "whole"))
    parser.add_argument("--tta", default="flip", choices=("none", "flip", "full"))
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument(
        "--global-norm", action="store_true", help="whole-crop passes with the crop's statistics"
    )
    parser.add_argument("--definition", default="brats2024-ssa", choices=("brats2024-ssa", "brats2023"))
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    doc = json.loads((args.release / "weights.json").read_text())
    folds = load_splits(args.release / "splits.json")
    settings = InferenceSettings(
        tta=args.tta, window=args.window, overlap=args.overlap, window_norm=not args.global_norm
    )
    machine = machine_record()
    print(
        f"machine: {machine['cpu']}, {machine['cpu_count']} cores, "
        f"{machine['OMP_NUM_THREADS'] or 'default'} threads; settings: {settings.to_dict()}"
    )
    runs = []
    seconds = {}
    for model in doc["models"]:
        cv_dir = args.release / model["name"]
        run = args.out / model["name"]
        began = time.perf_counter()
        n_before = len(list((run / "oof").glob("*_probabilities.npz")))
        predict_out_of_fold(
            cv_dir, args.data, folds, printer=lambda _: None, settings=settings, oof=run / "oof"
        )
        n_new = len(list((run / "oof").glob("*_probabilities.npz"))) - n_before
        if n_new:
            seconds[model["name"]] = (time.perf_counter() - began) / n_new
            print(f"{model['name']}: {n_new} case(s) predicted, {seconds[model['name']]:.1f} s per case")
        runs.append(run)
    ensemble = args.out / "ensemble"
    combine_out_of_fold(runs, doc, args.data, ensemble)

    new = lesionwise_dice(ensemble, args.data, args.definition)
    old = lesionwise_dice(args.release / "oof-ensemble", args.data, args.definition)
    print(f"\nOOF ensemble lesion-wise Dice ({args.definition}, {len(new['WT'])} cases), no post-processing:")
    print("| region | release OOF (sliding, flip) | this configuration | difference [95 % CI] | Wilcoxon p |")
    print("| --- | --- | --- | --- | --- |")
    stats = {}
    for region in REGIONS:
        s = paired_statistics(old[region], new[region])
        stats[region] = {"release": float(old[region].mean()), "this": float(new[region].mean()), **s}
        print(
            f"| {region} | {old[region].mean():.4f} | {new[region].mean():.4f} | {s['mean_difference']:+.4f} "
            f"[{s['ci95_low']:+.4f}, {s['ci95_high']:+.4f}] | {s['wilcoxon_p']:.3g} |"
        )
    print(f"\nnext: python benchmarks/postprocess_loo.py --pred {ensemble} --gt {args.data}")
    if args.json is not None:
        write_result(
            args.json,
            {
                **machine,
                "command": "python benchmarks/oof_settings.py " + " ".join(sys.argv[1:]),
                "settings": settings.to_dict(),
                "seconds_per_case": seconds,
                "dice": stats,
            },
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
