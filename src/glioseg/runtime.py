"""Process-wide runtime settings: transparent huge pages for PyTorch's large CPU tensors.

A whole-crop pass of the BraTS nnU-Net allocates and frees dozens of 0.5-1 GB tensors (each
convolution's output and oneDNN's layout copies).  glibc serves each from fresh ``mmap``-ed
memory, so every pass faults in ~14 GB page by page: on this project's 2-core CPU, 3.6 million
minor page faults and ~14 s of kernel time in a 29 s pass.  PyTorch backs allocations of 2 MB
and more with transparent huge pages when ``THP_MEM_ALLOC_ENABLE=1`` (it ``madvise``-s them), which
cuts the faults ~70x; measured with ``benchmarks/cpu_inference.py --modes fast``: 31.5-34.2 s ->
27.1-28.6 s per case, same peak memory (docs/performance.md).

PyTorch reads the variable once, at its first large allocation, so :func:`request_huge_pages`
must run before that; the ``glioseg`` command calls it first thing.  Where the kernel has
transparent huge pages switched off (``/sys/kernel/mm/transparent_hugepage/enabled`` reads
``[never]``) the request changes nothing.
"""

from __future__ import annotations

import os

VARIABLE = "THP_MEM_ALLOC_ENABLE"


def request_huge_pages() -> bool:
    """Set ``THP_MEM_ALLOC_ENABLE=1`` unless the user has set it; True when huge pages are now requested.

    Examples
    --------
    >>> request_huge_pages() == (os.environ[VARIABLE] == "1")
    True
    """
    os.environ.setdefault(VARIABLE, "1")
    return os.environ[VARIABLE] == "1"
