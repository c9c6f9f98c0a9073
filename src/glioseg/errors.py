"""Exceptions whose message is one line that names the offending file and the problem."""

from __future__ import annotations

from pathlib import Path


class GliosegError(Exception):
    """Base class of every error glioseg raises on purpose.

    ``str(error)`` is a single line fit for a terminal; the CLI prints it and
    exits non-zero without a traceback.
    """


class InputError(GliosegError):
    """A user-supplied file or folder is unusable.

    Parameters
    ----------
    path : path-like or str
        The file (or folder, or case ID) at fault.
    problem : str
        What is wrong, in a few words, without a trailing full stop.

    Examples
    --------
    >>> str(InputError("/data/case1/case1-t1n.nii.gz", "contains NaN voxels"))
    '/data/case1/case1-t1n.nii.gz: contains NaN voxels'
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")


class ConfigError(GliosegError):
    """An option, plan or configuration is inconsistent (raised before any work starts)."""
