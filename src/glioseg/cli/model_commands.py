"""``glioseg models``: the bundled models (list, model card, packaging a release)."""

from __future__ import annotations

from pathlib import Path

import typer

from glioseg.cli._common import console, reports_errors

models_app = typer.Typer(
    help="Bundled models: list them, show a model card, package a cross-validated release.",
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _dice(card) -> str:
    stages = (card.doc.get("results") or {}).get("stages") or {}
    if not stages:
        return "n/a (see card)"
    stage, scores = list(stages.items())[-1]
    return f"{stage}: " + " ".join(f"{r} {scores[r]['lesionwise_dice_mean']:.2f}" for r in ("WT", "TC", "ET"))


def list_models(ctx: typer.Context) -> None:
    """List the bundled models (name, architecture, plan, training data, CV lesion-wise Dice, size, use)."""
    if ctx.invoked_subcommand is not None:
        return
    from glioseg.models.catalog import bundled_cards

    for card in bundled_cards():
        console.print(f"{card.name} {card.version} ({card.size_mb:.1f} MB)")
        for label, value in (
            ("architecture", card.doc.get("architecture", "")),
            ("plan", card.doc.get("plan", "")),
            ("training data", card.doc.get("training_data", "")),
            ("CV lesion-wise Dice (out-of-fold)", _dice(card)),
            ("intended use", card.doc["intended_use"]),
        ):
            console.print(f"  {label}: {value}")
    console.print(
        "Use one with: glioseg predict CASE --model NAME --out OUT; its card: glioseg models show NAME"
    )


def show(name: str = typer.Argument(..., help="A bundled model's name.")) -> None:
    """Print a bundled model's card (data, results per stage, failure modes) after checking its files."""
    from glioseg.models.catalog import find_card
    from glioseg.report.model_card import card_text

    card = find_card(name)
    card.verify()
    console.print(card_text(card))


def package(
    work: Path = typer.Argument(
        ..., help="Release workspace of scripts/train_real_models.sh (CV runs, weights, pp.json)."
    ),
    name: str = typer.Option(..., "--name", help="Name of the bundled model (glioseg predict --model NAME)."),
    data: Path = typer.Option(..., "--data", help="The labelled cases the cross-validation ran on."),
    card: Path = typer.Option(
        ..., "--card", help="JSON of the card's descriptive fields (summary, intended_use, ...)."
    ),
    dest: Path | None = typer.Option(
        None, "--dest", help="Folder of bundled models (default: the package's own)."
    ),
    degraded: Path | None = typer.Option(
        None,
        "--degraded",
        help="glioseg degrade copies of --data: the card also records out-of-fold scores on them.",
    ),
) -> None:
    """Package a cross-validated release as a bundled model (float16 weights where exact enough, scored card)."""
    from glioseg.data.io import read_json
    from glioseg.models.catalog import BUNDLED_MODELS
    from glioseg.train.release import package_release

    result = package_release(
        work, name, data, read_json(card, "card fields"), dest or BUNDLED_MODELS, console.print, degraded
    )
    console.print(
        f"bundled model {result.name} -> {result.root} ({result.size_mb:.1f} MB, SHA-256 {result.checksum[:16]}...)"
    )


def register(app: typer.Typer) -> None:
    models_app.callback()(reports_errors(list_models))
    models_app.command(epilog="Example: glioseg models show brats-2mm")(reports_errors(show))
    models_app.command(
        epilog="Example: glioseg models package release/brats-2mm --name brats-2mm --data ../shared/data/brats2018 "
        "--card release/brats-2mm/card-fields.json"
    )(reports_errors(package))
    app.add_typer(models_app, name="models", epilog="Example: glioseg models")
