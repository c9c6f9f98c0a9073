"""A generated corpus of bad inputs and bad output locations, run through every command that reads
cases or writes outputs (issue 21).

For each kind, on each command it applies to: exit status not 0, exactly one ``error:`` line that
names the file and the problem, no traceback, no partial or empty output, the inputs byte-identical
afterwards, and in a batch the other cases done.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glioseg.cli import app

from .conftest import write_random_model

runner = CliRunner()


# ---------------------------------------------------------------------------------------------------------
# Shared, read-only material: a small cohort, predictions of it, a model, a feature table, a pp.json.


@dataclass
class Material:
    cohort: Path  # 4 labelled cases
    preds: Path  # <ID>.nii.gz for each case (the ground truth itself)
    model: Path  # a randomly initialised glioseg run
    features: Path  # glioseg features of the cohort
    pp: Path  # a post-processing configuration from glioseg postprocess tune

    def inputs(self) -> list[Path]:
        return [self.cohort, self.preds, self.model, self.features, self.pp]


@pytest.fixture(scope="module")
def material(small_cohort, tmp_path_factory) -> Material:
    root = tmp_path_factory.mktemp("material")
    preds = root / "preds"
    preds.mkdir()
    for case in sorted(p for p in small_cohort.iterdir() if p.is_dir()):
        shutil.copy(case / f"{case.name}-seg.nii.gz", preds / f"{case.name}.nii.gz")
    model = write_random_model(root / "model")
    features, pp = root / "features.csv", root / "pp.json"
    for args in (
        ["features", str(small_cohort), "--out", str(features), "--no-quality"],
        ["postprocess", "tune", "--pred", str(preds), "--gt", str(small_cohort), "--out", str(pp)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    return Material(small_cohort, preds, model, features, pp)


def _digest(paths: list[Path]) -> dict[str, str]:
    """Content hash of every file under ``paths`` (and the list of names, so an added file shows)."""
    digests = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            digests[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def check_one_error(result, names: str, problem: str) -> None:
    """Exit status 1 or 2, one ``error:`` line naming ``names`` with ``problem``, no traceback."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = _error_lines(result.output)
    assert len(lines) == 1, result.output
    assert names in lines[0] and problem in lines[0], lines[0]


# ---------------------------------------------------------------------------------------------------------
# Bad output locations: every command that writes, before any work.

#: command -> (arguments given the output path, whether the output is a folder)
WRITERS: dict[str, tuple[Callable[[Material, Path], list], bool]] = {
    "predict": (lambda m, o: ["predict", m.cohort, "--model", m.model, "--out", o, "--tta", "none"], True),
    "evaluate": (lambda m, o: ["evaluate", "--pred", m.preds, "--gt", m.cohort, "--out", o], True),
    "preview": (lambda m, o: ["preview", m.cohort / sorted(os.listdir(m.cohort))[0], "--out", o], False),
    "features": (lambda m, o: ["features", m.cohort, "--out", o, "--no-quality"], False),
    "split": (lambda m, o: ["split", m.features, "--folds", "2", "--out", o], False),
    "postprocess tune": (
        lambda m, o: ["postprocess", "tune", "--pred", m.preds, "--gt", m.cohort, "--out", o],
        False,
    ),
    "postprocess apply": (lambda m, o: ["postprocess", "apply", m.preds, "--config", m.pp, "--out", o], True),
    "train": (
        lambda m, o: [
            "train",
            m.cohort,
            "--model",
            "nnunet",
            "--out",
            o,
            "--epochs",
            "1",
            "--iters-per-epoch",
            "1",
            "--patch",
            "32,32,32",
            "--base-features",
            "4",
            "--spacing",
            "4",
        ],
        True,
    ),
    "finetune": (
        lambda m, o: ["finetune", m.cohort, "--pretrained", m.model, "--out", o, "--epochs", "1"],
        True,
    ),
    "synth": (lambda m, o: ["synth", o, "--cases", "1", "--shape", "40,40,32", "--spacing", "4"], True),
    "demo": (lambda m, o: ["demo", "--out", o], True),
    "degrade": (lambda m, o: ["degrade", m.cohort, "--out", o], True),
}


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this user cannot write into: read-only permissions, or (root ignores them) /sys."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def _output_location(kind: str, is_folder: bool, tmp_path: Path) -> tuple[Path, str, Path | None]:
    """(the output path to give, the expected problem, the path the message names or None for it)."""
    a_file = tmp_path / "taken.txt"
    a_file.write_text("not a folder\n")
    a_folder = tmp_path / "a-folder.json"
    a_folder.mkdir()
    if kind == "an existing file":
        return a_file, "exists and is a file; give a folder for the outputs", None
    if kind == "an existing folder":
        return a_folder, "is a folder; give a file name", None
    if kind == "inside a file":
        out = a_file / ("sub" if is_folder else "out.json")
        return out, f"{a_file} is a file", None
    assert kind == "a read-only folder"
    return _unwritable_folder(tmp_path) / ("out" if is_folder else "out.json"), "cannot write here", None


OUTPUT_CASES = [
    pytest.param(command, kind, id=f"{command}: output {kind}")
    for command, (_, is_folder) in WRITERS.items()
    for kind in (
        # preview --out takes a PNG or a folder for <ID>-preview.png
        *([] if command == "preview" else ["an existing file" if is_folder else "an existing folder"]),
        "inside a file",
        "a read-only folder",
    )
]


@pytest.mark.parametrize("command,kind", OUTPUT_CASES)
def test_bad_output_location_is_one_line_before_any_work(command, kind, material, tmp_path):
    build, is_folder = WRITERS[command]
    out, problem, _ = _output_location(kind, is_folder, tmp_path)
    before = _digest(material.inputs())
    listing = sorted(os.listdir(tmp_path))
    args = [str(a) for a in build(material, out)]
    result = runner.invoke(app, args)
    check_one_error(result, str(out), problem)
    assert result.output.strip() == _error_lines(result.output)[0]  # before any work: nothing else said
    assert sorted(os.listdir(tmp_path)) == listing  # nothing created beside it
    if out.parent.is_dir():
        assert not out.exists() or kind in ("an existing file", "an existing folder")
    assert _digest(material.inputs()) == before
