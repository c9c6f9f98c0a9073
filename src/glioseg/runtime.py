"""Process-wide runtime settings: how PyTorch's large CPU tensors get their memory.

A whole-crop pass of the BraTS nnU-Net allocates and frees dozens of 0.5-1 GB tensors (each
convolution's output and oneDNN's layout copies).  glibc serves each from fresh ``mmap``-ed
memory, so every pass faults its memory in page by page, which costs a large share of the pass
in kernel time.  PyTorch backs allocations of 2 MB and more with transparent huge pages when
``THP_MEM_ALLOC_ENABLE=1`` (it ``madvise``-s them), so glioseg asks for them: fewer faults, a
faster pass, the same peak memory (measured in docs/performance.md, "Levers measured").

PyTorch reads the variable once, at its first large allocation, so :func:`request_huge_pages`
must run before that; the ``glioseg`` command calls it first thing.  Where the kernel has
transparent huge pages switched off (``/sys/kernel/mm/transparent_hugepage/enabled`` reads
``[never]``) the request changes nothing.

Training goes one step further (:func:`keep_freed_memory`): every iteration allocates and frees
the same large tensors, so glioseg tells glibc to serve them from its heap and keep freed memory
for the next iteration instead of returning it to the kernel, which then has to fault and zero
it again; docs/performance.md ("glibc's heap for training") measures what that buys.  The price
is memory: the process keeps its peak until it ends, and aligned allocations fragment the heap
(up to about twice the peak of a run that returns memory), so training asks for it only when
told to (``glioseg train --reuse-memory``), and servers never do.
"""

from __future__ import annotations

import ctypes
import os

VARIABLE = "THP_MEM_ALLOC_ENABLE"
MALLOC_VARIABLES = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
_M_TRIM_THRESHOLD = -1  # mallopt parameters of glibc's <malloc.h>
_M_MMAP_MAX = -4


def request_huge_pages() -> bool:
    """Set ``THP_MEM_ALLOC_ENABLE=1`` unless the user has set it; True when huge pages are now requested.

    Examples
    --------
    >>> request_huge_pages() == (os.environ[VARIABLE] == "1")
    True
    """
    os.environ.setdefault(VARIABLE, "1")
    return os.environ[VARIABLE] == "1"


def keep_freed_memory() -> bool:
    """Make glibc serve every allocation from its heap and keep freed memory for reuse.

    Calls ``mallopt(M_MMAP_MAX, 0)`` (no allocation gets its own ``mmap``, so freeing one does not
    hand its pages back) and ``mallopt(M_TRIM_THRESHOLD, 2**31 - 1)`` (the heap top is not trimmed
    below 2 GiB of free memory).  Allocations made afterwards reuse freed memory without page
    faults.  Does nothing, and returns False, where the C library is not glibc or where the user
    has set one of glibc's ``MALLOC_*`` variables (their choice wins); True when both settings
    took effect.  Process-wide and irreversible: call it in processes that train, not in servers.

    Examples
    --------
    >>> keep_freed_memory() in (True, False)  # doctest: +SKIP
    True
    """
    if any(name in os.environ for name in MALLOC_VARIABLES):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
