"""Multi-process (DDP) training on the CPU: Lightning's launcher runs the command again in a second
process, which must join the run that the first one prepared instead of refusing its folder."""

import os
import subprocess
import sys

import pytest
import torch

from glioseg.data.preprocess import PreprocessedCache
from glioseg.data.synthetic import generate_cohort
from glioseg.errors import ConfigError
from glioseg.train.crossval import cross_validate
from glioseg.train.data import PatchDataset
from glioseg.train.ranks import RANK_VARIABLES, is_primary_process
from glioseg.train.run import TrainOptions


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp") / "data"
    generate_cohort(root, 4, "adult", seed=2, shape=(48, 48, 40), spacing=4.0)
    return root


@pytest.mark.slow
def test_two_cpu_processes_train_one_model(data, tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in RANK_VARIABLES}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    command = [sys.executable, "-m", "glioseg", "train", str(data), "--model", "nnunet", "--out", str(out)]
    command += ["--epochs", "2", "--iters-per-epoch", "3", "--devices", "2", "--accelerator", "cpu"]
    command += ["--patch", "32,32,32", "--base-features", "4", "--spacing", "4", "--seed", "1"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "already holds a run" not in output and "Traceback" not in output
    assert done.stdout.count("model -> ") == 1  # rank 0 reports, the other process stays quiet
    assert (out / "model.safetensors").exists() and (out / "model.json").exists()
    lines = (out / "logs" / "csv" / "metrics.csv").read_text().splitlines()
    assert sum(1 for line in lines[1:] if line.split(",")[0] != "") >= 2  # both epochs were logged
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "checkpoints",
            "fingerprint.json",
            "logs",
            "model.json",
            "model.safetensors",
            "plan.json",
            "preprocessed",
            "run.json",
            "training_curve.png",
        ]
    )


def test_only_rank_zero_owns_the_run(monkeypatch):
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert is_primary_process(2)
    monkeypatch.setenv("LOCAL_RANK", "0")  # what Lightning's launcher sets in the first process
    monkeypatch.setenv("NODE_RANK", "0")
    assert is_primary_process(2)
    for name in RANK_VARIABLES:
        monkeypatch.setenv(name, "1")
        assert not is_primary_process(2), name
        assert is_primary_process(1), name  # a one-process run owns its folder whatever the environment
        monkeypatch.setenv(name, "0")


def test_each_process_oversamples_tumour_in_its_own_batches(data, tmp_path):
    """Lightning's sampler deals index i to process i % 2; every process's batch of two must still have
    one patch centred on tumour (counting positions over all indices gave one process none)."""
    from glioseg.data.cases import discover_cases

    cache = PreprocessedCache(tmp_path / "cache", (4.0, 4.0, 4.0))
    cases = discover_cases(data).cases[:2]
    for case in cases:
        cache.ensure(case)
    ids = [c.case_id for c in cases]
    ds = PatchDataset(
        cache, ids, (32, 32, 32), samples_per_epoch=16, batch_size=2, augment=False, processes=2
    )
    for rank in range(2):
        mine = list(range(rank, 16, 2))
        batches = [mine[i : i + 2] for i in range(0, len(mine), 2)]
        assert all([ds.forces_foreground(i) for i in batch] == [False, True] for batch in batches)
    assert torch.equal(ds[3]["image"], ds[3]["image"])


def test_cross_validation_on_several_devices_is_refused_before_any_work(data, tmp_path):
    splits = tmp_path / "splits.json"
    splits.write_text('[{"train": ["a"], "val": ["b"]}]')
    options = TrainOptions(
        data=str(data), model="nnunet", out=str(tmp_path / "cv"), splits=str(splits), fold="all", devices=2
    )
    with pytest.raises(ConfigError, match="--fold 0"):
        cross_validate(options)
    assert not (tmp_path / "cv").exists()
