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
    print(lines[0])  # with -s: the messages docs/data.md lists


# ---------------------------------------------------------------------------------------------------------
# Bad output locations: every command that writes, before any work.

#: command -> (arguments given the output path, whether the output is a folder)
WRITERS: dict[str, tuple[Callable[[Material, Path], list], bool]] = {
    "predict": (lambda m, o: ["predict", m.cohort, "--model", m.model, "--out", o, "--mode", "fast"], True),
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


# ---------------------------------------------------------------------------------------------------------
# Bad cases: one case of a batch corrupted in one way.


def _image(path: Path):
    import nibabel as nib

    return nib.load(str(path))


def _save(array, like, path: Path, affine=None) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, like.affine if affine is None else affine), str(path))


def _with_voxel(value):
    def corrupt(case: Path) -> Path:
        import numpy as np

        path = case / f"{case.name}-t1c.nii.gz"
        img = _image(path)
        data = np.asarray(img.dataobj, dtype=np.float32)
        data[10, 10, 10] = value
        _save(data, img, path)
        return path

    return corrupt


def _missing(case: Path) -> Path:
    (case / f"{case.name}-t2w.nii.gz").unlink()
    return case


def _duplicated(case: Path) -> Path:
    img = _image(case / f"{case.name}-t2w.nii.gz")
    _save(img.get_fdata().astype("float32"), img, case / f"{case.name}-t2w.nii")
    return case


def _truncated(case: Path) -> Path:
    path = case / f"{case.name}-t2f.nii.gz"
    path.write_bytes(path.read_bytes()[:300])
    return path


def _not_nifti(case: Path) -> Path:
    path = case / f"{case.name}-t1c.nii.gz"
    path.write_text("this is a text file, not a NIfTI image\n" * 20)
    return path


def _gzipped_not_nifti(case: Path) -> Path:
    import gzip

    path = case / f"{case.name}-t1c.nii.gz"
    path.write_bytes(gzip.compress(b"not an image header" * 40))
    return path


def _empty_file(case: Path) -> Path:
    path = case / f"{case.name}-t1n.nii.gz"
    path.write_bytes(b"")
    return path


def _all_zero(case: Path) -> Path:
    import numpy as np

    path = case / f"{case.name}-t2w.nii.gz"
    img = _image(path)
    _save(np.zeros(img.shape, np.float32), img, path)
    return path


