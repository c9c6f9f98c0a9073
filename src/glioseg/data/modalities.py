"""The four MRI modalities and the names they go by in different layouts."""

from __future__ import annotations

#: Fixed channel order of every image array glioseg builds: ``(4, X, Y, Z)``.
MODALITIES: tuple[str, str, str, str] = ("t1n", "t1c", "t2w", "t2f")

#: Human-readable names.
MODALITY_NAMES: dict[str, str] = {
    "t1n": "T1 native",
    "t1c": "T1 contrast-enhanced",
    "t2w": "T2-weighted",
    "t2f": "T2-FLAIR",
}

#: File suffixes of the BraTS 2023+ naming (``<ID>-t1n.nii.gz``).
BRATS2023_SUFFIX: dict[str, str] = {"t1n": "t1n", "t1c": "t1c", "t2w": "t2w", "t2f": "t2f"}
#: File suffixes of the BraTS 2018-2021 naming (``<ID>_t1.nii.gz``).
BRATS_LEGACY_SUFFIX: dict[str, str] = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}

# Channel names found in nnU-Net dataset.json files and elsewhere (lower-cased, '-'/'_'/' ' removed).
_ALIASES: dict[str, str] = {
    "t1": "t1n",
    "t1n": "t1n",
    "t1w": "t1n",
    "t1native": "t1n",
    "native": "t1n",
    "t1pre": "t1n",
    "t1ce": "t1c",
    "t1c": "t1c",
    "t1gd": "t1c",
    "t1contrast": "t1c",
    "t1post": "t1c",
    "t1cegd": "t1c",
    "t2": "t2w",
    "t2w": "t2w",
    "t2weighted": "t2w",
    "flair": "t2f",
    "t2f": "t2f",
    "t2flair": "t2f",
}


def modality_from_name(name: str) -> str | None:
    """Map a channel name (``"T1ce"``, ``"FLAIR"``, ``"t2-flair"``, ...) to a modality key, or ``None``.

    Examples
    --------
    >>> modality_from_name("T1ce"), modality_from_name("Flair"), modality_from_name("ADC")
    ('t1c', 't2f', None)
    """
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    return _ALIASES.get(key)
