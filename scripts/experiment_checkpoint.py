"""Save an unfinished ``glioseg experiment transfer`` run compactly (for committing), and restore it.

Usage::

    python scripts/experiment_checkpoint.py save RUN DEST [--log FILE]
    python scripts/experiment_checkpoint.py restore DEST RUN [--log FILE]

The real-anatomy comparison takes several CPU hours, more than one work session, and a session
keeps only what is committed. ``save`` copies what the rest of the run needs and nothing it can
remake:

- kept: ``experiment.json``, the splits, every finished pre-trained model (its weights are
  float16, :meth:`glioseg.experiment.transfer.Experiment.pretrain`), every finished fold's record
  (run and model descriptions, metrics, training curve), out-of-fold labels, scores, and the
  ensemble and post-processing records;
- dropped: ``data/`` (the degraded copies of real cases are patient images; they are remade
  deterministically), ``cache/``, training checkpoints (``*.ckpt``), an unfinished pre-training
  or fold (it starts again: its checkpoint is larger than finished weights), the weights of a
  fold whose held-out cases are predicted already, and out-of-fold probabilities unless the
  CV-weighted ensemble still has to read them (those of its members, until it is made).

``restore`` copies a checkpoint into ``RUN`` (refusing one that holds an experiment already);
rerunning the experiment's command with ``--out RUN`` then continues it.  ``--log`` saves or
restores the run's log beside it.  Saved text files show paths under the current folder relative
to it (prediction sidecars name their inputs by absolute path, library warnings their files).
Both stage their copy and swap it in, so an interrupted save leaves the previous checkpoint
whole.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from glioseg.data.io import swap_folder
from glioseg.experiment.real import ENSEMBLE_MEMBERS
from glioseg.train.crossval import predicted_out_of_fold

#: Remade by the run itself: cohorts (patient images) and preprocessing caches.
REMADE = ("data", "cache")
LOG_NAME = "run.log"
#: Text files whose absolute paths under the current folder a saved copy shows relative to it.
TEXT = (".json", ".csv", ".log", ".txt", ".md", ".yaml")


def _run_folder(run: Path, rel: Path) -> Path | None:
    """The training run (a folder with ``run.json``) that ``rel`` lies in, if any."""
    for depth in range(len(rel.parts) - 1, 0, -1):
        folder = run.joinpath(*rel.parts[:depth])
        if (folder / "run.json").is_file():
            return folder
    return None


def _fold_predicted(fold: Path) -> bool:
    """Every held-out case of a finished CV fold has its out-of-fold label map (written last)."""
    held_out = json.loads((fold / "run.json").read_text())["split"]["val"]
    return all(predicted_out_of_fold(fold.parent / "oof", c) for c in held_out)


def _keep(run: Path, rel: Path) -> bool:
    """Whether the rest of the run needs the file ``run/rel``."""
    if rel.parts[0] in REMADE or rel.suffix == ".ckpt" or "checkpoints" in rel.parts:
        return False
    training = _run_folder(run, rel)
    if training is not None:
        if not (training / "model.json").is_file():
            return False  # unfinished: restarts
        if rel.name == "model.safetensors" and rel.parts[0] == "cv" and _fold_predicted(training):
            return False
    if rel.name.endswith("_probabilities.npz") and rel.parts[0] == "cv" and len(rel.parts) == 4:
        member = rel.parts[1] in ENSEMBLE_MEMBERS
        return member and not (run / "ensemble" / "weights.json").is_file()
    return True


def checkpoint_files(run: Path) -> list[Path]:
    """The files of ``run`` (relative paths) that a checkpoint keeps."""
    files = [p.relative_to(run) for p in sorted(run.rglob("*")) if p.is_file() and not p.is_symlink()]
    return [rel for rel in files if _keep(run, rel)]


def _copy_staged(files: list[tuple[Path, Path]], dest: Path, replace: bool) -> None:
    """Copy ``(source, relative target)`` pairs into ``dest`` through a staging folder beside it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        for source, rel in files:
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, staging / rel)
        if replace or not dest.exists():
            swap_folder(staging, dest)
        else:  # restore into an existing (empty of experiments) folder: merge
            for _, rel in files:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                (staging / rel).replace(dest / rel)
            shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def save(run: Path, dest: Path, log: Path | None = None) -> list[Path]:
    """Write the checkpoint of ``run`` to ``dest`` (replacing an earlier one); its files, relative."""
    if not (run / "experiment.json").is_file():
        raise SystemExit(f"{run}: no experiment.json (not a glioseg experiment folder)")
    files = [(run / rel, rel) for rel in checkpoint_files(run)]
    if log is not None:
        files.append((log, Path(LOG_NAME)))
    here = f"{Path.cwd().resolve()}/"
    with tempfile.TemporaryDirectory() as tmp:
        for i, (source, rel) in enumerate(files):
            # prediction sidecars name their inputs, and library warnings their files, by absolute
            # path: a committed copy shows them relative to the current folder
            if rel.suffix in TEXT and here in (text := source.read_text(encoding="utf-8", errors="replace")):
                portable = Path(tmp) / str(i) / rel.name
                portable.parent.mkdir()
                portable.write_text(text.replace(here, ""), encoding="utf-8")
                files[i] = (portable, rel)
        _copy_staged(files, dest, replace=True)
    return [rel for _, rel in files]


def restore(checkpoint: Path, run: Path, log: Path | None = None) -> list[Path]:
    """Copy the checkpoint into ``run`` (which must not hold an experiment); its files, relative."""
    if not (checkpoint / "experiment.json").is_file():
        raise SystemExit(f"{checkpoint}: no experiment.json (not an experiment checkpoint)")
    if (run / "experiment.json").exists():
        raise SystemExit(f"{run}: holds an experiment already; restore into a new folder")
    files = [(p, p.relative_to(checkpoint)) for p in sorted(checkpoint.rglob("*")) if p.is_file()]
    kept = [(p, rel) for p, rel in files if rel != Path(LOG_NAME)]
    _copy_staged(kept, run, replace=False)
    if log is not None and (checkpoint / LOG_NAME).is_file():
        if log.exists():
            raise SystemExit(f"{log}: exists; not overwritten")
        shutil.copy2(checkpoint / LOG_NAME, log)
    return [rel for _, rel in kept]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    for action, first, second in (("save", "run", "dest"), ("restore", "checkpoint", "run")):
        p = sub.add_parser(action)
        p.add_argument(first, type=Path)
        p.add_argument(second, type=Path)
        p.add_argument("--log", type=Path, default=None, help="the run's log file")
    args = parser.parse_args()
    if args.action == "save":
        files = save(args.run, args.dest, args.log)
        size = sum((args.dest / rel).stat().st_size for rel in files)
        print(f"saved {len(files)} files ({size / 1e6:.1f} MB) of {args.run} -> {args.dest}")
    else:
        files = restore(args.checkpoint, args.run, args.log)
        print(f"restored {len(files)} files -> {args.run}", file=sys.stdout)


if __name__ == "__main__":
    main()
