"""``glioseg prepare``: a raw study (DICOM or NIfTI) to a BraTS-ready case folder."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from glioseg.cli._common import console, reports_errors, say


class Atlas(str, Enum):
    none = "none"
    mni152 = "mni152"


def prepare(
    input: Path = typer.Argument(
        ...,
        help="A DICOM study folder (any depth, files with or without extension) or a folder of NIfTI files.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Case folder to create (must not exist)."),
    case_id: str | None = typer.Option(
        None, "--id", help="Case ID (default: the DICOM patient ID, else the folder name)."
    ),
    t1n: str | None = typer.Option(
        None, help="The T1 series: a series number, description or UID, or a NIfTI file."
    ),
    t1c: str | None = typer.Option(None, help="... the T1 contrast-enhanced series."),
    t2w: str | None = typer.Option(None, help="... the T2 series."),
    t2f: str | None = typer.Option(None, help="... the FLAIR series."),
    atlas: Atlas = typer.Option(
        Atlas.none,
        help="none (the subject's space, aligned to t1c) or mni152 (affine to nilearn's MNI152 on a 240x240x155 grid).",
    ),
    keep_intermediate: bool = typer.Option(
        False,
        "--keep-intermediate",
        help="Also keep intermediate/ (converted series, registered 1 mm images).",
    ),
) -> None:
    """Make a BraTS-ready case (four co-registered, skull-stripped contrasts on one 1 mm grid) from a raw study, offline."""
    from glioseg.prepare.pipeline import prepare_case

    result = prepare_case(
        input,
        out,
        case_id=case_id,
        overrides={"t1n": t1n, "t1c": t1c, "t2w": t2w, "t2f": t2f},
        atlas=atlas.value,
        keep_intermediate=keep_intermediate,
        printer=console.print,
    )
    for warning in result.warnings:
        say("warning", warning)


def register(app: typer.Typer) -> None:
    app.command(
        epilog="Example: glioseg prepare ../shared/data/raw/TCGA-FG-6692 --out cases/TCGA-FG-6692, then "
        "glioseg predict cases/TCGA-FG-6692 --model brats-2mm --out predictions --native (docs/prepare.md)."
    )(reports_errors(prepare))
