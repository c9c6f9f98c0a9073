"""Models bundled with glioseg, by name: ``glioseg models`` and ``glioseg predict --model NAME``.

A bundled model is a folder ``glioseg/assets/models/<name>/`` holding a model card
``card.json`` and the networks it names.  The card is the single description of the bundle:

``name``, ``version``, ``summary``, ``intended_use``, ``disclaimer``
    what the model is and what it may be used for;
``synthetic``
    ``true`` when every training case was a glioseg phantom (``predict`` then warns on real scans);
``training_data``, ``architecture``, ``plan``
    one line each, for ``glioseg models``;
``groups``
    the ensemble: ``[{"name": "nnunet", "path": "nnunet", "weights": {"WT": .., "TC": .., "ET": ..}}, ...]``;
    ``path`` is a member folder or a folder of fold members, relative to the bundle;
``postprocess``
    a ``glioseg postprocess tune`` configuration inside the bundle, or ``null``;
``default_mode``
    the inference mode ``glioseg predict`` uses for this model when no ``--mode`` is given
    (optional, ``default`` when absent): the release's measured choice of time against agreement;
``results``
    the cross-validated measurements of the model card (see docs/models.md);
``files``
    SHA-256 of every other file of the bundle; :meth:`ModelCard.verify` checks them, so a
    bundle whose weights changed without its card is refused.

Nothing here builds a network: :mod:`glioseg.infer.models` turns a card into model groups.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glioseg.data.io import read_json, write_text_atomic
from glioseg.data.labels import REGIONS
from glioseg.errors import InputError

CARD_FORMAT = "glioseg-model-card-v1"
CARD_NAME = "card.json"
#: Folder of the bundled models inside the installed package.
BUNDLED_MODELS = Path(__file__).resolve().parents[1] / "assets" / "models"
#: The demonstration model (synthetic phantoms only) that ``glioseg demo`` runs.
DEMO_MODEL = BUNDLED_MODELS / "demo"
#: Prefixes of the case IDs that ``glioseg synth`` writes (``SynGLI-s7-0001``, ``SynSSA-s2024-0001``).
SYNTHETIC_ID_PREFIXES = ("SynGLI-", "SynSSA-")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes.

    Examples
    --------
    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = os.path.join(d, "x.txt")
    ...     _ = open(p, "wb").write(b"abc")
    ...     sha256_file(p)[:16]
    'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def combined_checksum(digests: Iterable[str]) -> str:
    """One SHA-256 over an ordered list of file digests (the checksum of a model made of several files)."""
    digest = hashlib.sha256()
    for item in digests:
        digest.update(item.encode("ascii"))
    return digest.hexdigest()


def model_files(root: Path) -> list[Path]:
    """Every file of a bundle except its card, sorted (the files the card's checksums cover)."""
    return sorted(
        p for p in root.rglob("*") if p.is_file() and p.name != CARD_NAME and "__pycache__" not in p.parts
    )


@dataclass(frozen=True)
class ModelCard:
    """A bundled model: its folder and the parsed ``card.json``."""

    root: Path
    doc: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.doc["name"])

    @property
    def version(self) -> str:
        return str(self.doc.get("version", "0"))

    @property
    def synthetic(self) -> bool:
        return bool(self.doc.get("synthetic", False))

    @property
    def checksum(self) -> str:
        """Checksum of the whole bundle (over the card's file digests, in path order)."""
        return combined_checksum(self.doc["files"][k] for k in sorted(self.doc["files"]))

    @property
    def size_mb(self) -> float:
        return sum(p.stat().st_size for p in model_files(self.root)) / 1e6

    def group_paths(self) -> list[tuple[str, Path]]:
        """``(name, folder)`` of each ensemble member group, in the card's order."""
        return [(str(g["name"]), self.root / g["path"]) for g in self.doc["groups"]]

    def weights(self) -> list[list[float]] | None:
        """Per group ``[WT, TC, ET]`` ensemble weights, or ``None`` (equal weights)."""
        if not any(g.get("weights") for g in self.doc["groups"]):
            return None
        return [[float((g.get("weights") or {}).get(r, 1.0)) for r in REGIONS] for g in self.doc["groups"]]

    @property
    def default_mode(self) -> str:
        """The mode ``glioseg predict`` uses for this model when the user names none."""
        return str(self.doc.get("default_mode") or "default")

    def postprocess_path(self) -> Path | None:
        name = self.doc.get("postprocess")
        return self.root / name if name else None

    def verify(self) -> None:
        """Check that the bundle's files are exactly those of the card, with the card's checksums.

        Raises
        ------
        InputError
            A file is missing, was added or changed since the card was written.
        """
        listed = dict(self.doc.get("files") or {})
        present = {p.relative_to(self.root).as_posix(): p for p in model_files(self.root)}
        for rel in sorted(set(listed) - set(present)):
            raise InputError(self.root / rel, f"file of bundled model '{self.name}' is missing")
        for rel in sorted(set(present) - set(listed)):
            raise InputError(present[rel], f"file not listed in the model card of '{self.name}' (card.json)")
        for rel, expected in sorted(listed.items()):
            if sha256_file(present[rel]) != expected:
                raise InputError(
                    present[rel], f"checksum differs from the model card of '{self.name}' (file changed)"
                )


