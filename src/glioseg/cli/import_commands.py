"""``glioseg import-nnunet``: a trained nnU-Net v2 model as a glioseg model (pre-trained start)."""

from __future__ import annotations

from pathlib import Path

import typer

from glioseg.cli._common import console, reports_errors, say


def _parse_tissues(text: str | None) -> dict[str, int] | None:
    if text is None:
        return None
    out: dict[str, int] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            out[name.strip().upper()] = int(value)
        except ValueError:
            raise typer.BadParameter(
                f"--tissue-labels must look like NETC=2,SNFH=1,ET=3; got {text!r}"
            ) from None
    return out


def import_nnunet(
    results: Path = typer.Argument(
        ...,
        help="nnU-Net results folder (.../DatasetXXX/nnUNetTrainer__nnUNetPlans__3d_fullres) or a checkpoint file.",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder to write model.safetensors and model.json into."
    ),
    fold: str = typer.Option("0", "--fold", "-f", help="Fold to import (0..4 or all)."),
    checkpoint: str = typer.Option(
        "final", help="final or best (checkpoint_final.pth / checkpoint_best.pth)."
    ),
    configuration: str | None = typer.Option(
        None, help="nnU-Net configuration (default: the checkpoint's own)."
    ),
    channels: str | None = typer.Option(
        None,
        help="glioseg modality of each nnU-Net channel in nnU-Net's order, e.g. t2f,t1n,t1c,t2w (default: by name).",
    ),
    tissue_labels: str | None = typer.Option(
        None,
        help="Softmax models: nnU-Net label of each tissue, e.g. NETC=2,SNFH=1,ET=3 (default: by label name).",
    ),
) -> None:
    """Import a trained nnU-Net v2 model (weights, plans, channel and output mapping) as a glioseg model."""
    from glioseg.errors import ConfigError
    from glioseg.models.nnunet_import import import_nnunet as run_import

    if (out / "model.json").exists():
        raise ConfigError(f"{out} already holds a model; choose another --out")
    name = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}.get(checkpoint)
    if name is None:
        raise typer.BadParameter(f"--checkpoint must be final or best, got {checkpoint!r}")
    if fold != "all" and not fold.isdigit():
        raise typer.BadParameter(f"--fold must be a fold number or all, got {fold!r}")
    parsed_fold: int | str = fold if fold == "all" else int(fold)
    imported = run_import(
        results,
        fold=parsed_fold,
        checkpoint_name=name,
        configuration=configuration,
        channels=[c.strip() for c in channels.split(",")] if channels else None,
        tissue_labels=_parse_tissues(tissue_labels),
    )
    for warning in imported.warnings:
        say("warning", warning)
    weights, _ = imported.save(out)
    plan, source = imported.plan, imported.imported_from
    spacing = "x".join(f"{s:g}" for s in plan["target_spacing"])
    patch = "x".join(str(p) for p in plan["patch_size"])
    order = ", ".join(f"{m}<-{source['nnunet_channels'][i]}" for m, i in source["channel_source"].items())
    console.print(
        f"imported {source['dataset_name']} {source['configuration']} fold {source['fold']} "
        f"({source['network_class_name']}, {source['outputs']['kind']}, epoch {source['epoch']}): "
        f"spacing {spacing} mm, patch {patch}, channels {order}"
    )
    console.print(f"model -> {weights} (+ model.json)")


def register(app: typer.Typer) -> None:
    app.command(
        "import-nnunet",
        epilog="Example: glioseg import-nnunet nnUNet_results/Dataset137_BraTS2021/nnUNetTrainer__nnUNetPlans__3d_fullres "
        "--fold 0 --out models/brats-nnunet-f0",
    )(reports_errors(import_nnunet))
