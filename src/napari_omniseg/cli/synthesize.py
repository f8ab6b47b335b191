"""``omniseg synthesize``: histology from a painted mask."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .. import vocab
from ..choices import GENERATOR
from . import args as A
from .common import holding_output_file, progress_bar


def add_commands(sub: Any) -> None:
    """Add the synthesize command(s) to the ``omniseg`` sub-parsers."""
    syn = sub.add_parser("synthesize", help="histology from a painted mask, as a pyramidal "
                                            "OME-TIFF")
    syn.add_argument("mask", type=Path,
                     help="label image (1 DT, 2 PT, 3 CAP, 4 TUFT, 5 VES, 6 PTC; 0 unpainted), "
                          "or masks written by 'omniseg segment'")
    syn.add_argument("--stain", required=True, choices=list(vocab.STAINS))
    syn.add_argument("--magnification", type=int, default=None,
                     choices=list(vocab.MAGNIFICATIONS),
                     help="of the mask's pixels (default: from its pixel size)")
    syn.add_argument("--seed", type=A.seed, default=0,
                     help="one seed gives one image, another a variation")
    syn.add_argument("--generator", default=GENERATOR,
                     help="generator checkpoint (default: the bundled one), or 'prior': the "
                          "simulator's anatomy (nuclei, epithelium, lumens) drawn inside the "
                          "painted regions, without a learned model")
    syn.add_argument("--mpp", type=A.mpp, default=None,
                     help="µm per pixel, for masks whose file does not say")
    syn.add_argument("-o", "--out", type=Path, required=True, help="image to write (.ome.tif)")
    for parser, run in ((syn, _synthesize),):
        parser.set_defaults(run=run)


@holding_output_file("mask", "generator")
def _synthesize(args: argparse.Namespace) -> int:
    from ..predict.synthesize_file import synthesize_file

    with progress_bar("synthesize") as bar:
        result = synthesize_file(args.mask, args.out, args.stain, args.magnification,
                                 seed=args.seed, generator=args.generator, mpp=args.mpp,
                                 progress=bar)
    print(json.dumps(result, indent=2))
    return 0

