"""``glioseg experiment transfer``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from glioseg.cli._common import console, reports_errors

experiment_app = typer.Typer(help="End-to-end experiments of the seed paper.", no_args_is_help=True)


class ScaleName(str, Enum):
    tiny = "tiny"
    small = "small"
    full = "full"
    real = "real"
    real_tiny = "real-tiny"


def transfer(
    out: Path = typer.Option(..., "--out", "-o", help="Experiment folder (rerun to resume)."),
    scale: ScaleName = typer.Option(
        ScaleName.tiny,
        help="tiny (CI, minutes), small (2-core CPU, ~90 min), full (paper, GPUs); with --real: "
        "real (2-core CPU, <= 6 h, resumable) or real-tiny (CI).",
    ),
    real: Path | None = typer.Option(
        None,
        help="Labelled real cases (e.g. ../shared/data/brats2018) to split into a clean source and a "
        "degraded target (scales real, real-tiny); replaces --source/--target/--test.",
    ),
    source: Path | None = typer.Option(None, help="Pre-training cohort (default: synthetic adult)."),
    target: Path | None = typer.Option(None, help="Small local cohort (default: synthetic ssa)."),
    test: Path | None = typer.Option(
        None, help="Held-out test cohort of the target domain (default: synthetic ssa)."
    ),
    seed: int = typer.Option(0, help="Seed of data, folds, initialisation and sampling."),
) -> None:
    """Rerun the paper's comparison: scratch vs pre-trained vs fine-tuned (random/stratified folds), ensemble, post-processing."""
    from glioseg.errors import ConfigError

    if real is not None:
        from glioseg.experiment.real import run_real_experiment

        if source or target or test:
            raise ConfigError(
                "--real builds the source and target cohorts itself; drop --source/--target/--test"
            )
        run_real_experiment(out, real, scale.value, seed, printer=console.print)
        return
    from glioseg.experiment.transfer import run_transfer_experiment

    run_transfer_experiment(out, scale.value, source, target, test, seed, printer=console.print)


def register(app: typer.Typer) -> None:
    experiment_app.command(
        epilog="Example: glioseg experiment transfer --out runs/exp-small --scale small; on real anatomy: "
        "glioseg experiment transfer --out runs/exp-real --scale real --real ../shared/data/brats2018"
    )(reports_errors(transfer))
    app.add_typer(
        experiment_app,
        name="experiment",
        epilog="Example: glioseg experiment transfer --out runs/exp-tiny --scale tiny",
    )
