"""Per-case HTML report of ``glioseg predict --report``.

One page per case: the four modalities with the segmentation on three planes, region volumes
(mL), lesions per region, image-quality warnings and, for ensembles, an uncertainty score from
the disagreement of the members (mean voxel-wise variance of the region probabilities inside
the predicted tumour's neighbourhood), with the voxel-wise map saved as NIfTI.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path

import cc3d
import numpy as np

from glioseg.data.labels import LABEL_NAMES, REGIONS, region_mask
from glioseg.data.modalities import MODALITIES
from glioseg.evaluate.components import CONNECTIVITY
from glioseg.report.document import Document

#: Worse than this through-plane voxel size (mm) in the file itself triggers a warning.
THICK_SLICE_MM = 3.0
#: Estimated SNR below this triggers a warning (synthetic BraTS-Africa-like scans: 7-14; good scans 25+).
LOW_SNR = 12.0
#: One phrase per quality number of the report (glioseg.data.radiomics.quality).
QUALITY_EXPLAINED = [
    "estimated SNR: the brain's median intensity divided by the noise level estimated from "
    f"voxel-to-neighbour differences; higher is better, and a warning is given below {LOW_SNR:g}",
    "through-plane sharpness: about 1 when the image is equally sharp along all three axes, lower when "
    "one axis was acquired with thick slices and interpolated (a hint only: anatomy is not isotropic either)",
]


def quality_warnings(image: np.ndarray, spacing) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Warnings (one line each) and the per-modality quality proxies of a case."""
    from glioseg.data.radiomics.quality import quality_features

    warnings = []
    coarse = [f"{s:.1f}" for s in spacing if s > THICK_SLICE_MM]
    if coarse:
        warnings.append(
            f"voxel size {'x'.join(f'{s:.1f}' for s in spacing)} mm: resolution worse than {THICK_SLICE_MM:g} mm "
            "along at least one axis; small lesions may be missed"
        )
    proxies = {m: quality_features(image[i]) for i, m in enumerate(MODALITIES)}
    low = [
        f"{m} ({p['snr']:.1f})" for m, p in proxies.items() if not math.isnan(p["snr"]) and p["snr"] < LOW_SNR
    ]
    if low:
        warnings.append(f"low estimated signal-to-noise ratio in {', '.join(low)} (below {LOW_SNR:g})")
    return warnings, proxies


def lesion_summary(labels: np.ndarray, spacing) -> dict[str, dict[str, object]]:
    """Per region: volume (mL), number of 26-connected lesions and their volumes (mL, largest first)."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out = {}
    for region in REGIONS:
        mask = region_mask(labels, region)
        components, n = cc3d.connected_components(mask, connectivity=CONNECTIVITY, return_N=True)
        sizes = np.bincount(components.ravel())[1:] if n else np.zeros(0, int)
        out[region] = {
            "volume_ml": float(mask.sum() * voxel_ml),
            "lesions": int(n),
            "lesion_volumes_ml": sorted((float(s * voxel_ml) for s in sizes), reverse=True),
        }
    for label in (1, 2):
        out[LABEL_NAMES[label]] = {"volume_ml": float(np.count_nonzero(labels == label) * voxel_ml)}
    return out


def uncertainty_score(variance: np.ndarray | None, probabilities: np.ndarray) -> dict[str, float] | None:
    """Mean member variance per region over voxels where the ensemble's WT probability exceeds 0.1."""
    if variance is None:
        return None
    support = probabilities[0] > 0.1
    if not support.any():
        return {r: 0.0 for r in REGIONS}
    return {r: float(variance[i][support].mean()) for i, r in enumerate(REGIONS)}


def provenance_rows(record: dict) -> list[list[str]]:
    """Table rows (what, value) of a prediction record written by :func:`glioseg.infer.batch.provenance`."""
    rows = []
    for model in record.get("models", []):
        version = f" {model['version']}" if model.get("version") else ""
        synthetic = "; trained on synthetic phantoms only" if model.get("trained_on_synthetic_only") else ""
        rows.append(
            [
                f"model {model['name']}{version}",
                f"{model['members']} member(s) from {model['source']}; SHA-256 {model['checksum_sha256'][:16]}...{synthetic}",
            ]
        )
    settings = record.get("settings", {})
    rows.append(
        [
            "mode",
            f"{settings.get('mode')}: TTA {settings.get('tta')}, {settings.get('window')} window, "
            f"engine {settings.get('engine')}",
        ]
    )
    if settings.get("postprocess_source"):
        rows.append(["post-processing", Path(settings["postprocess_source"]).name])
    rows.append(["date (UTC)", str(record.get("date_utc"))])
    rows.append(["glioseg", str(record.get("glioseg_version"))])
    rows.extend([f"input {m}", str(p)] for m, p in record.get("inputs", {}).items())
    return rows


