"""Write the surfel normals table shipped in src/glioseg/assets/surfel_normals.npy.

Usage: python scripts/make_surfel_table.py [--check]

The table (shape (256, 4, 3), float64) holds the marching-cubes normals of the surface
elements of each 8-bit neighbourhood code, as DeepMind's ``surface-distance`` package
defines them; it is taken from MONAI (``monai.metrics.utils``), which carries that table.
MONAI is needed here only: glioseg reads the shipped file at run time
(:func:`glioseg.evaluate.surface.surfel_normals`).  Every entry is a multiple of 1/8, so
the float64 copy is exact.  With ``--check`` the shipped file is compared instead of
written (exit status 1 when it differs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "src" / "glioseg" / "assets" / "surfel_normals.npy"


def monai_table() -> np.ndarray:
    """MONAI's table as float64, shape (256, 4, 3)."""
    from monai.metrics.utils import _get_neighbour_code_to_normals_table

    table = np.asarray(_get_neighbour_code_to_normals_table().cpu().numpy(), dtype=np.float64)
    if table.shape != (256, 4, 3) or not np.array_equal(table * 8, np.round(table * 8)):
        raise SystemExit(f"unexpected table from MONAI: shape {table.shape}")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare the shipped file instead of writing it")
    args = parser.parse_args(argv)
    table = monai_table()
    if args.check:
        shipped = np.load(TABLE, allow_pickle=False)
        same = shipped.dtype == table.dtype and np.array_equal(shipped, table)
        print(f"{TABLE}: {'matches' if same else 'DIFFERS FROM'} MONAI's table")
        return 0 if same else 1
    np.save(TABLE, table, allow_pickle=False)
    print(f"wrote {TABLE} ({TABLE.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
