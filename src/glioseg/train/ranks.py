"""Which process of a multi-process (DDP) training this is, known before ``torch.distributed`` starts.

Lightning's launcher (``--devices N`` without an external launcher) runs the same command line again
in N-1 more processes; torchrun and SLURM start every process themselves. Only the primary process
(global rank 0) checks and prepares the run folder and writes outputs; the others wait for the run it
recorded and join the training with the same plan, split and cache.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from glioseg.errors import InputError

#: Environment variables that launchers set to a process's rank: torchrun (RANK, LOCAL_RANK,
#: GROUP_RANK), Lightning's launcher (LOCAL_RANK, NODE_RANK) and SLURM (SLURM_PROCID).
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def launcher_rank() -> int:
    """The largest rank any launcher variable gives this process; 0 for the primary (or a lone) process."""
    ranks = [0]
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            ranks.append(int(value))
    return max(ranks)


def is_primary_process(world_size: int) -> bool:
    """True for the process that owns the run folder: always in a one-process run, else rank 0."""
    return world_size <= 1 or launcher_rank() == 0


def await_run_record(out: Path, options: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
    """The ``run.json`` that the primary process writes for these ``options`` (after preprocessing and
    planning), waited for; a record for other options is another run's, and keeps this one waiting."""
    timeout_s = float(os.environ.get("GLIOSEG_RANK_WAIT_S", 24 * 3600)) if timeout_s is None else timeout_s
    run_json = Path(out) / "run.json"
    wanted = json.loads(json.dumps(options))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            record = json.loads(run_json.read_text())
        except (OSError, ValueError):
            record = None
        if record is not None and record.get("options") == wanted:
            return record
        if time.monotonic() > deadline:
            raise InputError(
                run_json, f"rank {launcher_rank()} waited {timeout_s:g} s for rank 0 to start this run"
            )
        time.sleep(0.5)
