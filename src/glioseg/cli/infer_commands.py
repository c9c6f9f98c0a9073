"""``glioseg predict``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from glioseg.cli._common import console, exit_if_failures, parse_triple, reports_errors
from glioseg.infer.settings import MODES


class TTA(str, Enum):
    none = "none"
    flip = "flip"
    full = "full"
    spread = "spread"


Mode = Enum("Mode", {name: name for name in MODES}, type=str)  # glioseg.infer.settings.MODES


def predict(
    input: Path | None = typer.Argument(
        None, help="A case folder, a folder of cases, or an nnU-Net dataset."
    ),
    model: list[str] = typer.Option(
        ...,
        "--model",
        "-m",
        help="A bundled model's name (glioseg models), a run, or a folder of fold runs; repeat for an ensemble.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for <ID>.nii.gz label maps."),
    weights: str | None = typer.Option(
        None,
        help="Ensemble weights: w1,w2,... per --model, or weights.json (default: a bundled model's own).",
    ),
    mode: Mode | None = typer.Option(
        None,
        help="fast (CPU: first member, one pass over the brain crop), balanced (all members, one pass over the "
        "brain crop and one mirroring each), accurate (all members, sliding windows, one mirroring each), "
        "reference, default (every member, left-right mirroring). Without it: a bundled model's recommended mode "
        "(glioseg models), else default.",
    ),
    tta: TTA | None = typer.Option(
        None, help="Mirroring: none, flip (left-right), full (all 8), spread (one per member)."
    ),
    overlap: float | None = typer.Option(None, help="Sliding-window overlap in [0, 1)."),
    window: str | None = typer.Option(
        None, help="sliding (windows of the training patch) or whole (one pass over the brain crop)."
    ),
    window_norm: bool | None = typer.Option(
        None,
        "--window-norm/--global-norm",
        help="Whole-crop passes: normalise with the statistics of the sliding windows that cover each voxel (default) "
        "or of the whole crop.",
    ),
    engine: str | None = typer.Option(
        None, help="torch or onnx (ONNX Runtime on the CPU; needs the bench extra)."
    ),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    thresholds: str = typer.Option("0.5,0.5,0.5", help="Probability thresholds for WT, TC, ET."),
    save_probabilities: bool = typer.Option(
        False, "--save-probabilities", help="Also write <ID>_probabilities.npz (float16)."
    ),
    report: bool = typer.Option(
        False, "--report", help="Also write <ID>_report.html (volumes, lesions, quality, uncertainty)."
    ),
    t1n: Path | None = typer.Option(None, help="Single case given as files: the T1 native image."),
    t1c: Path | None = typer.Option(None, help="... the T1 contrast-enhanced image."),
    t2w: Path | None = typer.Option(None, help="... the T2-weighted image."),
    t2f: Path | None = typer.Option(None, help="... the T2-FLAIR image."),
    native: bool = typer.Option(
        False,
        "--native",
        help="Also write <ID>-native.nii.gz on the original t1c grid of a case made by glioseg prepare.",
    ),
    postprocess: Path | None = typer.Option(
        None,
        "--postprocess",
        help="Post-processing configuration (pp.json from glioseg postprocess tune) applied before writing "
        "(default: a bundled model's own).",
    ),
) -> None:
    """Segment cases with one model, a fold ensemble or a weighted model ensemble (BraTS labels 1/2/3)."""
    import numpy as np

    from glioseg.data.io import check_output_folder
    from glioseg.infer.batch import PredictOptions, discover_input, load_weights_file, predict_cases
    from glioseg.infer.models import resolve_models
    from glioseg.infer.settings import InferenceSettings

    check_output_folder(out)  # before any work (predict_cases checks again for API callers)
    region_thresholds = parse_triple(thresholds, "--thresholds", float, example="0.5,0.4,0.3")
    cases, errors = discover_input(input, {"t1n": t1n, "t1c": t1c, "t2w": t2w, "t2f": t2f})
    resolved = resolve_models(model)
    settings = InferenceSettings.for_mode(
        mode.value if mode else resolved.mode,
        tta=tta.value if tta else None,
        overlap=overlap,
        window=window,
        engine=engine,
        device=device,
        window_norm=window_norm,
        thresholds=region_thresholds,
    )
    groups = resolved.groups
    parsed_weights = None if resolved.weights is None else np.asarray(resolved.weights)
    if postprocess is None:
        postprocess = resolved.postprocess
    if weights:
        if weights.endswith(".json"):
            parsed_weights = load_weights_file(weights, groups)
        else:
            try:
                parsed_weights = np.asarray([float(w) for w in weights.split(",")])
            except ValueError:
                raise typer.BadParameter(
                    f"--weights must be numbers like 0.6,0.4 or a .json file, got {weights!r}"
                ) from None
            if len(parsed_weights) != len(groups):
                raise typer.BadParameter(
                    f"--weights has {len(parsed_weights)} value(s) for {len(groups)} model(s)"
                )
    hook = None
    if postprocess is not None:
        from glioseg.postprocess.config import PostprocessConfig, make_postprocessor

        hook = make_postprocessor(PostprocessConfig.load(postprocess))
    members = sum(len(g.members) for g in groups)
    after_case = None
    if report:
        from glioseg.report.case_report import write_case_report

        def after_case(case, data, prediction, seg_path, record):
            write_case_report(data, prediction, seg_path, seg_path.parent, members, record)

    if native:
        from glioseg.prepare.native import write_native

        report_hook = after_case

        def after_case(case, data, prediction, seg_path, record):
            if report_hook is not None:
                report_hook(case, data, prediction, seg_path, record)
            write_native(
                seg_path, case.folder, case.case_id, seg_path.parent / f"{case.case_id}-native.nii.gz"
            )

    options = PredictOptions(
        settings=settings,
        save_probabilities=save_probabilities,
        weights=parsed_weights,
        after_case=after_case,
        track_variance=report and members > 1,
        postprocess=hook,
        postprocess_source=str(postprocess) if postprocess is not None else None,
    )
    used = sum(min(len(g.members), settings.members_per_group or len(g.members)) for g in groups)
    if settings.window == "sliding":
        window_detail = f" (overlap {settings.overlap})"
    else:  # the ONNX graph keeps the crop's statistics
        window_detail = (
            " (window-matched norms)"
            if settings.window_norm and settings.engine == "torch"
            else " (crop norms)"
        )
    recommended = " (the model's recommended mode)" if mode is None and settings.mode != "default" else ""
    for card in resolved.cards:
        console.print(
            f"model {card.name} {card.version}: {card.doc.get('summary', '')} {card.doc.get('disclaimer', '')}"
        )
    console.print(
        f"{len(cases)} case(s), {len(groups)} model(s), {used} of {members} member(s) used; mode {settings.mode}"
        f"{recommended}: "
        f"TTA {settings.tta}, {settings.window} window{window_detail}, engine {settings.engine}"
    )
    report = predict_cases(cases, groups, out, options, printer=console.print)
    failures = [(str(e.path), str(e)) for e in errors] + report.failed
    console.print(f"wrote {len(report.written)} segmentation(s) to {out}")
    exit_if_failures([message for _case, message in failures])


def register(app: typer.Typer) -> None:
    app.command(
        epilog="Example: glioseg predict data/BraTS-SSA/BraTS-SSA-00002-000 --model brats-2mm --out predictions --report "
        "(a bundled model by name; glioseg models lists them). Your own runs as a weighted ensemble: "
        "glioseg predict data/BraTS-SSA --model runs/nnunet --model runs/mednext --weights 0.6,0.4 --out predictions"
    )(reports_errors(predict))
