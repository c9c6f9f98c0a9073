"""The command line: help texts, synth, preview, demo and one-line errors."""

import re

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from glioseg.cli import app

runner = CliRunner()


def _commands() -> list[str]:
    """Every command line: top-level commands, command groups (sub-apps), and the commands of each group."""
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    for group in app.registered_groups:
        names.append(group.name)
        names += [
            f"{group.name} {c.name or c.callback.__name__}" for c in group.typer_instance.registered_commands
        ]
    return names


def test_help_lists_every_command_with_a_description():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in _commands():
        if " " not in name:
            assert re.search(rf"{name}\s+\S+", result.output), name
    assert any(" " in name for name in _commands())  # groups and their commands are covered too


@pytest.mark.parametrize("name", _commands())
def test_every_command_help_has_an_example(name):
    result = runner.invoke(app, [*name.split(), "--help"])
    assert result.exit_code == 0
    assert "Example: glioseg " + name in result.output.replace("\n", " ").replace("  ", " ")


def test_synth_and_preview(tmp_path):
    result = runner.invoke(
        app,
        [
            "synth",
            str(tmp_path / "d"),
            "-n",
            "2",
            "--domain",
            "ssa",
            "--seed",
            "3",
            "--shape",
            "40,40,32",
            "--spacing",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    folders = sorted((tmp_path / "d").iterdir())
    assert [f.name for f in folders] == ["SynSSA-s3-0001", "SynSSA-s3-0002"]
    png = tmp_path / "p.png"
    result = runner.invoke(app, ["preview", str(folders[0]), "--out", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_preview_error_is_one_line_and_names_the_file(tmp_path):
    runner.invoke(app, ["synth", str(tmp_path / "d"), "-n", "1", "--shape", "40,40,32", "--spacing", "4"])
    case = tmp_path / "d" / "SynGLI-s0-0001"
    bad = case / "SynGLI-s0-0001-t1c.nii.gz"
    img = nib.load(bad)
    data = img.get_fdata()
    data[10, 10, 10] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), bad)
    result = runner.invoke(app, ["preview", str(case), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(bad) in lines[0].replace(" ", "") or str(bad) in "".join(lines)
    assert "NaN" in result.output
    assert not (tmp_path / "x.png").exists()


def test_bad_shape_option():
    result = runner.invoke(app, ["synth", "out", "--shape", "64,abc"])
    assert result.exit_code != 0
    assert "--shape" in result.output


def test_train_and_finetune_declare_their_shared_options_once():
    """Options both commands have are one declaration: same flag, default and help (they had drifted)."""
    import typer

    group = typer.main.get_command(app)
    params = {name: {p.name: p for p in group.commands[name].params} for name in ("train", "finetune")}
    shared = set(params["train"]) & set(params["finetune"])
    assert {
        "splits",
        "fold",
        "seed",
        "cache",
        "resume",
        "mirror_consistency",
        "low_quality_augment",
    } <= shared
    differ = {"data", "out", "model", "epochs", "lr", "batch_size"}  # meant to differ (defaults or meaning)
    for name in sorted(shared - differ):
        train, finetune = params["train"][name], params["finetune"][name]
        assert (train.opts, train.default, train.help) == (finetune.opts, finetune.default, finetune.help), (
            name
        )


def test_version_and_messages_keep_square_brackets(tmp_path):
    """Error text is printed verbatim, never read as console markup ('glioseg[bench]' lost its brackets)."""
    from glioseg._version import __version__

    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.strip() == f"glioseg {__version__}"
    missing = tmp_path / "case[1].nii.gz"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--pred",
            str(missing),
            "--gt",
            str(tmp_path / "gt.nii.gz"),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {missing}: prediction not found"


@pytest.mark.parametrize("name", _commands())
def test_help_shows_flags_as_flags(name):
    """A boolean option is a flag (``--report``, ``--report/--no-report``) that takes no value, so help must
    not label it ``<bool>`` as if ``--report true`` were the way to use it (typer's rich help did)."""
    result = runner.invoke(app, [*name.split(), "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "--help" in result.output and "<bool>" not in result.output
    import typer.main

    command = typer.main.get_command(app)
    for part in name.split():
        command = command.commands[part]
    for param in command.params:  # every yes/no option is a flag: help and parsing agree
        if param.type_descriptor.annotation is bool:
            assert param.is_flag, param.opts
