"""Train the small demonstration model bundled in src/glioseg/assets/models/demo/ (synthetic data only).

Usage: python scripts/make_demo_model.py [--work runs/demo-model] [--threads 1]

Steps (each is also a plain glioseg command, printed as it runs):
  1. glioseg synth WORK/data --cases 12 --domain adult --seed 7
  2. glioseg synth WORK/data --cases 12 --domain ssa --seed 7
  3. glioseg train WORK/data --model nnunet --out WORK/run --spacing 3 --patch 40,40,40 --base-features 12
         --epochs 30 --iters-per-epoch 50 --seed 0
  4. copy WORK/run/model.{safetensors,json} to src/glioseg/assets/models/demo/ with weights stored as float16

The model is trained on synthetic phantoms for demonstration only and is not for clinical use.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "glioseg" / "assets" / "models" / "demo"


def run(cmd: list[str], env: dict) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/demo-model")
    parser.add_argument("--threads", default="1")
    parser.add_argument(
        "--export-only", action="store_true", help="skip data and training; export WORK/run again"
    )
    args = parser.parse_args()
    work = Path(args.work)
    env = {**os.environ, "OMP_NUM_THREADS": args.threads}
    glioseg = [sys.executable, "-m", "glioseg"]
    t0 = time.time()
    if not args.export_only and not (work / "data").exists():
        run([*glioseg, "synth", str(work / "data"), "--cases", "12", "--domain", "adult", "--seed", "7"], env)
        run([*glioseg, "synth", str(work / "data"), "--cases", "12", "--domain", "ssa", "--seed", "7"], env)
    if not args.export_only:
        run(
            [
                *glioseg,
                "train",
                str(work / "data"),
                "--model",
                "nnunet",
                "--out",
                str(work / "run"),
                "--spacing",
                "3",
                "--patch",
                "40,40,40",
                "--base-features",
                "12",
                "--epochs",
                "30",
                "--iters-per-epoch",
                "50",
                "--seed",
                "0",
            ],
            env,
        )

    from glioseg.infer.models import find_members
    from glioseg.models.checkpoint import canonical_state_dict, save_model

    (member,) = find_members(work / "run").members
    network = member.load("cpu")
    state = {k: v.half() if v.is_floating_point() else v for k, v in canonical_state_dict(network).items()}
    info = json.loads((work / "run" / "model.json").read_text())
    for key in ("format", "versions"):
        info.pop(key, None)
    previous = ASSETS / "model.json"
    if args.export_only and previous.exists():
        info["wall_time_s"] = json.loads(previous.read_text()).get("wall_time_s")
    info["purpose"] = (
        "Demonstration model trained by glioseg on synthetic phantoms (scripts/make_demo_model.py); "
        "not for clinical use and not a BraTS model."
    )
    info["trained_on"] = "24 synthetic cases (12 adult, 12 ssa; glioseg synth --seed 7)"
    info["weights_dtype"] = "float16"
    if not args.export_only:
        info["wall_time_s"] = round(time.time() - t0)
    ASSETS.mkdir(parents=True, exist_ok=True)
    save_model(state, info, ASSETS / "model")
    shutil.copy(work / "run" / "training_curve.png", ASSETS / "training_curve.png")
    from glioseg.models.catalog import read_card, write_card

    write_card(ASSETS, read_card(ASSETS).doc)  # the card's checksums follow the new weights
    print(
        f"demo model -> {ASSETS} ({(ASSETS / 'model.safetensors').stat().st_size / 1e6:.1f} MB) in {time.time() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
