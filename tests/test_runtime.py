"""Process-wide runtime settings: huge pages for large CPU tensors, glibc's heap kept for training."""

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


_REUSE = """
import ctypes, resource, sys
from glioseg.runtime import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def iteration(size=64 * 2**20):  # allocate, write and free 64 MiB, as a training step's activations
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
iteration()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):  # the next iterations allocate the same memory again
    iteration()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _reuse_faults(mode: str, **extra_env: str) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | extra_env
    out = subprocess.run(
        [sys.executable, "-c", _REUSE, mode], capture_output=True, text=True, check=True, env=env
    )
    kept, faults = out.stdout.strip().splitlines()[-1].split()
    return kept, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_is_reused_without_page_faults():
    _, returned = _reuse_faults("return")
    kept, reused = _reuse_faults("keep")
    assert kept == "True"
    assert returned > 4 * 10_000  # every allocation mapped afresh and faulted in page by page
    assert reused < 1_000, reused  # the freed heap memory is reused as it is


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_users_malloc_settings_win():
    kept, faults = _reuse_faults("keep", MALLOC_MMAP_MAX_="65536")
    assert kept == "False" and faults > 4 * 10_000
