"""Lightning callbacks: data epochs, non-pickle checkpoint I/O, epoch summaries and the training curve."""

from __future__ import annotations

import csv
import os
import random
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO

from glioseg.data.io import atomic_path
from glioseg.models.checkpoint import load_tree, save_tree


class SafeCheckpointIO(CheckpointIO):
    """Lightning checkpoint I/O through safetensors + JSON (see :mod:`glioseg.models.checkpoint`); never pickles."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        save_tree(checkpoint, path)

    def load_checkpoint(
        self, path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_tree(path, map_location)

    def remove_checkpoint(self, path) -> None:
        Path(path).unlink(missing_ok=True)


class SaveLast(L.Callback):
    """Write the full training state to ``path`` at the end of every training epoch (after validation)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            trainer.save_checkpoint(self.path, weights_only=False)


class DataEpoch(L.Callback):
    """Tell the patch dataset which epoch it is serving (its samples are keyed by it)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dataset.set_epoch(trainer.current_epoch)


class RandomState(L.Callback):
    """Save and restore the torch, NumPy and Python random states with the training checkpoint."""

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "numpy": [np_state[0], np_state[1], int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": _to_lists(random.getstate()),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        name, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        random.setstate(_to_tuples(state_dict["python"]))


def _to_lists(obj):
    return [_to_lists(v) for v in obj] if isinstance(obj, tuple | list) else obj


def _to_tuples(obj):
    return tuple(_to_tuples(v) for v in obj) if isinstance(obj, list | tuple) else obj


def _cpu_seconds() -> float:
    """CPU seconds (user + system) of this process, all its threads, and its reaped children (the
    data-loader workers of an epoch, which end with it)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class EpochSummary(L.Callback):
    """One line per epoch: loss, validation Dice, learning rate, time, ETA of the run.

    Also logs the epoch's wall seconds (``epoch_seconds``) and the CPU seconds it used
    (``epoch_cpu_seconds``; see :func:`training_time`), validation included, rank 0 only.
    """

    def __init__(self, printer=print):
        self.printer = printer
        self._start = 0.0
        self._cpu_start = 0.0
        self._durations: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._cpu_start = _cpu_seconds()
        self._lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        elapsed = time.perf_counter() - self._start
        pl_module.log("epoch_seconds", elapsed, rank_zero_only=True)
        pl_module.log("epoch_cpu_seconds", _cpu_seconds() - self._cpu_start, rank_zero_only=True)
        self._durations.append(elapsed)
        metrics = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        if "train_loss" in metrics:
            parts.append(f"loss {float(metrics['train_loss']):.4f}")
        if "val_dice_mean" in metrics:
            dice = " ".join(
                f"{r} {float(metrics[f'val_dice_{r}']):.3f}"
                for r in ("WT", "TC", "ET")
                if f"val_dice_{r}" in metrics
            )
            parts.append(f"val Dice {dice}")
        parts.append(f"lr {self._lr:.2e}")
        remaining = (trainer.max_epochs - trainer.current_epoch - 1) * float(np.mean(self._durations[-5:]))
        parts.append(f"{elapsed:.1f} s, ETA {_duration(remaining)}")
        self.printer("  ".join(parts))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {(seconds % 3600) // 60:02d} min"


class TrainingCurve(L.Callback):
    """Redraw ``training_curve.png`` in the run folder from the CSV log after every epoch."""

    def __init__(self, metrics_csv_dir: Path, out_png: Path):
        self.metrics_csv_dir = Path(metrics_csv_dir)
        self.out_png = Path(out_png)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank == 0 and not trainer.sanity_checking:
            for logger in trainer.loggers:
                logger.save()
            plot_training_curve(self.metrics_csv_dir, self.out_png)


# Lightning's CSV logger deletes ``logs/csv/metrics.csv`` when a run resumes in the same folder,
# which would lose every epoch logged before the checkpoint.  So a resumed run first stashes the
# rows logged so far in ``logs/history.csv`` and, when it finishes, writes ``metrics.csv`` back
# as one complete log; a run killed in between keeps its history for the next resume.
HISTORY_CSV = "history.csv"
METRICS_CSV = Path("csv") / "metrics.csv"


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def merge_metric_rows(earlier: list[dict[str, str]], later: list[dict[str, str]]) -> list[dict[str, str]]:
    """``earlier`` rows logged before the first step of ``later``, then ``later``'s rows.

    A resumed run restarts at its checkpoint, so rows of ``earlier`` from that step on (an epoch
    interrupted by the kill) are superseded by the resumed run's.

    Examples
    --------
    >>> merge_metric_rows([{"step": "39"}, {"step": "79"}], [{"step": "79"}, {"step": "119"}])
    [{'step': '39'}, {'step': '79'}, {'step': '119'}]
    """
    steps = [int(row["step"]) for row in later if row.get("step")]
    if not steps:
        return earlier + later
    first = min(steps)
    return [row for row in earlier if row.get("step") and int(row["step"]) < first] + later


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    keys = {key for row in rows for key in row}
    fields = [k for k in ("epoch", "step") if k in keys] + sorted(keys - {"epoch", "step"})
    with atomic_path(path) as part, part.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def stash_metrics_history(logs_dir: Path) -> None:
    """Before a resumed fit: keep the rows of ``logs_dir/csv/metrics.csv`` in ``logs_dir/history.csv``."""
    logs_dir = Path(logs_dir)
    rows = merge_metric_rows(_read_rows(logs_dir / HISTORY_CSV), _read_rows(logs_dir / METRICS_CSV))
    if rows:
        _write_rows(logs_dir / HISTORY_CSV, rows)


def restore_metrics_history(logs_dir: Path) -> None:
    """After a resumed fit: ``metrics.csv`` = the stashed history followed by this run's rows."""
    logs_dir = Path(logs_dir)
    history = logs_dir / HISTORY_CSV
    if history.is_file():
        _write_rows(
            logs_dir / METRICS_CSV, merge_metric_rows(_read_rows(history), _read_rows(logs_dir / METRICS_CSV))
        )
        history.unlink()


def read_metrics(csv_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``metric -> [(epoch, value), ...]`` from Lightning CSV logs (a stashed history first, then
    every version, in order; later rows win for the same epoch)."""
    series: dict[str, dict[int, float]] = {}
    history = [Path(csv_dir) / HISTORY_CSV] if (Path(csv_dir) / HISTORY_CSV).is_file() else []
    for path in history + sorted(Path(csv_dir).rglob("metrics.csv")):
        with path.open() as handle:
            for row in csv.DictReader(handle):
                if not row.get("epoch"):
                    continue
                epoch = int(float(row["epoch"]))
                for key, value in row.items():
                    if key in ("epoch", "step") or value in ("", None):
                        continue
                    series.setdefault(key, {})[epoch] = float(value)
    return {k: sorted(v.items()) for k, v in series.items()}


def training_time(csv_dir: Path) -> dict[str, float | int]:
    """How long the training of a run took, summed over the epochs its CSV logs time.

    ``wall_seconds`` counts every second an epoch was running, including any time the process
    was paused or shared the CPU; ``cpu_seconds`` counts only the CPU time the training process
    (all threads) and its data-loader workers used, so on an otherwise idle machine it is about
    ``wall_seconds`` times the threads kept busy. ``epochs_timed`` may be below the epochs
    trained when a run began before glioseg logged epoch times.

    >>> training_time("/nonexistent")
    {'epochs_timed': 0, 'wall_seconds': 0.0, 'cpu_seconds': 0.0}
    """
    series = read_metrics(Path(csv_dir))
    wall = series.get("epoch_seconds", [])
    cpu = series.get("epoch_cpu_seconds", [])
    return {
        "epochs_timed": len(wall),
        "wall_seconds": round(sum((v for _, v in wall), 0.0), 1),
        "cpu_seconds": round(sum((v for _, v in cpu), 0.0), 1),
    }


def plot_training_curve(csv_dir: Path, out_png: Path) -> Path | None:
    """Loss and validation Dice per epoch, written atomically; ``None`` when nothing was logged yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_metrics(csv_dir)
    if "train_loss" not in series:
        return None
    fig, ax1 = plt.subplots(figsize=(6, 3.6))
    epochs, losses = zip(*series["train_loss"], strict=True)
    ax1.plot([e + 1 for e in epochs], losses, color="black", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax2 = ax1.twinx()
    colours = {"WT": "tab:green", "TC": "tab:red", "ET": "tab:orange"}
    for region, colour in colours.items():
        key = f"val_dice_{region}"
        if key in series:
            e, v = zip(*series[key], strict=True)
            ax2.plot([x + 1 for x in e], v, marker="o", color=colour, label=f"val Dice {region}")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("validation Dice")
    handles = ax1.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax1.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax1.legend(handles, labels, loc="center right", fontsize=8)
    fig.tight_layout()
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(out_png)
