"""Copy a finished ``glioseg experiment transfer`` run into the repository, for committing.

Usage: python scripts/publish_experiment.py EXP docs/results/NAME

Copies what a reader needs and nothing else: ``report.md``, ``report.html``, ``results.json``,
``experiment.json`` and ``figures/`` (training curves and small overlays; no images, weights or
predictions). Refuses, and writes nothing, when the run has no report yet or when any copied text
names a folder of the machine it ran on (the pattern ``tests/test_committed_results.py`` enforces).
The folder's own ``README.md`` (how it was run, what it shows) is left as it is.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

FILES = ("report.md", "report.html", "results.json", "experiment.json")
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|home|Users|root|tmp|mnt|scratch)/[\w.-]+")


def publish(run: Path, dest: Path) -> list[Path]:
    """Copy the run's report files into ``dest`` (replacing earlier copies); the paths written."""
    missing = [name for name in FILES if not (run / name).is_file()]
    if missing:
        raise SystemExit(f"{run}: no {', '.join(missing)} (has the experiment finished?)")
    for name in FILES:
        found = MACHINE_PATH.search((run / name).read_text(encoding="utf-8"))
        if found:
            raise SystemExit(f"{run / name}: names a machine folder ({found.group(0)}); nothing copied")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:  # copy completely, then swap in
        staged = Path(tmp)
        for name in FILES:
            shutil.copy2(run / name, staged / name)
        shutil.copytree(run / "figures", staged / "figures")
        written = []
        for item in sorted(staged.iterdir()):
            target = dest / item.name
            if target.is_dir():
                shutil.rmtree(target)
            item.replace(target)
            written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the experiment folder (--out of the run)")
    parser.add_argument("dest", type=Path, help="e.g. docs/results/real")
    args = parser.parse_args()
    for path in publish(args.run, args.dest):
        print(f"wrote {path}")
    if not (args.dest / "README.md").exists():
        print(f"now write {args.dest / 'README.md'}: how it was run and what it shows", file=sys.stderr)


if __name__ == "__main__":
    main()
