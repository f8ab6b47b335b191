"""``omniseg segment``, ``segment-volume`` and ``info``: models on slides and volumes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import vocab
from ..choices import StainNormalisation
from ..errors import OmnisegInputError, failure_sentence
from . import args as A
from .common import batch


def add_commands(sub: Any) -> None:
    """Add the segment command(s) to the ``omniseg`` sub-parsers."""
    seg = sub.add_parser("segment", help="segment renal tissues on whole-slide images")
    seg.add_argument("slides", nargs="+", type=Path)
    seg.add_argument("--tissue", default="all", choices=[*vocab.TISSUE_CODES, "all"])
    seg.add_argument("--magnification", default="auto",
                     choices=["auto", *[str(m) for m in vocab.MAGNIFICATIONS]])
    seg.add_argument("--model", default="renal", help="checkpoint file or bundled model name")
    seg.add_argument("--mpp", type=A.mpp, default=None,
                     help="µm per pixel, for slides whose file does not say")
    seg.add_argument("--normalise-stain", default="none",
                     choices=[str(c) for c in StainNormalisation],
                     help="map each slide's colours to the model's training stain first (fitted "
                          "once per slide; default none)")
    seg.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    seg.add_argument("--scheduler", default=None,
                     help="address of a dask.distributed scheduler; one task per slide")
    seg.add_argument("--geojson", action="store_true",
                     help="also write <slide>.geojson beside the masks, for QuPath")

    sv = sub.add_parser("segment-volume", help="segment fetal MRI regions in 3D volumes")
    sv.add_argument("volumes", nargs="+", type=Path)
    sv.add_argument("--region", default="all", choices=[*vocab.FETAL_REGION_CODES, "all"])
    sv.add_argument("--model", default="fetal", help="checkpoint file or bundled model name")
    sv.add_argument("--flips", action=argparse.BooleanOptionalAction, default=True,
                    help="average the prediction with its three mirrored ones (default; "
                         "--no-flips is 4x faster and less accurate)")
    sv.add_argument("--clean-up", action=argparse.BooleanOptionalAction, default=True,
                    help="uterus, body, brain and placenta keep only their largest piece, the "
                         "eyes only their pieces inside the fetal body (default; --no-clean-up "
                         "keeps every piece)")
    sv.add_argument("--all-pieces", dest="clean_up", action="store_false",
                    help=argparse.SUPPRESS)  # the earlier name of --no-clean-up
    sv.add_argument("-o", "--out", type=Path, required=True, help="output folder")

    info = sub.add_parser("info", help="describe slides or volumes (levels, pixel size)")
    info.add_argument("paths", nargs="+", type=Path)
    info.add_argument("--mpp", type=A.mpp, default=None,
                      help="µm per pixel, for slides whose file does not say")
    for parser, run in ((seg, _segment), (sv, _segment_volume), (info, _info),):
        parser.set_defaults(run=run)


def _segment(args: argparse.Namespace) -> int:
    from ..predict.batch import segment_slides

    tissues = list(vocab.TISSUE_CODES) if args.tissue == "all" else [args.tissue]
    mag = None if args.magnification == "auto" else float(args.magnification)
    def work(bar) -> dict:
        result = segment_slides(args.slides, tissues, mag, args.model, args.out, mpp=args.mpp,
                                scheduler=args.scheduler, progress=bar,
                                normalise_stain=args.normalise_stain)
        if args.geojson:
            from ..quantify.files import geojson_beside_masks

            geojson_beside_masks(result, args.out)
        return result

    return batch(args, "segment", work)


def _segment_volume(args: argparse.Namespace) -> int:
    from ..predict.batch import segment_volumes

    return batch(args, "segment-volume", lambda bar: segment_volumes(
        args.volumes, (args.region,), args.model, args.out, flips=args.flips,
        clean_up=args.clean_up, progress=bar))


def _info(args: argparse.Namespace) -> int:
    from ..io.slides import SLIDE_SUFFIXES, open_slide
    from ..io.volumes import is_volume_file, open_volume

    failed = 0
    for path in args.paths:
        try:
            if is_volume_file(path):
                v = open_volume(path)
                out = {"path": str(path), "kind": "volume", "shape_zyx": list(v.data.shape),
                       "spacing_mm_zyx": list(v.spacing), "dtype": str(v.data.dtype)}
            elif path.suffix.lower() in SLIDE_SUFFIXES:
                s = open_slide(path, mpp=args.mpp)
                out = {"path": str(path), "kind": "slide", "format": s.source,
                       "levels": [list(lv.shape[:2]) for lv in s.levels],
                       "downsamples": s.downsamples, "mpp": s.mpp,
                       "magnification": s.magnification}
                s.close()
            else:
                raise OmnisegInputError(f"{path.name} is neither a slide nor a volume file")
            print(json.dumps(out, allow_nan=False))  # NaN is not JSON
        except Exception as e:
            print(f"omniseg: error: {failure_sentence(path.name, e)}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0

