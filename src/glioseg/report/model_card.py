"""A bundled model's card as Markdown (``glioseg models show NAME``, docs/models.md)."""

from __future__ import annotations

from glioseg.data.labels import REGIONS
from glioseg.models.catalog import ModelCard
from glioseg.models.checkpoint import DISCLAIMER


def _score_row(stage: str, scores: dict) -> str:
    dice = [
        f"{scores[r]['lesionwise_dice_mean']:.3f} ± {scores[r]['lesionwise_dice_sd']:.3f} "
        f"({scores[r]['lesionwise_dice_median']:.3f})"
        for r in REGIONS
    ]
    hd = [f"{scores[r]['lesionwise_hd95_mean']:.1f}" for r in REGIONS]
    return f"| {stage} | " + " | ".join(dice + hd) + " |"


def card_text(card: ModelCard) -> str:
    """The model card as Markdown (for docs/models.md and ``glioseg models show``)."""
    doc = card.doc
    lines = [
        f"## {card.name} {card.version}",
        "",
        f"**{doc.get('disclaimer', DISCLAIMER)}**",
        "",
        doc.get("summary", ""),
        "",
        f"- intended use: {doc['intended_use']}",
        f"- training data: {doc.get('training_data', '?')}",
        f"- architecture: {doc.get('architecture', '?')}",
        f"- plan: {doc.get('plan', '?')}",
        f"- size: {card.size_mb:.1f} MB",
        f"- checksum (SHA-256): {card.checksum}",
    ]
    weighted = [g for g in doc.get("groups", []) if g.get("weights")]
    if weighted:
        lines.append(
            "- ensemble weights per region (WT / TC / ET): "
            + "; ".join(
                f"{g['name']} " + " / ".join(f"{g['weights'][r]:.3f}" for r in REGIONS) for g in weighted
            )
        )
    if card.default_mode != "default":
        lines.append(f"- mode without --mode: {card.default_mode} (glioseg predict --mode to change it)")
    for key in ("provenance", "retrain", "wall_time"):
        if doc.get(key):
            lines.append(f"- {key.replace('_', ' ')}: {doc[key]}")
    stages = (doc.get("results") or {}).get("stages") or {}
    if stages:
        lines += [
            "",
            "Out-of-fold lesion-wise scores (brats2024-ssa) on the training cohort, mean ± SD (median):",
            "",
            "| stage | "
            + " | ".join(f"{r} Dice" for r in REGIONS)
            + " | "
            + " | ".join(f"{r} HD95 (mm)" for r in REGIONS)
            + " |",
            "|---" * (1 + 2 * len(REGIONS)) + "|",
        ]
        rows = list(stages.items())
        degraded = doc["results"].get("degraded")
        if degraded:
            mode = doc["results"].get("mode", "default")
            label = (
                f"shipped pipeline ({mode} mode) on low-quality copies "
                f"({degraded['severity']}, seed {degraded['seed']})"
            )
            rows.append((label, degraded["scores"]))
        lines += [_score_row(stage, scores) for stage, scores in rows]
        if degraded:
            lines += [
                "",
                f"Low-quality copies: `{degraded['command']}` (glioseg degrade), each fold's models on its own validation cases.",
            ]
    curves = (doc.get("results") or {}).get("validation_curve") or {}
    for group, curve in curves.items():
        if not curve:
            continue
        lines += [
            "",
            f"{group}: validation Dice during training (voxel Dice on each fold's validation cases, "
            "mean over folds) by iteration:",
            "",
            "| iterations | folds | " + " | ".join(REGIONS) + " |",
            "|---" * (2 + len(REGIONS)) + "|",
        ]
        lines += [
            f"| {p['iterations']} | {p['folds']} | " + " | ".join(f"{p[r]:.3f}" for r in REGIONS) + " |"
            for p in curve
        ]
    items = [item for key in ("failure_modes", "notes") for item in doc.get(key) or []]
    if items:
        lines.append("")
    lines += [f"- {item}" for item in items]
    return "\n".join(lines) + "\n"
