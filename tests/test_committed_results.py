"""Committed results and docs name no folder of the machine they were made on."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|home|Users|root|tmp|mnt|scratch)/[\w.-]+")
#: Guides may tell the reader to use a scratch folder (``--out /tmp/official``); generated files may not.
GUIDE_PATH = re.compile(r"(?<![\w.])/(?:work|home|Users|root|mnt)/[\w.-]+")


def _tracked(*patterns: str) -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / p for p in out.splitlines() if p.endswith((".md", ".html", ".json", ".csv", ".txt"))]


@pytest.mark.parametrize(
    ("patterns", "pattern"),
    [
        (("docs/results", "release", "benchmarks/results", "checkpoints"), MACHINE_PATH),
        (("docs", "README.md"), GUIDE_PATH),
    ],
    ids=["generated", "guides"],
)
def test_no_machine_paths_in_committed_results_and_docs(patterns, pattern):
    files = _tracked(*patterns)
    assert files, f"no committed files under {patterns}"
    leaks = [
        f"{p.relative_to(ROOT)}: {m.group(0)}"
        for p in files
        for m in pattern.finditer(p.read_text(encoding="utf-8", errors="replace"))
    ]
    assert not leaks, leaks[:10]


def test_the_pattern_finds_a_machine_path():
    assert MACHINE_PATH.search("source `/work/exp-small2/data/source`")
    assert not MACHINE_PATH.search("glioseg degrade ../shared/data/brats2018 --out degraded")
