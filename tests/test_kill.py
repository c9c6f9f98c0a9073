"""Killed outright (SIGKILL, as by the OOM killer or a cluster's time limit): glioseg predict and
glioseg train leave no partial output, and a resumed training ends with exactly the weights of a run
that was never interrupted (CPU, fixed seed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from safetensors.numpy import load_file

from glioseg.data.synthetic import generate_cohort

from .conftest import write_random_model

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
for _name in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID"):
    ENV.pop(_name, None)


def _glioseg(*args) -> list[str]:
    return [sys.executable, "-m", "glioseg", *map(str, args)]


def _run_and_kill(command: list[str], ready, timeout: float = 300) -> bool:
    """Start ``command``, SIGKILL it as soon as ``ready()`` holds; False when it finished first."""
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None:
            if ready():
                process.send_signal(signal.SIGKILL)
                process.wait()
                return True
            if time.monotonic() > deadline:
                raise TimeoutError(command)
            time.sleep(0.01)
        return False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _visible(folder: Path) -> list[Path]:
    """Files a reader sees: none that is hidden or inside a hidden (staging) folder."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill") / "data"
    generate_cohort(root, 4, "adult", seed=4, shape=(48, 48, 40), spacing=4.0)
    return root


def test_killed_predict_leaves_only_whole_outputs_and_a_rerun_completes(data, tmp_path):
    model = write_random_model(tmp_path / "model")
    command = _glioseg("predict", data, "--model", model, "--mode", "fast")
    reference = tmp_path / "reference"
    subprocess.run([*command, "--out", reference], env=ENV, check=True, capture_output=True)
    expected = {p.name: p.read_bytes() for p in _visible(reference)}
    assert len([n for n in expected if n.endswith(".nii.gz")]) == 4

    for point, ready in (
        ("first output", lambda out: any(out.glob("*.nii.gz"))),
        ("first temporary file", lambda out: any(out.glob(".*.part*"))),
    ):
        out = tmp_path / point.replace(" ", "-")
        killed = _run_and_kill(
            [*command, "--out", out], lambda out=out, ready=ready: out.is_dir() and ready(out)
        )
        if not killed and point == "first temporary file":
            # On a fast machine a temporary file can live for less than the 10 ms polling interval
            # and the run ends unseen: leave the file a writer killed at that point leaves behind,
            # so that the rerun below still has to clear it.
            out.mkdir(exist_ok=True)
            first = sorted(n for n in expected if n.endswith(".nii.gz"))[0]
            (out / f".{first}.killed.part.nii.gz").write_bytes(b"half a file")
        else:
            assert killed, f"predict finished before the {point} could be seen"
        for path in _visible(out):  # whatever is visible is whole: a finished file of an uninterrupted run
            assert ".part" not in path.name and path.name in expected, path
            if path.name.endswith(".nii.gz"):
                assert path.read_bytes() == expected[path.name], path
                assert np.asarray(nib.load(str(path)).dataobj).shape == (48, 48, 40)
                assert (out / path.name.replace(".nii.gz", ".json")).is_file(), (
                    "a label map without its sidecar"
                )
            else:  # the provenance sidecar (it records the date, so it is not byte-identical)
                assert json.loads(path.read_text())["format"], path
        # the same command again completes the batch and clears what the killed run was writing
        subprocess.run([*command, "--out", out], env=ENV, check=True, capture_output=True)
        assert not list(out.glob(".*.part*"))
        assert {p.name: p.read_bytes() for p in _visible(out)}.keys() == expected.keys()
        for path in _visible(out):
            if path.name.endswith(".nii.gz"):
                assert path.read_bytes() == expected[path.name], path


def test_killed_training_resumes_to_bit_identical_weights(data, tmp_path):
    base = _glioseg(
        "train", data, "--model", "nnunet", "--epochs", "3", "--iters-per-epoch", "2", "--patch", "32,32,32"
    )
    base += ["--base-features", "4", "--spacing", "4", "--seed", "7", "--accelerator", "cpu"]
    whole = tmp_path / "whole"
    subprocess.run([*base, "--out", whole], env=ENV, check=True, capture_output=True)
    expected = load_file(str(whole / "model.safetensors"))

    for point, ready in (
        ("first checkpoint", lambda run: (run / "checkpoints" / "last.safetensors").exists()),
        ("second epoch's log", lambda run: "\n1," in _read(run / "logs" / "csv" / "metrics.csv")),
    ):
        run = tmp_path / point.replace(" ", "-").replace("'", "")
        killed = _run_and_kill([*base, "--out", run], lambda run=run, ready=ready: ready(run))
        assert killed, f"training finished before the {point} could be seen"
        assert not (run / "model.safetensors").exists()
        assert [p for p in _visible(run) if ".part" in p.name] == []
        subprocess.run([*base, "--out", run, "--resume"], env=ENV, check=True, capture_output=True)
        assert not list(run.rglob(".*.part*"))
        resumed = load_file(str(run / "model.safetensors"))
        assert resumed.keys() == expected.keys()
        different = [k for k in expected if not np.array_equal(expected[k], resumed[k])]
        assert different == [], (
            f"killed at the {point}: {len(different)} tensor(s) differ, e.g. {different[:3]}"
        )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
