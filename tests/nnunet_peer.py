"""nnU-Net v2's side of the import test; run as a script in a subprocess by tests/test_nnunet_import_peer.py.

Usage: ``python tests/nnunet_peer.py DATASET_ID OUT.npz`` with ``nnUNet_raw``, ``nnUNet_preprocessed``
and ``nnUNet_results`` set (nnU-Net reads them when imported).  With nnunetv2's own code it
extracts the fingerprint, plans, preprocesses ``3d_fullres``, trains two models for one
iteration (region-based with the raw dataset.json; softmax with integer labels, as trainer
class ``nnUNetTrainerSoftmaxTest``) so that genuine ``checkpoint_final.pth`` files exist, and
writes a random input with both networks' outputs (nnU-Net's channel and axis order; the region
model's also in float64) to OUT.npz
(no pickle).  Kept out of the glioseg package: glioseg itself never imports nnunetv2.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

SOFTMAX_LABELS = {"background": 0, "edema": 1, "necrosis": 2, "enhancing tumor": 3}


def main() -> None:
    began = time.time()
    dataset_id, out_npz = int(sys.argv[1]), Path(sys.argv[2])
    import numpy as np
    import torch
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
        DatasetFingerprintExtractor,
    )
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments, preprocess
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_results
    from nnunetv2.run.run_training import get_trainer_from_args
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name

    torch.set_num_threads(1)
    # nnU-Net samples 10^8 foreground voxels for intensity statistics (used by CT normalisation only);
    # a few thousand keep the tiny dataset's fingerprint fast.
    extractor = DatasetFingerprintExtractor(dataset_id, 1, verbose=False)
    extractor.num_foreground_voxels_for_intensitystats = 10_000
    extractor.show_progress_bar = False
    extractor.run(overwrite_existing=True)
    plan_experiments([dataset_id])
    preprocess([dataset_id], configurations=("3d_fullres",), num_processes=(1,), show_progress_bar=False)
    print(f"planned and preprocessed in {time.time() - began:.1f} s", flush=True)

    os.environ["nnUNet_n_proc_DA"] = "0"  # single-threaded augmentation for the one training iteration
    name = convert_id_to_dataset_name(dataset_id)

    def train_one_iteration(trainer):
        trainer.num_epochs = 1
        trainer.num_iterations_per_epoch = 1
        trainer.num_val_iterations_per_epoch = 1
        trainer.run_training()  # writes fold_0/checkpoint_final.pth
        return trainer

    regions = train_one_iteration(
        get_trainer_from_args(str(dataset_id), "3d_fullres", 0, device=torch.device("cpu"))
    )
    plans = json.loads((Path(nnUNet_preprocessed) / name / "nnUNetPlans.json").read_text())
    dataset = json.loads((Path(nnUNet_preprocessed) / name / "dataset.json").read_text())
    softmax_json = {
        **{k: v for k, v in dataset.items() if k != "regions_class_order"},
        "labels": SOFTMAX_LABELS,
    }

    class nnUNetTrainerSoftmaxTest(nnUNetTrainer):  # its own results folder
        pass

    softmax = train_one_iteration(
        nnUNetTrainerSoftmaxTest(
            {**plans, "continue_training": False}, "3d_fullres", 0, softmax_json, torch.device("cpu")
        )
    )
    print(f"trained in {time.time() - began:.1f} s", flush=True)

    architecture = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    factor = np.prod(np.asarray(architecture["strides"]), axis=0)
    shape = [int(f * m) for f, m in zip(factor, (2, 3, 4), strict=True)]  # distinct sizes on every axis
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((1, 4, *shape), generator=generator)
    arrays = {"x": x.numpy()}

    # region model, as nnU-Net's own predictor builds and loads it from the results folder
    predictor = nnUNetPredictor(
        device=torch.device("cpu"), perform_everything_on_device=False, allow_tqdm=False
    )
    predictor.initialize_from_trained_model_folder(
        str(Path(nnUNet_results) / name / "nnUNetTrainer__nnUNetPlans__3d_fullres"), use_folds=(0,)
    )
    with torch.no_grad():
        arrays["regions"] = predictor.network.eval()(x).numpy()
        ds = regions.network.eval()(x)  # the trainer's network, deep supervision on
        arrays.update({f"regions_ds{i}": o.numpy() for i, o in enumerate(ds)})
        softmax.network.eval()
        arrays.update({f"softmax_ds{i}": o.numpy() for i, o in enumerate(softmax.network(x))})
        # in float64 too: float32 results differ by summation order once kernels are transposed
        arrays["regions_float64"] = predictor.network.double()(x.double()).numpy()
    np.savez(out_npz, **arrays)
    print(f"done in {time.time() - began:.1f} s", flush=True)


if __name__ == "__main__":  # nnU-Net's worker pools start processes with "spawn"
    main()
