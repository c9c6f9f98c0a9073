"""Failure-mode pictures for a release's model card: the worst out-of-fold cases, truth vs prediction.

    python scripts/model_card_figures.py release/brats-2mm ../shared/data/brats2018 \
        --out docs/images/models --name brats-2mm --worst 3

Reads the release workspace's out-of-fold label maps (the ensemble's when there is one, else
nnU-Net's), applies the release's post-processing (``pp.json``) as the shipped pipeline does,
scores every case (brats2024-ssa lesion-wise Dice) and renders, for the cases with the lowest
mean Dice over WT/TC/ET, glioseg's preview with the ground truth on every modality and the
prediction in an extra row.  Prints one line per case with its scores, for the card's captions.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from glioseg.data.cases import discover_cases, load_case
from glioseg.data.io import load_label
from glioseg.data.labels import REGIONS
from glioseg.evaluate import evaluate
from glioseg.postprocess.apply import apply_to_files
from glioseg.postprocess.config import PostprocessConfig
from glioseg.report.preview import render_preview


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="release workspace (scripts/train_real_models.sh)")
    parser.add_argument("data", type=Path, help="the labelled cases of the cross-validation")
    parser.add_argument("--out", type=Path, default=Path("docs/images/models"))
    parser.add_argument("--name", default="brats-2mm")
    parser.add_argument("--worst", type=int, default=3)
    args = parser.parse_args()

    source = args.work / "oof-ensemble"
    if not source.is_dir():
        source = args.work / "nnunet" / "oof"
    cases = discover_cases(args.data).by_id()
    with tempfile.TemporaryDirectory() as tmp:
        pred = source
        if (args.work / "pp.json").exists():
            report = apply_to_files(source, PostprocessConfig.load(args.work / "pp.json"), tmp, args.data)
            if report.failed:
                raise SystemExit(f"post-processing failed: {report.failed[0]}")
            pred = Path(tmp)
        run = evaluate(pred, args.data)
        ranked = sorted(run.results, key=lambda r: np.mean([r.regions[g].lesionwise_dice for g in REGIONS]))
        for rank, result in enumerate(ranked[: args.worst], start=1):
            data = load_case(cases[result.case_id])
            labels, _ = load_label(pred / f"{result.case_id}.nii.gz")
            scores = ", ".join(f"{g} {result.regions[g].lesionwise_dice:.2f}" for g in REGIONS)
            target = args.out / f"{args.name}-failure-{rank}.png"
            render_preview(
                data.image,
                data.affine,
                target,
                data.label,
                title=f"{result.case_id}: ground truth (rows 1-4), {args.name} out of fold (row 5); "
                f"lesion-wise Dice {scores}",
                compare_labels=labels,
                compare_title=args.name,
            )
            print(f"{target}: {result.case_id} lesion-wise Dice {scores}")


if __name__ == "__main__":
    main()