def _four_d(case: Path) -> Path:
    import numpy as np

    path = case / f"{case.name}-t2w.nii.gz"
    img = _image(path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    _save(np.stack([data, data], axis=-1), img, path)
    return path


def _other_grid(case: Path) -> Path:
    import numpy as np

    path = case / f"{case.name}-t2f.nii.gz"
    img = _image(path)
    _save(np.asarray(img.dataobj, dtype=np.float32)[:-2], img, path)
    return path


def _other_affine(case: Path) -> Path:
    import numpy as np

    path = case / f"{case.name}-t2f.nii.gz"
    img = _image(path)
    affine = img.affine.copy()
    affine[:3, 3] += 6.0
    _save(np.asarray(img.dataobj, dtype=np.float32), img, path, affine)
    return path


def _label_values(case: Path) -> Path:
    import numpy as np

    path = case / f"{case.name}-seg.nii.gz"
    img = _image(path)
    data = np.asarray(img.dataobj).astype(np.uint8)
    data[5, 5, 5] = 7
    _save(data, img, path)
    return path


def _label_fraction(case: Path) -> Path:
    import numpy as np

    path = case / f"{case.name}-seg.nii.gz"
    img = _image(path)
    data = np.asarray(img.dataobj).astype(np.float32)
    data[5, 5, 5] = 0.5
    _save(data, img, path)
    return path


def _label_grid(case: Path) -> Path:
    import numpy as np

    path = case / f"{case.name}-seg.nii.gz"
    img = _image(path)
    _save(np.asarray(img.dataobj).astype(np.uint8)[:, :-3], img, path)
    return path


def _empty_folder(case: Path) -> Path:
    empty = case.parent / "EMPTY-CASE"
    empty.mkdir()
    return empty


#: kind -> (corruption of one case folder returning the path the message must name, the problem's words,
#: the commands it applies to). Image problems are found by every command that reads images;
#: label problems by those that read labels.
READERS = ("predict", "features", "preview", "train")
LABEL_READERS = ("evaluate", "features", "preview", "train")
CASE_KINDS: dict[str, tuple[Callable[[Path], Path], str, tuple[str, ...]]] = {
    "missing modality": (_missing, "missing modality t2w", (*READERS, "split")),
    "duplicated modality": (_duplicated, "two files claim modality t2w", READERS),
    "truncated gzip": (_truncated, "", READERS),
    "non-NIfTI file named .nii.gz": (_not_nifti, "", READERS),
    "gzip of something else": (_gzipped_not_nifti, "", READERS),
    "empty file": (_empty_file, "", READERS),
    "NaN voxels": (_with_voxel(float("nan")), "NaN", READERS),
    "Inf voxels": (_with_voxel(float("inf")), "Inf voxel", READERS),
    "all-zero image": (_all_zero, "all zero", READERS),
    "4-D image": (_four_d, "", READERS),
    "modality on another grid": (_other_grid, "", READERS),
    "modality with another affine": (_other_affine, "", READERS),
    "label with impossible values": (_label_values, "7", LABEL_READERS),
    "label with fractional values": (_label_fraction, "", LABEL_READERS),
    "label on another grid": (_label_grid, "", LABEL_READERS),
    "empty case folder": (_empty_folder, "empty folder", ("predict", "features", "train")),
}


def _case_command(command: str, m: Material, data: Path, bad_case: Path, out: Path) -> list:
    if command == "predict":
        return ["predict", data, "--model", m.model, "--out", out, "--mode", "fast"]
    if command == "features":
        return ["features", data, "--out", out / "features.csv", "--no-quality"]
    if command == "split":
        return ["split", data, "--folds", "2", "--out", out / "splits.json"]
    if command == "preview":
        return ["preview", bad_case, "--out", out / "preview.png"]
    if command == "evaluate":
        return ["evaluate", "--pred", m.preds, "--gt", data, "--out", out]
    assert command == "train"
    return WRITERS["train"][0](m, out)[:1] + [data] + WRITERS["train"][0](m, out)[2:]


CASE_CASES = [
    pytest.param(kind, command, id=f"{command}: {kind}")
    for kind, (_, _, commands) in CASE_KINDS.items()
    for command in commands
]


@pytest.mark.parametrize("kind,command", CASE_CASES)
def test_bad_case_is_one_line_and_the_others_are_done(kind, command, material, tmp_path):
    corrupt, problem, _ = CASE_KINDS[kind]
    data = tmp_path / "data"
    ids = sorted(p.name for p in material.cohort.iterdir() if p.is_dir())
    if command == "predict":  # inference is the slow part: one good case beside the bad one
        ids = ids[:2]
    for case_id in ids:
        shutil.copytree(material.cohort / case_id, data / case_id, symlinks=True)
    bad_case = data / ids[1]
    names = corrupt(bad_case)
    out = tmp_path / "out"
    before = _digest([data, *material.inputs()])
    result = runner.invoke(app, [str(a) for a in _case_command(command, material, data, bad_case, out)])
    check_one_error(result, names.name, problem)  # evaluate names the prediction and the label's file name
    assert _digest([data, *material.inputs()]) == before
    good = ids if kind == "empty case folder" else [i for i in ids if i != ids[1]]
    written = sorted(p.name for p in out.rglob("*")) if out.exists() else []
    assert not any(".part" in name for name in written), written
    if command == "predict":  # the batch goes on: the other cases are segmented, nothing of the bad one
        assert {f"{i}.nii.gz" for i in good} <= set(written)
        assert not any(name.startswith(ids[1]) for name in written) or kind == "empty case folder"
    elif command == "features":
        import pandas as pd

        table = pd.read_csv(out / "features.csv")
        assert sorted(table["case_id"]) == good
    elif command == "evaluate":
        import pandas as pd

        assert sorted(pd.read_csv(out / "per_case.csv")["case_id"].unique()) == good
    elif command == "split":  # no folds; the good cases' features, for 'glioseg split' on them alone
        assert written == ["splits.features.csv"], written
    else:  # one case or the whole cohort is needed: nothing at all is written
        assert written == [], written


# ---------------------------------------------------------------------------------------------------------
# Bad configuration files and options: one error before any work, nothing written.


def _garbage(tmp: Path, name: str, text: str = '{"not json": ') -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def _bad_prediction(m: Material, tmp: Path, change) -> tuple[Path, Path]:
    """A copy of the predictions where the second case's map is changed by ``change(array)``."""
    import nibabel as nib
    import numpy as np

    preds = tmp / "preds"
    shutil.copytree(m.preds, preds)
    path = sorted(preds.iterdir())[1]
    img = nib.load(str(path))
    data = change(np.asarray(img.dataobj).astype(np.uint8))
    nib.save(nib.Nifti1Image(data, img.affine), str(path))
    return preds, path


def _config_case(kind: str, command: str, m: Material, tmp: Path, out: Path):
    """(arguments, the text the error line must name, the problem's words, a batch's prediction folder)."""
    train = [str(a) for a in WRITERS["train"][0](m, out)]
    if kind == "unreadable splits JSON":
        bad = _garbage(tmp, "splits.json")
        return [*train, "--splits", bad, "--fold", "0"], bad, "unreadable", None
    if kind == "unreadable weights JSON":
        bad = _garbage(tmp, "weights.json")
        return [*WRITERS["predict"][0](m, out), "--weights", bad], bad, "unreadable", None
    if kind == "unreadable pp.json":
        bad = _garbage(tmp, "pp.json")
        if command == "predict":
            return [*WRITERS["predict"][0](m, out), "--postprocess", bad], bad, "", None
        return ["postprocess", "apply", m.preds, "--config", bad, "--out", out], bad, "", None
    if kind == "unreadable grid JSON":
        bad = _garbage(tmp, "grid.json")
        return [*WRITERS["postprocess tune"][0](m, out / "pp.json"), "--grid", bad], bad, "unreadable", None
    if kind == "unreadable cluster model":
        bad = _garbage(tmp, "clusters.model.json")
        return [*WRITERS["features"][0](m, out / "f.csv"), "--assign", bad], bad, "", None
    if kind == "feature table that is not a table":
        bad = _garbage(tmp, "features.csv", "\x00\x01 not, a\nfeature table\n")
        return ["split", bad, "--folds", "2", "--out", out / "splits.json"], bad, "", None
    if kind == "wrong --thresholds count":
        return [*WRITERS["predict"][0](m, out), "--thresholds", "0.5,0.5"], "--thresholds", "three", None
    if kind == "threshold out of (0, 1)":
        return [*WRITERS["predict"][0](m, out), "--thresholds", "2"], "thresholds", "(0, 1)", None
    if kind == "wrong --weights count":
        return [*WRITERS["predict"][0](m, out), "--weights", "0.5,0.5"], "--weights", "2 value(s)", None
    if kind == "unknown model name":
        if command == "train":
            return [*train[:3], "no-such-network", *train[4:]], "no-such-network", "", None
        return ["predict", m.cohort, "--model", "no-such-model", "--out", out], "no-such-model", "", None
    if kind == "folder that is not a model":
        empty = tmp / "not-a-model"
        empty.mkdir()
        if command == "finetune":
            return ["finetune", m.cohort, "--pretrained", empty, "--out", out], empty, "", None
        return ["predict", m.cohort, "--model", empty, "--out", out], empty, "", None
    if kind == "missing input":
        missing = tmp / "no-such-folder"
        args = {
            "predict": ["predict", missing, "--model", m.model, "--out", out],
            "evaluate": ["evaluate", "--pred", missing, "--gt", m.cohort, "--out", out],
            "features": ["features", missing, "--out", out / "f.csv"],
            "train": [train[0], missing, *train[2:]],
            "postprocess apply": ["postprocess", "apply", missing, "--config", m.pp, "--out", out],
        }[command]
        return args, missing, "not found", None
    if kind == "prediction on another grid":
        preds, path = _bad_prediction(m, tmp, lambda a: a[:-4])
        if command == "evaluate":
            return ["evaluate", "--pred", preds, "--gt", m.cohort, "--out", out], path, "shape", preds
        return (
            ["postprocess", "tune", "--pred", preds, "--gt", m.cohort, "--out", out / "pp.json"],
            path,
            "",
            preds,
        )
    assert kind == "prediction with impossible values"

    def seven(a):
        a[3, 3, 3] = 7
        return a

    preds, path = _bad_prediction(m, tmp, seven)
    if command == "evaluate":
        return ["evaluate", "--pred", preds, "--gt", m.cohort, "--out", out], path, "7", preds
    return ["postprocess", "apply", preds, "--config", m.pp, "--out", out], path, "7", preds


CONFIG_KINDS = {
    "unreadable splits JSON": ("train",),
    "unreadable weights JSON": ("predict",),
    "unreadable pp.json": ("predict", "postprocess apply"),
    "unreadable grid JSON": ("postprocess tune",),
    "unreadable cluster model": ("features",),
    "feature table that is not a table": ("split",),
    "wrong --thresholds count": ("predict",),
    "threshold out of (0, 1)": ("predict",),
    "wrong --weights count": ("predict",),
    "unknown model name": ("predict", "train"),
    "folder that is not a model": ("predict", "finetune"),
    "missing input": ("predict", "evaluate", "features", "train", "postprocess apply"),
    "prediction on another grid": ("evaluate", "postprocess tune"),
    "prediction with impossible values": ("evaluate", "postprocess apply"),
}


@pytest.mark.parametrize(
    "kind,command",
    [pytest.param(k, c, id=f"{c}: {k}") for k, commands in CONFIG_KINDS.items() for c in commands],
)
def test_bad_option_or_file_is_one_line(kind, command, material, tmp_path):
    out = tmp_path / "out"
    args, names, problem, batch = _config_case(kind, command, material, tmp_path, out)

    def inputs() -> dict[str, str]:
        return {
            k: v for k, v in _digest([*material.inputs(), tmp_path]).items() if not k.startswith(f"{out}/")
        }

    before = inputs()
    result = runner.invoke(app, [str(a) for a in args])
    check_one_error(result, str(names), problem)
    assert inputs() == before  # inputs untouched, nothing written beside the output
    if batch is None:
        assert not out.exists()
        return
    others = {p.name.split(".")[0] for p in batch.iterdir() if p.name != Path(str(names)).name}
    written = sorted(p.name for p in out.iterdir())
    assert not any(".part" in name or Path(str(names)).name == name for name in written), written
    if command == "postprocess apply":  # the batch goes on: the other maps are written
        assert {f"{i}.nii.gz" for i in others} == set(written)
    else:
        import pandas as pd

        table = out / ("per_case.csv" if command == "evaluate" else "pp.cases.csv")
        assert set(pd.read_csv(table)["case_id"]) == others


def test_a_killed_writers_temporary_file_is_not_a_prediction(material, tmp_path):
    """A SIGKILL in the middle of an atomic write leaves a hidden .<ID>.nii.gz.*.part.nii.gz file;
    evaluate and postprocess must not take it for the prediction of a case '.<ID>.nii.gz.*.part'."""
    preds = tmp_path / "preds"
    shutil.copytree(material.preds, preds)
    first = sorted(preds.iterdir())[0]
    shutil.copy(first, preds / f".{first.name}.k1ll3d.part.nii.gz")
    result = runner.invoke(
        app, ["evaluate", "--pred", str(preds), "--gt", str(material.cohort), "--out", str(tmp_path / "ev")]
    )
    assert result.exit_code == 0, result.output
    assert "unmatched" not in result.output and ".part" not in result.output