def read_card(root: str | Path) -> ModelCard:
    """Parse ``root/card.json``.

    Raises
    ------
    InputError
        No card, or a card without the fields every bundle has.
    """
    folder = Path(root)
    path = folder / CARD_NAME
    if not path.exists():
        raise InputError(path, "model card not found (a bundled model is a folder with card.json)")
    doc = read_json(path, "model card")
    if doc.get("format") != CARD_FORMAT:
        raise InputError(
            path, f"not a glioseg model card (format {doc.get('format')!r}, expected {CARD_FORMAT!r})"
        )
    for key in ("name", "groups", "files", "intended_use"):
        if key not in doc:
            raise InputError(path, f"model card lacks '{key}'")
    if not doc["groups"] or not all(
        isinstance(g, dict) and "name" in g and "path" in g for g in doc["groups"]
    ):
        raise InputError(path, "model card 'groups' must be a list of {name, path}")
    return ModelCard(folder, doc)


def bundled_cards(root: str | Path = BUNDLED_MODELS) -> list[ModelCard]:
    """The cards of every bundled model, sorted by name."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted((read_card(p) for p in base.iterdir() if (p / CARD_NAME).exists()), key=lambda c: c.name)


def find_card(name: str, root: str | Path = BUNDLED_MODELS) -> ModelCard:
    """The bundled model called ``name``.

    Raises
    ------
    InputError
        No bundled model has that name (the message lists the names there are).
    """
    cards = {c.name: c for c in bundled_cards(root)}
    if name not in cards:
        known = ", ".join(cards) or "none"
        raise InputError(
            name, f"neither a model folder nor a bundled model name (bundled: {known}; see glioseg models)"
        )
    return cards[name]


def trained_only_on_synthetic(info: dict[str, Any]) -> bool:
    """Whether a member's ``model.json`` says every training case was a glioseg phantom."""
    train = ((info.get("split") or {}).get("train")) or []
    return bool(train) and all(str(c).startswith(SYNTHETIC_ID_PREFIXES) for c in train)


def write_card(root: str | Path, doc: dict[str, Any]) -> ModelCard:
    """Write ``root/card.json`` from ``doc`` with the format and the checksums of the bundle's files filled in."""
    folder = Path(root)
    files = {p.relative_to(folder).as_posix(): sha256_file(p) for p in model_files(folder)}
    full = {
        "format": CARD_FORMAT,
        **{k: v for k, v in doc.items() if k not in ("format", "files")},
        "files": files,
    }
    write_text_atomic(folder / CARD_NAME, json.dumps(full, indent=1) + "\n")
    return read_card(folder)
