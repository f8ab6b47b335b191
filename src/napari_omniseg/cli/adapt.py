"""``omniseg adapt``: the kidney model adapted to unlabelled images of the user's slides."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

from ..choices import AdaptLevel, StainNormalisation
from ..errors import OmnisegInputError
from . import args as A
from .common import ctrl_c_stops, holding_output_file, print_validation, progress_bar


def levels(text: str) -> tuple[AdaptLevel, ...]:
    """``encoder,decoder,shape`` (any of them, comma-separated) or ``none``."""
    if text.strip().lower() == "none":
        return ()
    names = [t.strip() for t in text.split(",") if t.strip()]
    try:
        out = tuple(AdaptLevel(n) for n in names)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if len(set(out)) != len(out) or not out:
        raise argparse.ArgumentTypeError(f"name each of encoder, decoder, shape at most once, "
                                         f"or none; got {text!r}")
    return out


def add_commands(sub: Any) -> None:
    """Add the adapt command to the ``omniseg`` sub-parsers."""
    ad = sub.add_parser(
        "adapt", help="adapt the kidney model to unlabelled images of your slides (multi-level "
                      "adversarial adaptation)")
    ad.add_argument("--target", type=Path, required=True,
                    help="the unlabelled images: a slide (tissue crops are sampled at 5, 10 "
                         "and 40x), a folder of images, or a CSV with an image column "
                         "(optionally magnification or mpp; a mask column is ignored)")
    ad.add_argument("--manifest", type=Path, default=None,
                    help="labelled kidney patches (the finetune manifest; its train rows teach, "
                         "its val rows pick the best weights); default: simulated slides, the "
                         "bundled model's own training data")
    ad.add_argument("--base", default=None,
                    help="starting checkpoint or bundled name (default: the bundled kidney "
                         "model)")
    ad.add_argument("--minutes", type=A.positive_float, default=15.0)
    ad.add_argument("--levels", type=levels, default=tuple(AdaptLevel),
                    help="discriminators, comma-separated: encoder, decoder, shape (default "
                         "all three), or none (the source alone, a baseline)")
    ad.add_argument("--magnification", type=A.real(1, 100), default=None,
                    help="the target images' objective power when the files do not say")
    ad.add_argument("--mpp", type=A.mpp, default=None,
                    help="the target images' µm per pixel when the files do not say")
    ad.add_argument("--normalise-stain", default="none",
                    choices=[str(c) for c in StainNormalisation],
                    help="map each target image's colours to the labelled source's first; "
                         "then segment with the same --normalise-stain (default none)")
    ad.add_argument("--seed", type=A.seed, default=0)
    ad.add_argument("-o", "--out", type=Path, required=True, help="checkpoint to write (.pt)")
    ad.set_defaults(run=_adapt)


@holding_output_file("target", "manifest", "base")
def _adapt(args: argparse.Namespace) -> int:
    from ..checkpoints import load_model
    from ..tasks import task_of_manifest
    from ..train.adapt import AdaptOptions, run_adapt
    from ..train.adapt_targets import targets_from_path
    from ..train.annotations import read_manifest
    from ..train.finetune_renal import evaluate_annotations

    options = AdaptOptions(minutes=args.minutes, levels=args.levels, seed=args.seed,
                           normalise_stain=args.normalise_stain)
    source, val = None, None
    if args.manifest is not None:
        if task_of_manifest(args.manifest).name != "renal":
            raise OmnisegInputError(f"{args.manifest.name} lists fetal volumes; adaptation "
                                    "covers kidney patches")
        splits = read_manifest(args.manifest)
        source, val = splits.get("train", []), splits.get("val", [])
        if not source:
            raise OmnisegInputError(f"{args.manifest.name} has no training rows")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        targets = targets_from_path(args.target, crop=options.crop,
                                    magnification=args.magnification, mpp=args.mpp,
                                    seed=args.seed)
    for w in caught:
        print(f"omniseg: warning: {w.message}")
    base_name = args.base or "renal"
    with progress_bar("adapt") as bar, ctrl_c_stops("adaptation") as should_stop:
        result = run_adapt(load_model(base_name), str(base_name), targets, args.out, options,
                           source=source, val=val or None, progress=bar,
                           should_stop=should_stop, on_validate=print_validation)
    summary = {"checkpoint": str(args.out), "steps": result.steps, "stopped": result.stopped,
               "seconds": round(result.seconds, 1), "targets": targets.summary()}
    if val:
        summary["val"] = evaluate_annotations(result.model, val,
                                              normalise_stain=args.normalise_stain)
    print(json.dumps(summary, indent=2))
    return 130 if result.stopped else 0
