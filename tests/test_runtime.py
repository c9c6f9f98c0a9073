"""Process-wide runtime settings: transparent huge pages for PyTorch's large CPU tensors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from glioseg.runtime import VARIABLE, request_huge_pages

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def test_request_respects_the_users_choice(monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    assert request_huge_pages() and os.environ[VARIABLE] == "1"
    monkeypatch.setenv(VARIABLE, "0")
    assert not request_huge_pages() and os.environ[VARIABLE] == "0"


_FAULTS = """
import resource, sys
from glioseg.runtime import VARIABLE, request_huge_pages
import os
if sys.argv[1] == "on":
    request_huge_pages()
else:
    os.environ[VARIABLE] = "0"
import torch
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(64 * 2**20 // 4)  # 64 MiB: 16384 ordinary pages
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(
    not THP.exists() or "[madvise]" not in THP.read_text(),
    reason="needs transparent huge pages on request only (madvise): with 'always' both runs get them",
)
def test_huge_pages_cut_the_page_faults_of_a_large_tensor():
    def faults(mode: str) -> int:
        env = {k: v for k, v in os.environ.items() if k != VARIABLE}
        out = subprocess.run(
            [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True, env=env
        )
        return int(out.stdout.strip().splitlines()[-1])

    ordinary, huge = faults("off"), faults("on")
    assert ordinary > 10_000  # one fault per 4 kB page
    assert huge < ordinary / 8, (ordinary, huge)
