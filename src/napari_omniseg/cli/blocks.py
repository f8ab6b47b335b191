"""``omniseg blocks from-masks``: block labels and a mask-estimated block table from pixel
masks (for experiments, and to convert old annotations)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from . import args as A


def add_commands(sub: Any) -> None:
    """Add the blocks command(s) to the ``omniseg`` sub-parsers."""
    bl = sub.add_parser("blocks", help="block labels (one class per block of an image)")
    blsub = bl.add_subparsers(dest="what", required=True)
    fm = blsub.add_parser("from-masks", help="derive block labels and a block table from the "
                                             "pixel masks of a manifest")
    fm.add_argument("--manifest", type=Path, required=True,
                    help="CSV with image, mask, tissue, magnification[, stain, split]")
    fm.add_argument("--block-size", type=A.integer(2, 4096), default=64,
                    help="image pixels per block side (default 64)")
    fm.add_argument("--bins", type=A.integer(2, 100), default=4,
                    help="block classes: 1 = none of the tissue, 2..K = equal fraction bins")
    fm.add_argument("--split-column", default="split",
                    help="the table is estimated from rows whose split is train (or empty)")
    fm.add_argument("-o", "--out", type=Path, required=True,
                    help="folder to write manifest.csv, table.csv and blocks/ into")
    fm.set_defaults(run=_from_masks)


def _from_masks(args: argparse.Namespace) -> int:
    from ..train.block_labels import blocks_from_masks

    manifest, table = blocks_from_masks(args.manifest, args.block_size, args.bins, args.out,
                                        split_column=args.split_column)
    print(json.dumps({"manifest": str(manifest), "table": str(table)}, indent=2))
    return 0
