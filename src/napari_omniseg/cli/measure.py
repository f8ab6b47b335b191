"""``omniseg export`` and ``quantify``: masks to QuPath, OME-TIFF, CSV and measures."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import vocab
from ..errors import OmnisegInputError
from . import args as A
from .common import MIN_SIZES, batch, holding_output_file, progress_bar


def add_commands(sub: Any) -> None:
    """Add the measure command(s) to the ``omniseg`` sub-parsers."""
    ex = sub.add_parser("export", help="masks to QuPath GeoJSON, pyramidal OME-TIFF labels or "
                                       "a CSV of objects")
    ex.add_argument("masks", nargs="+", type=Path,
                    help="mask files (as 'omniseg segment' writes them) or label images "
                         "(TIFF/PNG; values 1 DT, 2 PT, 3 CAP, 4 TUFT, 5 VES, 6 PTC)")
    ex.add_argument("--format", required=True, choices=["geojson", "ome-tiff", "csv"])
    ex.add_argument("--objects", default="detection", choices=["detection", "annotation"],
                    help="GeoJSON: one detection per object (default) or one annotation per "
                         "tissue")
    ex.add_argument("--min-area", type=A.non_negative_float, default=None, metavar="UM2",
                    help="leave out objects smaller than this (µm²; default per tissue: "
                         f"{MIN_SIZES}); the file states the sizes used")
    ex.add_argument("--mpp", type=A.mpp, default=None,
                    help="µm per pixel, for files that do not say")
    ex.add_argument("-o", "--out", type=Path, required=True, help="output folder")

    qu = sub.add_parser("quantify", help="per-tissue areas, object counts, densities and sizes; "
                                         "or per-spot tissue percentages (Visium)")
    qu.add_argument("masks", nargs="+", type=Path)
    qu.add_argument("--slide", type=Path, default=None,
                    help="the slide image: densities per mm² of tissue (glass excluded), and "
                         "where the laid-out spots go")
    qu.add_argument("--spots", default=None, metavar="POSITIONS",
                    help="Space Ranger's tissue_positions.csv (scalefactors_json.json beside "
                         "it), or 'hex' for a grid of 55 µm spots 100 µm apart over the tissue")
    qu.add_argument("--min-area", type=A.non_negative_float, default=None, metavar="UM2",
                    help=f"smallest object counted (µm²; default per tissue: {MIN_SIZES})")
    qu.add_argument("--mpp", type=A.mpp, default=None,
                    help="µm per pixel, for files that do not say")
    qu.add_argument("--table", type=Path, default=None,
                    help="with --spots: a CSV keyed by barcode to correlate with")
    qu.add_argument("--column", default=None, help="with --table: its column to correlate")
    qu.add_argument("--tissue", default=None, choices=list(vocab.TISSUE_CODES),
                    help="with --table: the tissue whose percentage is correlated")
    qu.add_argument("-o", "--out", type=Path, required=True, help="CSV to write")
    for parser, run in ((ex, _export), (qu, _quantify),):
        parser.set_defaults(run=run)


def _export(args: argparse.Namespace) -> int:
    from ..quantify.files import export_masks

    return batch(args, "export", lambda bar: export_masks(
        args.masks, args.format, args.out, mpp=args.mpp, object_type=args.objects,
        min_area_um2=args.min_area, progress=bar))


@holding_output_file("masks", "slide", "spots", "table")
def _quantify(args: argparse.Namespace) -> int:
    from ..quantify.files import quantify_files

    if (args.table is None) != (args.column is None):
        raise OmnisegInputError("--table and --column go together")
    if args.table is not None and not args.spots:
        raise OmnisegInputError("--table correlates per-spot percentages: give --spots too")
    with progress_bar("quantify") as bar:
        summary = quantify_files(args.masks, args.out, slide=args.slide, spots=args.spots,
                                 mpp=args.mpp, min_area_um2=args.min_area, progress=bar)
    if args.table is not None:
        summary["correlation"] = _correlation(args)
    print(json.dumps(summary, indent=2))
    for err in summary["failed"].values():
        print(f"omniseg: error: {err}", file=sys.stderr)
    if summary.get("skipped"):
        print(f"omniseg: {summary['skipped']} spots lie outside the slide and were skipped",
              file=sys.stderr)
    return 2 if summary["failed"] else 0


def _correlation(args: argparse.Namespace) -> dict:
    import csv

    from ..quantify.spots import correlate

    with open(args.out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns = [c for c in rows[0] if c.endswith(" %")] if rows else []
    if not columns:
        raise OmnisegInputError("no tissue was measured in the spots")
    col = f"{vocab.tissue(args.tissue).label} %" if args.tissue else columns[0]
    if col not in columns:
        raise OmnisegInputError(f"the masks have no {col[:-2]}; they have "
                                f"{', '.join(c[:-2] for c in columns)}")
    values = {r["barcode"]: float(r[col]) for r in rows}
    return {"tissue": col[:-2], "column": args.column,
            **correlate(values, args.table, args.column)}

