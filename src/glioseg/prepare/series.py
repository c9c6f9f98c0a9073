"""Which series is T1, T1c, T2 and FLAIR: names checked against the acquisition parameters.

Each input series (a DICOM series or a NIfTI file) becomes a :class:`Candidate` with its name
(series description and protocol name, or the file name) and, where known, its tags: echo time
TE, repetition time TR, inversion time TI (all ms), the contrast agent, the image type and the
number of slices. :func:`classify` gives each candidate a contrast or a reason to exclude it;
:func:`choose` picks one series per contrast and explains every choice in a table.

Rules (docs/prepare.md, "Series identification"):

- excluded: localisers (image type ``LOCALIZER`` or a name like *localizer*, *scout*, *survey*),
  derived images (image type ``DERIVED``, reformats, maps, subtractions), diffusion, perfusion and
  susceptibility series (name or a diffusion b-value), and 2-D series (fewer than
  :data:`MIN_SLICES` slices);
- the name gives a contrast: FLAIR (*flair*, *fla*, *tirm*, *t2f*; a *T1 FLAIR* is T1), T2, T1;
  T1 is T1c when the name says so (*post*, *gad*, *+c*, *ce*, *t1c*) or, when the name is silent,
  when the contrast-agent tag is set;
- the tags give a contrast family: FLAIR when TI >= 1500 ms and TE >= 60 ms, T2 when TE >= 60 ms
  and TR >= 1500 ms, T1 when TE < 30 ms (TI, if any, below 1500 ms);
- the name decides when tags are missing, the tags decide when the name is silent; when they
  disagree the series is not chosen automatically (it is listed as a candidate for an override).

Two candidates for one contrast, or none, is an error that lists the candidates and names the
override (``--t1c SERIES``); an override names a series by number, description, UID or file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from glioseg.data.modalities import MODALITIES
from glioseg.errors import InputError

#: A series with fewer slices than this is 2-D (a localiser or a single slice), never a contrast.
MIN_SLICES = 8
#: Tag thresholds (ms).
FLAIR_MIN_TI = 1500.0
LONG_TE = 60.0
LONG_TR = 1500.0
SHORT_TE = 30.0

_EXCLUDE_WORDS = {
    "loc": "localiser",
    "localizer": "localiser",
    "localiser": "localiser",
    "scout": "localiser",
    "survey": "localiser",
    "3plane": "localiser",
    "tripilot": "localiser",
    "aahead": "localiser",
    "calibration": "calibration",
    "adc": "diffusion",
    "trace": "diffusion",
    "dwi": "diffusion",
    "dti": "diffusion",
    "diff": "diffusion",
    "diffusion": "diffusion",
    "tensor": "diffusion",
    "fa": "diffusion",
    "perf": "perfusion",
    "perfusion": "perfusion",
    "dsc": "perfusion",
    "dce": "perfusion",
    "pwi": "perfusion",
    "asl": "perfusion",
    "swi": "susceptibility",
    "mip": "derived",
    "mpr": "derived",
    "sub": "derived",
    "subtraction": "derived",
    "map": "derived",
}
_FLAIR_WORDS = {"flair", "fla", "tirm", "t2f", "darkfluid", "t2flair"}
_T2_WORDS = {"t2", "t2w", "t2tse", "t2fse"}
_T1_WORDS = {"t1", "t1w", "t1n", "t1c", "t1ce", "t1gd", "mprage", "spgr", "bravo", "fspgr", "t1se", "t1tse"}
_POST_WORDS = {"t1c", "t1ce", "t1gd", "post", "gad", "gado", "gd", "contrast", "ce", "postcontrast", "c"}
_PRE_WORDS = {"pre", "precontrast", "t1n", "native", "nativ"}


@dataclass
class Candidate:
    """One input series.

    Attributes
    ----------
    key : str
        How the user names it in an override: the DICOM series number, or the file name.
    name : str
        Series description and protocol name (DICOM), or the file name (NIfTI).
    source : Path
        The series' first file (DICOM) or the NIfTI file.
    te, tr, ti : float or None
        Echo, repetition and inversion time (ms), when known.
    contrast_agent : str
        The contrast-agent tag (empty when absent or unknown).
    image_type : tuple of str
        DICOM image type values, upper case (``ORIGINAL``, ``PRIMARY``, ``LOCALIZER`` ...).
    slices : int
        Number of slices (images of a DICOM series; third axis of a NIfTI file).
    b_value : float or None
        Diffusion b-value, when the series has one.
    uid : str
        Series instance UID (DICOM), empty otherwise.
    files : list of Path
        The series' DICOM files (empty for NIfTI).
    """

    key: str
    name: str
    source: Path
    te: float | None = None
    tr: float | None = None
    ti: float | None = None
    contrast_agent: str = ""
    image_type: tuple[str, ...] = ()
    slices: int = 0
    b_value: float | None = None
    uid: str = ""
    files: list[Path] = field(default_factory=list)
    slice_thickness: float | None = None
    contrast: str | None = None
    reason: str = ""

    def label(self) -> str:
        """``'7 (T1 AX POST GAD)'``: how the candidate is shown in tables and errors."""
        if not self.name or self.key.startswith(self.name.split(" / ")[0]):
            return self.key
        return f"{self.key} ({self.name})"

    def tags(self) -> str:
        parts = [
            f"{k}={v:g}" for k, v in (("TE", self.te), ("TR", self.tr), ("TI", self.ti)) if v is not None
        ]
        if self.contrast_agent:
            parts.append(f"agent={self.contrast_agent}")
        return " ".join(parts) or "no tags"


def words(text: str) -> set[str]:
    """Lower-case words of a series name; ``'T1+C'`` and ``'T1 POST-GAD'`` both give ``'c'``/``'post'``.

    >>> sorted(words("MRHR_T1_AX_POST_GAD_se2d1r_t1c"))
    ['ax', 'gad', 'mrhr', 'post', 'se2d1r', 't1', 't1c']
    >>> sorted(words("T1+C 3D"))
    ['3d', 'c', 't1']
    """
    return {w for w in re.split(r"[^a-z0-9]+", text.lower()) if w}


def _name_contrast(name: str) -> str | None:
    w = words(name)
    if "t2" in w and "flair" in w or w & {"t2flair", "t2f"}:
        return "t2f"
    if w & _T1_WORDS and w & {"flair"}:  # T1-FLAIR (GE) is T1-weighted
        family = "t1"
    elif w & _FLAIR_WORDS:
        return "t2f"
    elif w & _T2_WORDS:
        return "t2w"
    elif w & _T1_WORDS:
        family = "t1"
    else:
        return None
    if w & {"t1c", "t1ce", "t1gd"} or (w & _POST_WORDS and not w & _PRE_WORDS):
        return "t1c"
    if w & _PRE_WORDS:
        return "t1n"
    return family


def _tag_family(c: Candidate) -> tuple[str, ...] | None:
    """Contrasts the tags allow (``("t2w", "t2f")`` when only a long TE is known), or ``None``."""
    if c.te is None:
        return None
    if c.ti is not None and c.ti >= FLAIR_MIN_TI and c.te >= LONG_TE:
        return ("t2f",)
    if c.te >= LONG_TE and c.tr is None and c.ti is None:
        return ("t2w", "t2f")  # a NIfTI header gives TE only: T2 or FLAIR
    if c.te >= LONG_TE and (c.tr is None or c.tr >= LONG_TR) and (c.ti is None or c.ti < FLAIR_MIN_TI):
        return ("t2w",)
    if c.te < SHORT_TE and (c.ti is None or c.ti < FLAIR_MIN_TI):
        return ("t1",)
    return None


def _family(contrast: str | None) -> str | None:
    return "t1" if contrast in ("t1", "t1n", "t1c") else contrast


def _says(family: tuple[str, ...]) -> str:
    return " or ".join(f.upper() for f in family)


def classify(c: Candidate) -> Candidate:
    """Set ``c.contrast`` (``t1n``, ``t1c``, ``t2w``, ``t2f`` or ``None``) and ``c.reason``; return ``c``.

    >>> classify(Candidate("3", "T2 FLAIR AX", Path("x"), te=120, tr=9000, ti=2500)).contrast
    't2f'
    >>> classify(Candidate("4", "AX T1", Path("x"), te=10, tr=500, contrast_agent="GADAVIST")).reason
    'name says T1, tags agree (TE=10 TR=500 agent=GADAVIST); contrast-agent tag set: post-contrast'
    """
    w = words(c.name)
    excluded = next((why for word, why in _EXCLUDE_WORDS.items() if word in w), None)
    if "LOCALIZER" in c.image_type:
        excluded = "localiser (image type LOCALIZER)"
    elif c.image_type and c.image_type[0] == "DERIVED":
        excluded = "derived image (image type DERIVED)"
    elif c.b_value is not None and c.b_value > 0:
        excluded = f"diffusion (b-value {c.b_value:g})"
    elif excluded:
        excluded = f"{excluded} (name)"
    elif 0 < c.slices < MIN_SLICES:
        excluded = f"2-D series ({c.slices} slice(s))"
    if excluded:
        c.contrast, c.reason = None, f"excluded: {excluded}"
        return c
    named, tagged = _name_contrast(c.name), _tag_family(c)
    if named is None and tagged is None:
        c.contrast, c.reason = None, f"not recognised: name names no contrast, tags say nothing ({c.tags()})"
        return c
    if named is not None and tagged is not None and _family(named) not in tagged:
        c.contrast = None
        c.reason = f"conflict: name says {_family(named).upper()}, tags say {_says(tagged)} ({c.tags()})"
        return c
    if named is None:
        if len(tagged) > 1:
            c.contrast, c.reason = None, f"not recognised: name silent, tags say {_says(tagged)} ({c.tags()})"
            return c
        contrast = tagged[0]
        why = f"name silent, tags say {_says(tagged)} ({c.tags()})"
    else:
        contrast = named
        agree = f"tags agree ({c.tags()})" if tagged else f"tags say nothing ({c.tags()})"
        why = f"name says {_family(named).upper()}, {agree}"
    if contrast == "t1":
        if c.contrast_agent:
            contrast, why = "t1c", f"{why}; contrast-agent tag set: post-contrast"
        else:
            contrast, why = "t1n", f"{why}; no contrast agent named: pre-contrast"
    elif named in ("t1c", "t1n"):
        why = f"{why}; name says {'post' if named == 't1c' else 'pre'}-contrast"
    c.contrast, c.reason = contrast, why
    return c


@dataclass
class Selection:
    """The chosen series per contrast, and every candidate with the reason it was or was not chosen."""

    chosen: dict[str, Candidate]
    candidates: list[Candidate]
    how: dict[str, str]

    def table(self) -> str:
        """A plain-text table: series, tags, contrast decided, chosen for."""
        chosen_for = {id(c): m for m, c in self.chosen.items()}
        rows = [("series", "classified as", "chosen", "why")]
        for c in self.candidates:
            rows.append((c.label(), c.contrast or "-", chosen_for.get(id(c), ""), c.reason))
        for m, c in self.chosen.items():
            if self.how[m] == "override" and all(c is not x for x in self.candidates):
                rows.append((c.label(), m, m, "given as an override"))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows)

    def to_dict(self) -> list[dict]:
        chosen_for = {id(c): m for m, c in self.chosen.items()}
        return [
            {
                "series": c.key,
                "name": c.name,
                "uid": c.uid,
                "source": c.source.name,
                "slices": c.slices,
                "te_ms": c.te,
                "tr_ms": c.tr,
                "ti_ms": c.ti,
                "contrast_agent": c.contrast_agent,
                "image_type": list(c.image_type),
                "classified_as": c.contrast,
                "chosen_for": chosen_for.get(id(c)),
                "how": self.how.get(chosen_for.get(id(c), ""), None),
                "why": c.reason,
            }
            for c in self.candidates
        ]


def match_override(value: str, candidates: list[Candidate], root: Path) -> Candidate | None:
    """The candidate an override names: series number, UID, exact description, or file name/path."""
    v = value.strip()
    for c in candidates:
        if v in (c.key, c.uid) or v.lower() == c.name.lower() or v == c.source.name:
            return c
    p = Path(v)
    for c in candidates:
        if p.exists() and c.source.exists() and p.resolve() == c.source.resolve():
            return c
    return None


def found_listing(candidates: list[Candidate]) -> str:
    """Every candidate on one line: ``'2 (AX T2): t2w; 1 (localizer): excluded: localiser (name)'``
    (the contrast it was identified as, else why it was not); ``'none'`` when there is none."""
    return "; ".join(f"{c.label()}: {c.contrast or c.reason}" for c in candidates) or "none"


def choose(candidates: list[Candidate], overrides: dict[str, str], root: Path) -> Selection:
    """One candidate per contrast: overrides first, then the only candidate classified as it.

    Parameters
    ----------
    candidates : every series of the input, classified by :func:`classify`.
    overrides : contrast (``t1c`` ...) -> series key, description, UID or file given by the user.
    root : the input folder (named in errors).

    Raises
    ------
    InputError
        An override names no series, two contrasts name one series, a contrast has no candidate or
        more than one; the message lists the candidates and the override to use.
    """
    chosen: dict[str, Candidate] = {}
    how: dict[str, str] = {}
    for m, value in overrides.items():
        match = match_override(value, candidates, root)
        if match is None:
            listing = "; ".join(c.label() for c in candidates) or "none"
            raise InputError(root, f"--{m} {value}: no such series (series: {listing})")
        if 0 < match.slices < MIN_SLICES:
            raise InputError(match.source, f"given as --{m} but is a 2-D series ({match.slices} slice(s))")
        chosen[m], how[m] = match, "override"
    used = {id(c): m for m, c in chosen.items()}
    if len(used) < len(chosen):
        taken = [m for m in chosen if sum(chosen[m] is chosen[o] for o in chosen) > 1]
        raise InputError(root, f"one series is given for {' and '.join('--' + t for t in taken)}")
    for m in MODALITIES:
        if m in chosen:
            continue
        fits = [c for c in candidates if c.contrast == m and id(c) not in used]
        if len(fits) == 1:
            chosen[m], how[m] = fits[0], "identified"
            used[id(fits[0])] = m
            continue
        if fits:
            listing = "; ".join(f"{c.label()}: {c.reason}" for c in fits)
            problem = f"{len(fits)} series could be {m} ({listing}); choose one with --{m} SERIES"
        else:
            problem = (
                f"no series identified as {m} (series found: {found_listing(candidates)}); "
                f"name one with --{m} SERIES"
            )
        raise InputError(root, problem)
    ordered = {m: chosen[m] for m in MODALITIES}
    return Selection(chosen=ordered, candidates=candidates, how={m: how[m] for m in MODALITIES})
