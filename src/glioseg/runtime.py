"""Process-wide runtime settings: transparent huge pages for PyTorch's large CPU tensors.

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