def write_case_report(
    data, prediction, seg_path: Path, out_dir: Path, n_members: int, record: dict | None = None
) -> Path:
    """Write ``<ID>_report.html`` (+ ``<ID>_report.png`` and, for ensembles, ``<ID>_uncertainty.nii.gz``).

    ``record`` is the prediction's provenance (models, checksums, mode, date, inputs, warnings),
    shown in the report; its warnings lead the page.
    """
    from glioseg.data.io import save_nifti
    from glioseg.report.preview import CONVENTION, render_preview

    case_id = data.case_id
    png = render_preview(
        data.image,
        data.affine,
        out_dir / f"{case_id}_report.png",
        prediction.labels,
        title=f"{case_id}: glioseg segmentation (research use only)",
    )
    summary = lesion_summary(prediction.labels, data.spacing)
    warnings, proxies = quality_warnings(data.image, data.spacing)
    uncertainty = uncertainty_score(prediction.member_probabilities_variance, prediction.probabilities)
    doc = Document(f"glioseg report: {case_id}")
    doc.paragraph(
        "**Research software, not a medical device; not for clinical use.** "
        f"Segmentation: `{seg_path.name}` (1 NETC, 2 SNFH/edema, 3 ET)."
    )
    if record and record.get("warnings"):
        doc.bullets([f"**warning:** {w}" for w in record["warnings"]])
    encoded = base64.b64encode(png.read_bytes()).decode("ascii")
    doc.image(
        f"data:image/png;base64,{encoded}",
        "t1n, t1c, t2w, t2f with the segmentation (NETC red, SNFH green, ET yellow), through the centre of "
        f"the largest tumour-core lesion; {CONVENTION} (R/L and A/P marked on every panel)",
    )
    doc.heading("Volumes and lesions")
    rows = []
    for region in REGIONS:
        s = summary[region]
        sizes = ", ".join(f"{v:.1f}" for v in s["lesion_volumes_ml"][:6]) + (
            " ..." if len(s["lesion_volumes_ml"]) > 6 else ""
        )
        rows.append([region, f"{s['volume_ml']:.1f}", str(s["lesions"]), sizes or "-"])
    for label in ("NETC", "SNFH"):
        rows.append([label, f"{summary[label]['volume_ml']:.1f}", "", ""])
    doc.table(["region", "volume (mL)", "lesions (26-connected)", "lesion volumes (mL)"], rows)
    doc.heading("Image quality")
    doc.bullets([f"**warning:** {w}" for w in warnings] or ["no quality warning"])
    doc.table(
        ["modality", "estimated SNR", "through-plane sharpness"],
        [[m, f"{p['snr']:.1f}", f"{p['sharpness']:.2f}"] for m, p in proxies.items()],
    )
    doc.bullets(QUALITY_EXPLAINED)
    doc.heading("Uncertainty")
    if uncertainty is None or n_members < 2:
        doc.paragraph(
            "Not available: a single model was used (an ensemble of several models or folds gives "
            "an uncertainty score from their disagreement)."
        )
    else:
        uncertainty_map = prediction.member_probabilities_variance.mean(axis=0).astype(np.float32)
        save_nifti(
            uncertainty_map,
            out_dir / f"{case_id}_uncertainty.nii.gz",
            reference=data.reference,
            dtype=np.float32,
        )
        doc.paragraph(
            f"Ensemble of {n_members} members. Mean variance of the members' region probabilities around the tumour: "
            + ", ".join(f"{r} {v:.4f}" for r, v in uncertainty.items())
            + f" (0 = full agreement, 0.25 = maximal disagreement). Voxel-wise map: `{case_id}_uncertainty.nii.gz`."
        )
    if record:
        doc.heading("Provenance")
        doc.table(["", ""], provenance_rows(record))
    path = out_dir / f"{case_id}_report.html"
    from glioseg.data.io import write_text_atomic

    write_text_atomic(path, doc.html())
    return path
