"""How closely ``glioseg prepare``'s rigid registration recovers a known motion of a real case.

Usage: python benchmarks/registration_accuracy.py [--case DIR] [--seeds 1,2,3,4,5]
       [--min-steps 0.01,0.001] [--out benchmarks/results/registration_accuracy.json]

A known rigid motion (rotation 6, -4, 5 degrees; translation 5, -4, 6 mm about the image centre) is
applied to the T2 and FLAIR of a real BraTS case (default ../shared/data/brats2018/
Brats18_CBICA_ABM_1), which are re-sampled to a 5 mm-slice acquisition as a clinical scan would be;
each is registered back to the case's T1c. The error is the mean distance (mm) between the
estimated and the true position of every 50th tumour voxel. Printed per seed and optimiser minimum
step, with the time of each registration, and written as JSON (no machine path).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from provenance import machine_record, write_result  # benchmarks/provenance.py

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT.parent / "shared" / "data" / "brats2018" / "Brats18_CBICA_ABM_1"


def main() -> None:
    import SimpleITK as sitk

    from glioseg.data.io import load_label, load_volume
    from glioseg.prepare.register import Grid, resample, rigid_register, to_sitk

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=Path, default=CASE)
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--min-steps", default="0.01,0.001")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "registration_accuracy.json"
    )
    args = parser.parse_args()
    name = args.case.name
    t1c, image = load_volume(args.case / f"{name}_t1ce.nii.gz")
    seg, _ = load_label(args.case / f"{name}_seg.nii.gz")
    fixed = to_sitk(t1c, image.affine)
    truth = sitk.Euler3DTransform()  # fixed points -> moving points
    truth.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint([s / 2 for s in fixed.GetSize()]))
    truth.SetRotation(*np.radians([6.0, -4.0, 5.0]))
    truth.SetTranslation((5.0, -4.0, 6.0))
    points = [
        fixed.TransformContinuousIndexToPhysicalPoint([float(v) for v in p])
        for p in np.argwhere(seg > 0)[::50]
    ]
    thick = Grid((240, 240, 31), (1.0, 1.0, 5.0), (0.0, -239.0, 0.0))
    moving = {}
    for contrast in ("t2", "flair"):
        data, _ = load_volume(args.case / f"{name}_{contrast}.nii.gz")
        moving[contrast] = to_sitk(
            resample(to_sitk(data, image.affine), thick, truth.GetInverse()), thick.affine()
        )

    rows = []
    for min_step in [float(v) for v in args.min_steps.split(",")]:
        for seed in [int(v) for v in args.seeds.split(",")]:
            for contrast, volume in moving.items():
                began = time.perf_counter()
                estimate, info = rigid_register(fixed, volume, seed=seed, min_step=min_step)
                seconds = time.perf_counter() - began
                errors = [
                    np.linalg.norm(np.subtract(estimate.TransformPoint(p), truth.TransformPoint(p)))
                    for p in points
                ]
                rows.append(
                    {
                        "min_step": min_step,
                        "seed": seed,
                        "contrast": contrast,
                        "mean_error_mm": round(float(np.mean(errors)), 3),
                        "seconds": round(seconds, 2),
                        "iterations": info["iterations"],
                    }
                )
                print(
                    f"min step {min_step:g}  seed {seed}  {contrast:5s}  "
                    f"mean error {rows[-1]['mean_error_mm']:.3f} mm  {seconds:.1f} s  {info['iterations']} iterations",
                    flush=True,
                )
    summary = {}
    for min_step in sorted({r["min_step"] for r in rows}, reverse=True):
        for contrast in moving:
            picked = [r for r in rows if r["min_step"] == min_step and r["contrast"] == contrast]
            errors = [r["mean_error_mm"] for r in picked]
            summary[f"{contrast} min_step={min_step:g}"] = {
                "mean_error_mm": round(float(np.mean(errors)), 3),
                "max_error_mm": max(errors),
                "mean_seconds": round(float(np.mean([r["seconds"] for r in picked])), 2),
            }
            print(f"{contrast:5s} min step {min_step:g}: mean {summary[f'{contrast} min_step={min_step:g}']}")
    record = {
        "benchmark": "registration_accuracy",
        "case": name,
        "motion": {"rotation_deg": [6, -4, 5], "translation_mm": [5, -4, 6], "slices_mm": 5},
        **machine_record(("simpleitk",)),
        "rows": rows,
        "summary": summary,
    }
    write_result(args.out, record)


if __name__ == "__main__":
    main()
