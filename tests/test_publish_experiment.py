"""scripts/publish_experiment.py copies a finished run's report files, and refuses machine paths."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "docs" / "results" / "small"


def _script():
    spec = importlib.util.spec_from_file_location(
        "publish_experiment", ROOT / "scripts" / "publish_experiment.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_publishing_a_run_copies_its_report_files(tmp_path):
    dest = tmp_path / "real"
    written = _script().publish(SMALL, dest)
    assert {p.name for p in written} == {
        "report.md",
        "report.html",
        "results.json",
        "experiment.json",
        "figures",
    }
    for name in ("report.md", "results.json"):
        assert (dest / name).read_bytes() == (SMALL / name).read_bytes()
    assert sorted(p.name for p in (dest / "figures").iterdir()) == sorted(
        p.name for p in (SMALL / "figures").iterdir()
    )
    _script().publish(SMALL, dest)  # again: replaces, leaves no staging folder behind
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in written)


def test_a_machine_path_or_an_unfinished_run_writes_nothing(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(SMALL, run)
    (run / "report.md").write_text("trained in /home/someone/exp\n")
    with pytest.raises(SystemExit, match="report.md: names a machine folder"):
        _script().publish(run, tmp_path / "dest")
    (run / "results.json").unlink()
    with pytest.raises(SystemExit, match="no results.json"):
        _script().publish(run, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
