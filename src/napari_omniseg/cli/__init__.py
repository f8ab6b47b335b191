"""``omniseg``: the plugin's capabilities without a display.

Sub-commands::

    omniseg simulate renal -o OUT [--stain he|pas|sil|tri|all] [--height H --width W] ...
    omniseg simulate fetal -o OUT [--count N] [--seed S] ...
    omniseg simulate samples [-o sample_data]
    omniseg info FILE [FILE...] [--mpp X]
    omniseg train renal|fetal -o MODEL.pt [--minutes M] ...
    omniseg segment SLIDE [SLIDE...] [--tissue T] [--magnification M] -o OUT
    omniseg segment-volume VOLUME [VOLUME...] [--region R] -o OUT
    omniseg finetune --manifest CSV [--base MODEL] [--minutes M] -o OUT.pt   (kidney or fetal)
    omniseg evaluate --manifest CSV [--model MODEL] [--normalise-stain reinhard|macenko]
    omniseg adapt --target SLIDE|FOLDER|CSV [--manifest CSV] [--levels encoder,decoder,shape]
                  [--minutes M] -o OUT.pt
    omniseg train synthesis [--manifest CSV] [--simulated N] [--segmenter-out S.pt] -o G.pt
    omniseg train average MODEL MODEL [MODEL...] [--weights W W...] [--half] -o OUT.pt
    omniseg synthesize MASK --stain S [--magnification M] [--seed N] -o OUT.ome.tif
    omniseg export MASKS... --format geojson|ome-tiff|csv -o OUT
    omniseg quantify MASKS... [--slide SLIDE] [--spots hex|POSITIONS] -o OUT.csv
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import OmnisegInputError
from . import adapt, blocks, finetune, measure, segment, simulate, synthesize, train
from .common import terminate_like_ctrl_c

#: The command groups, in the order ``omniseg --help`` lists them.
GROUPS = (simulate, train, synthesize, segment, finetune, blocks, adapt, measure)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``omniseg`` command: each group adds its commands."""
    p = argparse.ArgumentParser(
        prog="omniseg", description="napari-omniseg without a display: simulate, train, segment, "
        "fine-tune and evaluate. 'omniseg COMMAND --help' describes each command.")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``omniseg`` console script."""
    args = build_parser().parse_args(argv)
    with terminate_like_ctrl_c():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return args.run(args)  # set by build_parser for each (sub-)command
    except OmnisegInputError as e:
        print(f"omniseg: error: {e}", file=sys.stderr)
        return 2
    except (InterruptedError, KeyboardInterrupt):  # Ctrl-C: no traceback
        print("omniseg: stopped", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("OMNISEG_DEBUG"):
            raise
        from ..errors import short_reason

        print(f"omniseg: error: {short_reason(e)} (set OMNISEG_DEBUG=1 to see where)",
              file=sys.stderr)
        return 1

