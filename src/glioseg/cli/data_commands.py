"""``glioseg synth``, ``glioseg preview`` and ``glioseg demo``."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path

import typer

from glioseg.cli._choices import Severity
from glioseg.cli._common import console, exit_if_failures, parse_triple, reports_errors, say
from glioseg.models.catalog import DEMO_MODEL

DEMO_NOTICE = (
    "Synthetic phantom data and a demonstration model trained by glioseg on synthetic phantoms: "
    "for demonstration only, not for clinical use."
)


class Domain(str, Enum):
    adult = "adult"
    ssa = "ssa"


def synth(
    out: Path = typer.Argument(..., help="Folder to write the cases into (created if needed)."),
    cases: int = typer.Option(5, "--cases", "-n", min=1, help="Number of cases."),
    domain: Domain = typer.Option(
        Domain.adult, help="adult: high-quality scans; ssa: BraTS-Africa-like low quality."
    ),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same cases bit for bit."),
    shape: str = typer.Option("240,240,155", help="Grid in voxels, e.g. 64,64,64."),
    spacing: float = typer.Option(1.0, help="Isotropic voxel size in mm (BraTS: 1)."),
    start: int = typer.Option(1, help="Index of the first case (to extend a cohort)."),
) -> None:
    """Generate synthetic BraTS-like cases (four contrasts + labels) from the MNI152 atlas."""
    from glioseg.data.io import check_output_folder
    from glioseg.data.synthetic import generate_case, write_case

    grid = parse_triple(shape, "--shape")
    check_output_folder(out)
    began = time.perf_counter()
    for index in range(start, start + cases):
        t0 = time.perf_counter()
        case = generate_case(seed, index, domain.value, grid, spacing)
        folder = write_case(case, out)
        vol = case.metadata["volumes"]
        console.print(
            f"{case.case_id}: WT {vol['WT_ml']:.1f} mL, TC {vol['TC_ml']:.1f} mL, ET {vol['ET_ml']:.1f} mL, "
            f"{len(case.metadata['lesions'])} lesion(s) -> {folder} ({time.perf_counter() - t0:.1f} s)"
        )
    console.print(f"wrote {cases} {domain.value} case(s) to {out} in {time.perf_counter() - began:.1f} s")


def preview(
    case: Path = typer.Argument(..., help="A case folder (any BraTS layout)."),
    seg: Path | None = typer.Option(
        None, "--seg", help="Segmentation to overlay (default: the case's own, if any)."
    ),
    compare: Path | None = typer.Option(
        None, "--compare", help="A second segmentation shown in an extra row."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="PNG to write, or a folder for <ID>-preview.png (default: ./<ID>-preview.png).",
    ),
) -> None:
    """Write a PNG with three slices through the tumour for each modality, labels overlaid."""
    from glioseg.data.cases import discover_cases, load_case
    from glioseg.data.io import check_output_file, check_output_folder, load_label
    from glioseg.errors import InputError
    from glioseg.report.preview import render_preview

    if out is not None and out.is_dir():  # checked before any work
        check_output_folder(out)
    elif out is not None:
        check_output_file(out)
    found = discover_cases(case)
    if found.errors and not found.cases:
        raise found.errors[0]
    if len(found.cases) != 1:
        raise InputError(case, f"expected one case, found {len(found.cases)}")
    data = load_case(found.cases[0])
    labels = data.label
    if seg is not None:
        labels, _ = load_label(seg)
        if labels.shape != data.image.shape[1:]:
            raise InputError(seg, f"shape {labels.shape} differs from the case's {data.image.shape[1:]}")
    other = None
    if compare is not None:
        other, _ = load_label(compare)
        if other.shape != data.image.shape[1:]:
            raise InputError(compare, f"shape {other.shape} differs from the case's {data.image.shape[1:]}")
    target = out / f"{data.case_id}-preview.png" if out is not None and out.is_dir() else out
    target = target or Path(f"{data.case_id}-preview.png")
    render_preview(data.image, data.affine, target, labels, title=data.case_id, compare_labels=other)
    console.print(f"wrote {target}")


def degrade(
    source: Path = typer.Argument(
        ..., help="A case folder or a folder of cases (any BraTS layout); never modified."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder for the degraded copies (one folder per case)."
    ),
    seed: int = typer.Option(
        0, help="Random seed; the same seed gives the same copy of a case, bit for bit."
    ),
    severity: Severity = typer.Option(
        Severity.moderate, help="mild, moderate (BraTS-Africa-like, as in training augmentation) or severe."
    ),
    preview: bool = typer.Option(True, help="Also write <ID>/<ID>-degrade.png (before/after slices)."),
) -> None:
    """Write BraTS-Africa-like low-quality copies of cases: thick slices, motion, ghosting, bias field,
    noise and contrast change drawn per modality; grid, file names and labels unchanged."""
    from glioseg.data.cases import discover_cases, load_case
    from glioseg.data.degrade import RECORD_SUFFIX, degrade_case
    from glioseg.data.io import check_output_folder, read_json
    from glioseg.errors import GliosegError, InputError
    from glioseg.report.preview import render_before_after

    src, dest = source.resolve(), out.resolve()
    if dest == src or src in dest.parents:  # copies inside the input would be found as cases next time
        raise InputError(out, f"lies inside the input {source}; choose a folder outside it")
    check_output_folder(out)
    found = discover_cases(source)
    failures = [str(e) for e in found.errors]
    written = kept = 0
    for case in found.cases:
        existing = out / case.case_id / f"{case.case_id}{RECORD_SUFFIX}"
        if existing.exists():
            record = read_json(existing, "degrade record")
            if record.get("seed") == seed and record.get("severity") == severity.value:
                kept += 1
                console.print(
                    f"{case.case_id}: {existing.parent} exists with the same seed and severity, kept"
                )
                continue
        t0 = time.perf_counter()
        try:
            copy = degrade_case(case, out, seed=seed, severity=severity.value)
            if preview:
                before = load_case(case)
                after = load_case(discover_cases(copy.folder).cases[0], with_label=False)
                render_before_after(
                    before.image,
                    after.image,
                    before.affine,
                    copy.folder / f"{case.case_id}-degrade.png",
                    labels=before.label,
                    title=f"{case.case_id}: {severity.value} degradation, seed {seed}",
                )
        except GliosegError as exc:
            failures.append(str(exc))
            say("failed", exc)
            continue
        written += 1
        snr = ", ".join(f"{m} {r.get('snr', '-')}" for m, r in copy.record["modalities"].items())
        console.print(f"{case.case_id}: SNR {snr} -> {copy.folder} ({time.perf_counter() - t0:.1f} s)")
    console.print(f"{written} case(s) degraded ({severity.value}, seed {seed}), {kept} kept -> {out}")
    exit_if_failures(failures)


def demo(
    out: Path = typer.Option(
        Path("demo_output"), "--out", "-o", help="Folder for everything the demo writes."
    ),
    seed: int = typer.Option(2024, help="Seed of the synthetic case."),
    tta: str = typer.Option("flip", help="Mirroring: none, flip or full."),
) -> None:
    """Run the main job on an embedded default: segment a synthetic BraTS-Africa-like case and score it."""
    import json

    import numpy as np

    from glioseg.data.cases import discover_cases, load_case
    from glioseg.data.io import check_output_folder, save_nifti, write_text_atomic
    from glioseg.data.synthetic import generate_case, write_case
    from glioseg.evaluate import evaluate_labels
    from glioseg.infer.ensemble import segment_case
    from glioseg.infer.models import find_members
    from glioseg.infer.settings import InferenceSettings
    from glioseg.report.preview import render_preview

    check_output_folder(out)
    t0 = time.perf_counter()
    console.print(DEMO_NOTICE)
    case = generate_case(seed, 1, "ssa")
    folder = write_case(case, out / "cases")
    console.print(
        f"1/4 synthetic case {case.case_id} (240x240x155, 1 mm, BraTS-Africa-like quality) -> {folder}"
    )
    data = load_case(discover_cases(folder).cases[0])
    t1 = time.perf_counter()
    prediction = segment_case(data, [find_members(DEMO_MODEL)], settings=InferenceSettings(tta=tta))
    seg_path = save_nifti(
        prediction.labels, out / f"{case.case_id}.nii.gz", reference=data.reference, dtype=np.uint8
    )
    console.print(
        f"2/4 segmented with the bundled demo model in {time.perf_counter() - t1:.1f} s -> {seg_path}"
    )
    png = render_preview(
        data.image,
        data.affine,
        out / f"{case.case_id}-preview.png",
        data.label,
        title=f"{case.case_id} (synthetic): ground truth overlay; last row: prediction",
        compare_labels=prediction.labels,
        compare_title="prediction",
    )
    console.print(f"3/4 preview (ground truth on every modality, prediction in the last row) -> {png}")
    result = evaluate_labels(prediction.labels, data.label, data.spacing, "brats2024-ssa", case.case_id)
    scores = {
        region: {
            "lesionwise_dice": r.lesionwise_dice,
            "lesionwise_hd95_mm": r.lesionwise_hd95,
            "legacy_dice": r.legacy_dice,
            "tp_fp_fn_lesions": [r.n_tp, r.n_fp, r.n_fn],
        }
        for region, r in result.regions.items()
    }
    write_text_atomic(
        out / "scores.json",
        json.dumps(
            {"case_id": case.case_id, "definition": "brats2024-ssa", "synthetic": True, "scores": scores},
            indent=2,
        )
        + "\n",
    )
    console.print("4/4 BraTS lesion-wise scores (brats2024-ssa definition) -> " + str(out / "scores.json"))
    console.print(
        f"    {'region':6s} {'lesion-wise Dice':>16s} {'lesion-wise HD95 (mm)':>22s} {'legacy Dice':>12s}"
    )
    for region, s in scores.items():
        console.print(
            f"    {region:6s} {s['lesionwise_dice']:16.3f} {s['lesionwise_hd95_mm']:22.2f} {s['legacy_dice']:12.3f}"
        )
    console.print(f"done in {time.perf_counter() - t0:.1f} s. {DEMO_NOTICE}")


def register(app: typer.Typer) -> None:
    app.command(
        epilog="Example: glioseg synth data/ssa --cases 20 --domain ssa --seed 1 --shape 64,64,64 --spacing 3"
    )(reports_errors(synth))
    app.command(epilog="Example: glioseg preview data/ssa/SynSSA-s1-0001 --out case1.png")(
        reports_errors(preview)
    )
    app.command(epilog="Example: glioseg demo --out demo_output")(reports_errors(demo))
    app.command(
        epilog="Example: glioseg degrade ../shared/data/brats2018 --out data/brats2018-degraded --seed 0"
    )(reports_errors(degrade))
