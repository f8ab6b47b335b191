"""``omniseg train renal|fetal|synthesis|three-player``: models from scratch; ``omniseg train
average``: one model from several; ``calibrate``: its decision thresholds."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from ..choices import GeneratorArchitecture, Perceptual
from ..errors import OmnisegInputError
from . import args as A
from .common import add_anatomy_arguments, ctrl_c_stops, holding_output_file, progress_bar


def add_commands(sub: Any) -> None:
    """Add the train command(s) to the ``omniseg`` sub-parsers."""
    from ..train.fetal import LOSSES, SAMPLINGS  # numpy only: torch stays unloaded

    tr = sub.add_parser("train", help="train a model")
    trsub = tr.add_subparsers(dest="what", required=True)
    tr_r = trsub.add_parser("renal", help="train the renal Omni-Seg+ model on simulated slides")
    tr_r.add_argument("-o", "--out", type=Path, required=True, help="checkpoint to write (.pt)")
    tr_r.add_argument("--minutes", type=A.positive_float, default=90.0,
                      help="total budget, simulation included")
    tr_r.add_argument("--slides", type=A.positive_int, default=60, help="simulated 1 mm² slides")
    tr_r.add_argument("--width", type=A.positive_float, default=0.5,
                      help="channel width (1 = the published network)")
    tr_r.add_argument("--batch", type=A.positive_int, default=8)
    tr_r.add_argument("--lr", type=A.positive_float, default=2e-3)
    tr_r.add_argument("--bank", type=Path, default=None,
                      help="cache of simulated training patches (.npz), reused if present")
    tr_r.add_argument("--evaluate", type=A.non_negative_int, default=0, metavar="N",
                      help="afterwards, Dice on N held-out simulated slides per stain")
    tr_r.add_argument("--half", action="store_true",
                      help="store the final weights in float16 (half the file)")
    tr_r.add_argument("--real", type=Path, default=None, metavar="MANIFEST.csv",
                      help="also learn from the 'train' rows of this annotated manifest (the "
                           "fine-tuning CSV; other rows are never used)")
    tr_r.add_argument("--real-fraction", type=A.real(0, 1), default=0.5,
                      help="share of each batch drawn from --real rows")
    tr_r.add_argument("--init", default=None, metavar="MODEL",
                      help="start from this renal checkpoint ('renal': the bundled one)")
    tr_r.add_argument("--stain-p", type=A.real(0, 1), default=0.0,
                      help="share of patches re-dyed with random stain vectors")
    tr_r.add_argument("--jpeg-p", type=A.real(0, 1), default=0.0,
                      help="share of patches JPEG-compressed at a random quality")
    tr_r.add_argument("--edge-p", type=A.real(0, 1), default=0.0,
                      help="share of patches with a band mirrored along a side, as Segment "
                           "pads an image smaller than one tile")
    add_anatomy_arguments(tr_r, " (give a new --bank)")
    tr_r.add_argument("--disjoint-p", type=A.real(0, 1), default=0.0,
                      help="share of --real patches asked for a tissue that never shares a "
                           "pixel with the painted one (its pixels known negatives)")
    tr_r.add_argument("--seed", type=A.seed, default=0,
                      help="seed of the batches' draws and augmentation (runs of one recipe "
                           "with different seeds can be averaged)")

    tr_s = trsub.add_parser("synthesis", help="train a pyramid generator of histology from "
                                              "tissue masks")
    _synthesis_arguments(tr_s, game=False)
    tr_3 = trsub.add_parser("three-player", help="the three-player game: a generator and a renal "
                                                 "segmenter against the discriminators")
    _synthesis_arguments(tr_3, game=True)

    tr_f = trsub.add_parser("fetal", help="train CoNeMOS (or the baseline) on fetal phantoms")
    tr_f.add_argument("-o", "--out", type=Path, required=True, help="checkpoint to write (.pt)")
    tr_f.add_argument("--minutes", type=A.positive_float, default=100.0)
    tr_f.add_argument("--volumes", type=A.positive_int, default=60)
    tr_f.add_argument("--batch", type=A.positive_int, default=2)
    tr_f.add_argument("--crop", type=A.positive_int, default=64)
    tr_f.add_argument("--regions-per-crop", type=A.positive_int, default=1,
                      help="CoNeMOS: also train each crop under up to N-1 other labelled "
                           "regions of its volume")
    tr_f.add_argument("--region-sampling", choices=SAMPLINGS, default="balanced",
                      help="every labelled region equally often, or regions drawn inversely "
                           "to their labelled count")
    tr_f.add_argument("--loss", choices=LOSSES, default="dice+bce",
                      help="soft Dice + cross-entropy (the bundled model) or soft Dice alone "
                           "(the CoNeMOS paper's loss)")
    tr_f.add_argument("--baseline", action="store_true",
                      help="the unconditioned U-Net with one output per region instead")
    tr_f.add_argument("--evaluate", type=A.non_negative_int, default=0, metavar="N",
                      help="afterwards, Dice per region on N held-out phantoms")
    tr_a = trsub.add_parser(
        "average", help="one model from several: the mean of their weights (models "
                        "fine-tuned from one starting model; the same size and speed)")
    tr_a.add_argument("models", nargs="+", metavar="MODEL",
                      help="two or more checkpoints of one kind ('renal': the bundled one)")
    tr_a.add_argument("-o", "--out", type=Path, required=True, help="checkpoint to write (.pt)")
    tr_a.add_argument("--half", action="store_true",
                      help="store the weights in float16 (half the file)")
    tr_a.add_argument("--weights", type=float, nargs="+", metavar="W",
                      help="one weight per model (default: equal), e.g. '0.5 0.5' for a "
                           "starting model and its fine-tuned copy")
    tr_c = trsub.add_parser(
        "calibrate", help="choose a renal model's decision threshold per tissue on annotated "
                          "rows (weights unchanged)")
    tr_c.add_argument("model", help="the renal checkpoint ('renal': the bundled one)")
    tr_c.add_argument("--manifest", type=Path, required=True,
                      help="annotated patches (the fine-tuning CSV)")
    tr_c.add_argument("--split", default="train",
                      help="the rows to choose on (never the ones you score on afterwards)")
    tr_c.add_argument("-o", "--out", type=Path, required=True, help="checkpoint to write (.pt)")
    for parser, run in ((tr_r, _train_renal), (tr_f, _train_fetal), (tr_s, _train_synthesis),
                        (tr_3, _train_synthesis), (tr_a, _train_average),
                        (tr_c, _train_calibrate)):
        parser.set_defaults(run=run)


def _stopped_code(recipe: dict) -> int:
    """130 when Ctrl-C ended training (the model so far was saved, as at the end), else 0."""
    return 130 if recipe.get("stopped") else 0


def _synthesis_arguments(parser: Any, game: bool) -> None:
    """The options of ``train synthesis`` (``game``: of ``train three-player``, whose
    ``--segmenter-out`` is required; ``train synthesis --segmenter-out`` still plays the game,
    the earlier spelling, no longer listed)."""
    parser.add_argument("-o", "--out", type=Path, required=True,
                        help="generator checkpoint to write (.pt)")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="annotated patches (the fine-tuning CSV: image, mask, tissue, "
                             "stain, magnification[, split]); only rows of --split train")
    parser.add_argument("--split", default="train",
                        help="rows of this split (default train; 'all' for every row)")
    parser.add_argument("--simulated", type=A.integer(0, 1000), default=4, metavar="SLIDES",
                        help="also simulated 1 mm² slides of every stain (0: none)")
    parser.add_argument("--minutes", type=A.positive_float, default=30.0)
    parser.add_argument("--steps", type=A.positive_int, default=None,
                        help="stop after this many steps (or --minutes, whichever comes first)")
    parser.add_argument("--crop", type=A.integer(16, 1024), default=128,
                        help="training crop side (a multiple of 8)")
    parser.add_argument("--batch", type=A.integer(1, 256), default=4)
    parser.add_argument("--levels", type=int, default=4, choices=[2, 3, 4, 5],
                        help="pyramid levels (each half the side of the next)")
    parser.add_argument("--perceptual", choices=[p.value for p in Perceptual],
                        default=Perceptual.SEGMENTER.value,
                        help="L1 on the bundled renal segmenter's encoder features (default), "
                             "or no perceptual loss")
    parser.add_argument("--init", default=None, metavar="G.pt",
                        help="go on training this generator ('synthesis': the bundled one) "
                             "instead of a new one")
    parser.add_argument("--seed", type=A.seed, default=0)
    hidden = None if game else argparse.SUPPRESS
    if not game:
        parser.add_argument("--width", type=A.integer(4, 512), default=32)
        parser.add_argument("--architecture", choices=[a.value for a in GeneratorArchitecture],
                            default=GeneratorArchitecture.PYRAMID.value,
                            help="the pyramid generator (default) or the single-scale "
                                 "pix2pix-style baseline")
        parser.add_argument("--prior", action="store_true",
                            help="a pyramid generator that also reads the anatomy prior "
                                 "drawn from the mask (nuclei, epithelium, lumens) and learns "
                                 "the real appearance on top of it")
    parser.add_argument("--segmenter-out", type=Path, required=game, default=None,
                        metavar="S.pt", help=hidden or "the renal segmenter to write (trained "
                        "from the bundled one against the discriminators)")
    parser.add_argument("--unlabelled", type=Path, default=None, metavar="CSV",
                        help=hidden or "a manifest whose images (rows of --split) are used "
                        "without their masks (semi-supervised)")
    parser.add_argument("--segmenter-adversarial", type=A.real(0, 100), default=1.0,
                        metavar="W", help=hidden or "weight of the segmenter's adversarial "
                        "loss (the paper's: 1)")


@holding_output_file("bank")
def _train_renal(args: argparse.Namespace) -> int:
    from ..train.renal import RenalRecipe, dice_table, evaluate_simulated, train_renal

    chosen = RenalRecipe(slides=args.slides, width=args.width, batch=args.batch, lr=args.lr,
                         real_manifest=str(args.real) if args.real else None,
                         real_fraction=args.real_fraction, init=args.init,
                         stain_p=args.stain_p, jpeg_p=args.jpeg_p, edge_p=args.edge_p,
                         disjoint_p=args.disjoint_p, ptc_slits=args.ptc_slits,
                         small_vessels=args.small_vessels, veins=args.veins, seed=args.seed)
    with progress_bar("train renal") as bar, ctrl_c_stops("training") as should_stop:
        recipe = train_renal(args.out, chosen, minutes=args.minutes, bank_path=args.bank,
                             half=args.half, progress=bar, should_stop=should_stop).recipe
    print(json.dumps(recipe, indent=2))
    if args.evaluate:
        from ..checkpoints import default_bf16, load_model
        from ..train.renal import evaluation_seeds

        model = load_model(args.out)
        scores = evaluate_simulated(model, seeds=evaluation_seeds(args.evaluate),
                                    bf16=default_bf16(model))
        print(dice_table(scores))
    return _stopped_code(recipe)


@holding_output_file("models")
def _train_average(args: argparse.Namespace) -> int:
    from ..checkpoints import read_metadata
    from ..train.average import average_checkpoints, drops_familiarity

    average_checkpoints(args.models, args.out, half=args.half, weights=args.weights)
    print(json.dumps({"out": str(args.out),
                      "averaged_from": read_metadata(args.out)["averaged_from"]}, indent=2))
    if drops_familiarity(args.models):
        print("omniseg: note: the average has no familiarity record (Segment's "
              "out-of-distribution warning); refit it as docs/training.md shows",
              file=sys.stderr)
    return 0


@holding_output_file("model", "manifest")
def _train_calibrate(args: argparse.Namespace) -> int:
    from ..train.calibrate import calibrate_checkpoint

    with progress_bar("calibrate") as bar:  # seconds; Ctrl-C leaves no file
        table = calibrate_checkpoint(args.model, args.manifest, args.out, split=args.split,
                                     progress=bar)
    print(json.dumps({"out": str(args.out), "tissues": table}, indent=2))
    return 0


@holding_output_file()
def _train_fetal(args: argparse.Namespace) -> int:
    from ..train.fetal import FetalRecipe, evaluate_fetal, train_fetal

    chosen = FetalRecipe(volumes=args.volumes, batch=args.batch, crop=args.crop,
                         baseline=args.baseline, regions_per_crop=args.regions_per_crop,
                         loss=args.loss, sampling=args.region_sampling)
    with progress_bar("train fetal") as bar, ctrl_c_stops("training") as should_stop:
        recipe = train_fetal(args.out, chosen, minutes=args.minutes, progress=bar,
                             should_stop=should_stop).recipe
    print(json.dumps(recipe, indent=2))
    if args.evaluate:
        from ..checkpoints import load_model

        print(json.dumps(evaluate_fetal(load_model(args.out), list(range(1, 1 + args.evaluate))),
                         indent=2))
    return _stopped_code(recipe)


@holding_output_file("manifest", "unlabelled", "init", also="segmenter_out")
def _train_synthesis(args: argparse.Namespace) -> int:
    import time

    from ..train.synthesis import train_generator, training_pairs

    started = time.perf_counter()
    split = None if args.split == "all" else args.split
    with progress_bar("simulate") if args.simulated else contextlib.nullcontext() as bar:
        pairs, sources = training_pairs(args.manifest, split, args.simulated, progress=bar)
    if args.segmenter_out is not None:
        return _train_three_player(args, pairs, sources, started)
    if args.unlabelled is not None:
        raise OmnisegInputError("--unlabelled belongs to the three-player game: give "
                                "--segmenter-out too")
    with progress_bar("train synthesis") as bar, ctrl_c_stops("training") as should_stop:
        recipe = train_generator(args.out, pairs, minutes=args.minutes, max_steps=args.steps,
                                 crop=args.crop, batch=args.batch, width=args.width,
                                 levels=args.levels, perceptual=args.perceptual,
                                 architecture=args.architecture, init=args.init,
                                 seed=args.seed, prior=args.prior,
                                 trained_on=" + ".join(sources), started=started,
                                 progress=bar, should_stop=should_stop).recipe
    print(json.dumps(recipe, indent=2))
    return _stopped_code(recipe)


def _train_three_player(args: argparse.Namespace, pairs, sources: list[str],
                        started: float) -> int:
    from ..train.synthesis import pairs_from_manifest
    from ..train.three_player import train_three_player

    unlabelled = None
    if args.unlabelled is not None:
        split = None if args.split == "all" else args.split
        unlabelled = pairs_from_manifest(args.unlabelled, split=split)
        sources.append(f"{args.unlabelled.name} images without masks ({len(unlabelled)})")
    with progress_bar("three-player game") as bar, ctrl_c_stops("training") as should_stop:
        recipe = train_three_player(args.out, args.segmenter_out, pairs,
                                    unlabelled=unlabelled, generator_init=args.init,
                                    adv_weight=args.segmenter_adversarial,
                                    minutes=args.minutes, max_steps=args.steps,
                                    levels=args.levels, crop=args.crop, batch=args.batch,
                                    perceptual=args.perceptual, seed=args.seed,
                                    trained_on=" + ".join(sources), started=started,
                                    progress=bar, should_stop=should_stop).recipe
    print(json.dumps(recipe, indent=2))
    return _stopped_code(recipe)

