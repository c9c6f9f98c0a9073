"""A one-page PDF of a case's segmentation (``glioseg serve``'s PDF download), written by matplotlib.

matplotlib is already a dependency and writes PDF itself, so no PDF library is added. The page
holds the same facts as the HTML report's first part: the disclaimer, the warnings, the preview
picture (the four contrasts with the overlay), the volumes in mL and the lesion counts, and the
model's name, version and checksum. Objects of :mod:`matplotlib.figure` are used, not pyplot,
so that the page can be drawn in a worker thread.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from glioseg.data.io import atomic_path

#: A4 portrait, inches.
PAGE = (8.27, 11.69)


def _lines(text: str, width: int = 110) -> list[str]:
    return textwrap.wrap(text, width) or [""]


def write_case_pdf(path: str | Path, preview_png: str | Path, summary: dict[str, Any]) -> Path:
    """Write the one-page PDF of ``summary`` (from :func:`glioseg.serve.runner.summarise`) to ``path``.

    ``preview_png`` is the report's picture (``<ID>_report.png``); volumes are printed in mL
    with one decimal. The file is written atomically.
    """
    import matplotlib.image as mpimg
    from matplotlib.backends.backend_pdf import FigureCanvasPdf
    from matplotlib.figure import Figure

    fig = Figure(figsize=PAGE)
    FigureCanvasPdf(fig)
    y = 0.97

    def text(line: str, size: float = 8.5, weight: str = "normal", colour: str = "black") -> None:
        nonlocal y
        fig.text(0.06, y, line, fontsize=size, weight=weight, color=colour, va="top", family="DejaVu Sans")
        y -= 0.0125 * size / 8.5 + 0.004

    text(f"glioseg report: {summary['case_id']}", 14, "bold")
    for line in _lines(
        "Research software, not a medical device; not for clinical use. " + summary.get("disclaimer", "")
    ):
        text(line, 8, colour="#7a0000")
    for warning in [*summary.get("warnings", []), *summary.get("quality_warnings", [])]:
        for index, line in enumerate(_lines(warning, 105)):
            text(("warning: " if index == 0 else "    ") + line, 8, colour="#8a5a00")
    image = mpimg.imread(str(preview_png))
    height = min(0.55, y - 0.30)
    ax = fig.add_axes((0.06, y - height - 0.01, 0.88, height))
    ax.imshow(image)
    ax.set_axis_off()
    y -= height + 0.03
    text("Volumes (mL) and lesions (26-connected)", 10, "bold")
    volumes, lesions = summary["volumes_ml"], summary.get("lesions", {})
    for name in ("WT", "TC", "ET", "NETC", "SNFH"):
        count = f"   {lesions[name]} lesion(s)" if name in lesions else ""
        text(f"{name:<6} {volumes[name]:8.1f} mL{count}", 9, colour="black")
    text(
        "WT whole tumour (labels 1+2+3), TC tumour core (1+3), ET enhancing tumour (3), NETC (1), SNFH edema (2)",
        7.5,
    )
    y -= 0.01
    text("Provenance", 10, "bold")
    for model in summary.get("models", []):
        text(
            f"model {model.get('name')} {model.get('version') or ''}: {model.get('members')} member(s), "
            f"SHA-256 {str(model.get('checksum_sha256', ''))[:16]}...",
            8,
        )
    settings = summary.get("settings", {})
    text(f"mode {settings.get('mode')}, TTA {settings.get('tta')}, {settings.get('window')} window", 8)
    text(f"date (UTC) {summary.get('date_utc')}, glioseg {summary.get('glioseg_version')}", 8)
    dest = Path(path)
    with atomic_path(dest, suffix=".pdf") as tmp:
        fig.savefig(tmp, format="pdf")
    return dest
