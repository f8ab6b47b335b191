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
    omniseg evaluate --manifest CSV [--model MODEL]
    omniseg train synthesis [--manifest CSV] [--simulated N] [--segmenter-out S.pt] -o G.pt
    omniseg synthesize MASK --stain S [--magnification M] [--seed N] -o OUT.ome.tif
    omniseg export MASKS... --format geojson|ome-tiff|csv -o OUT
    omniseg quantify MASKS... [--slide SLIDE] [--spots hex|POSITIONS] -o OUT.csv
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

from . import cli_args as A
from . import vocab
from .errors import OmnisegInputError, failure_sentence
from .io.atomic import output_file, output_folder, write_text_atomically


@contextmanager
def _bar(desc: str):
    """A tqdm progress bar for the run contract's ``progress(done, total, message)``."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="step", file=sys.stderr, leave=True)

    def progress(done: int, total: int, message: str) -> None:
        bar.total, bar.n = total, done
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    try:
        yield progress
    finally:
        bar.close()


def _slide_side(text: str) -> int:
    v = A.positive_int(text)
    if not 256 <= v <= 200_000:  # 200,000 px at 40x is 5 cm, larger than any glass slide
        raise argparse.ArgumentTypeError(f"must be 256 to 200000 pixels, got {text}")
    return v


#: The per-tissue minimum object sizes, as the help states them.
_MIN_SIZES = ", ".join(f"{code.upper()} {v:g}" for code, v in vocab.MIN_OBJECT_UM2.items())


@contextmanager
def _ctrl_c_stops(what: str):
    """While inside, the first Ctrl-C asks long work to stop at its next step (it then keeps
    what it has, like the widgets' Stop); a second Ctrl-C interrupts at once. Yields the
    ``should_stop`` callable."""
    import signal

    asked = threading.Event()

    def on_ctrl_c(signum, frame):
        if asked.is_set():
            raise KeyboardInterrupt
        asked.set()
        print(f"\nomniseg: stopping {what} after this step and keeping the best model so far "
              "(Ctrl-C again to abort)", file=sys.stderr)

    with _handling(signal.SIGINT, on_ctrl_c):
        yield asked.is_set


@contextmanager
def _handling(signum: int, handler: Callable):
    """``handler`` answers signal ``signum`` while inside; the previous handler comes back
    after. Only the main thread receives signals, so elsewhere nothing changes."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, previous)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``omniseg`` command."""
    from .train.fetal import LOSSES, SAMPLINGS  # numpy only: torch stays unloaded

    p = argparse.ArgumentParser(
        prog="omniseg", description="napari-omniseg without a display: simulate, train, segment, "
        "fine-tune and evaluate. 'omniseg COMMAND --help' describes each command.")
    sub = p.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="generate synthetic kidney slides or fetal MRI")
    simsub = sim.add_subparsers(dest="what", required=True)

    r = simsub.add_parser("renal", help="synthetic kidney cortex as pyramidal OME-TIFF + masks")
    r.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    r.add_argument("--stain", default="he", choices=[*vocab.STAINS, "all"])
    r.add_argument("--height", type=_slide_side, default=4096, help="pixels at 40x")
    r.add_argument("--width", type=_slide_side, default=4096, help="pixels at 40x")
    r.add_argument("--seed", type=A.seed, default=0)
    r.add_argument("--count", type=A.positive_int, default=1, help="slides (seeds seed, seed+1..)")
    r.add_argument("--shape", default="full", choices=["full", "biopsy"])
    r.add_argument("--levels", type=int, default=4, choices=[1, 2, 3, 4])
    r.add_argument("--no-masks", action="store_true", help="write the image only")

    f = simsub.add_parser("fetal", help="fetal MRI phantoms as NIfTI + region masks")
    f.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    f.add_argument("--seed", type=A.seed, default=0)
    f.add_argument("--count", type=A.positive_int, default=1)
    f.add_argument("--size", type=A.integer(32, 128), default=128, help="voxels per axis (32-128)")
    f.add_argument("--spacing", type=A.positive_float, default=3.0, help="mm per voxel")
    f.add_argument("--all-masks", action="store_true",
                   help="also write masks of regions a volume is not labelled for")

    s = simsub.add_parser("samples", help="regenerate the bundled napari sample files")
    s.add_argument("-o", "--out", type=Path, default=Path("sample_data"))

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

    tr_s = trsub.add_parser("synthesis", help="train a pyramid generator of histology from "
                                              "tissue masks")
    tr_s.add_argument("-o", "--out", type=Path, required=True, help="checkpoint to write (.pt)")
    tr_s.add_argument("--manifest", type=Path, default=None,
                      help="annotated patches (the fine-tuning CSV: image, mask, tissue, stain, "
                           "magnification[, split]); only rows of --split train")
    tr_s.add_argument("--split", default="train",
                      help="rows of this split (default train; 'all' for every row)")
    tr_s.add_argument("--simulated", type=A.integer(0, 1000), default=4, metavar="SLIDES",
                      help="also simulated 1 mm² slides of every stain (0: none)")
    tr_s.add_argument("--minutes", type=A.positive_float, default=30.0)
    tr_s.add_argument("--steps", type=A.positive_int, default=None,
                      help="stop after this many steps (or --minutes, whichever comes first)")
    tr_s.add_argument("--crop", type=A.integer(16, 1024), default=128,
                      help="training crop side (a multiple of 8)")
    tr_s.add_argument("--batch", type=A.integer(1, 256), default=4)
    tr_s.add_argument("--width", type=A.integer(4, 512), default=32)
    tr_s.add_argument("--levels", type=int, default=4, choices=[2, 3, 4, 5],
                      help="pyramid levels (each half the side of the next)")
    tr_s.add_argument("--perceptual", choices=["segmenter", "none"], default="segmenter",
                      help="L1 on the bundled renal segmenter's encoder features (default), or "
                           "no perceptual loss")
    tr_s.add_argument("--architecture", choices=["pyramid", "single"], default="pyramid",
                      help="the pyramid generator (default) or the single-scale pix2pix-style "
                           "baseline")
    tr_s.add_argument("--segmenter-out", type=Path, default=None, metavar="S.pt",
                      help="play the three-player game: also train a renal segmenter (from the "
                           "bundled one) against the discriminators and write it here")
    tr_s.add_argument("--unlabelled", type=Path, default=None, metavar="CSV",
                      help="with --segmenter-out: a manifest whose images (rows of --split) "
                           "are used without their masks (semi-supervised)")
    tr_s.add_argument("--segmenter-adversarial", type=A.real(0, 100), default=1.0, metavar="W",
                      help="with --segmenter-out: weight of the segmenter's adversarial loss "
                           "(the paper's: 1)")
    tr_s.add_argument("--init", default=None, metavar="G.pt",
                      help="go on training this generator ('synthesis': the bundled one) "
                           "instead of a new one")
    tr_s.add_argument("--seed", type=A.seed, default=0)

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
    syn.add_argument("--generator", default="synthesis",
                     help="generator checkpoint (default: the bundled one)")
    syn.add_argument("--mpp", type=A.mpp, default=None,
                     help="µm per pixel, for masks whose file does not say")
    syn.add_argument("-o", "--out", type=Path, required=True, help="image to write (.ome.tif)")

    seg = sub.add_parser("segment", help="segment renal tissues on whole-slide images")
    seg.add_argument("slides", nargs="+", type=Path)
    seg.add_argument("--tissue", default="all", choices=[*vocab.TISSUE_CODES, "all"])
    seg.add_argument("--magnification", default="auto",
                     choices=["auto", *[str(m) for m in vocab.MAGNIFICATIONS]])
    seg.add_argument("--model", default="renal", help="checkpoint file or bundled model name")
    seg.add_argument("--mpp", type=A.mpp, default=None,
                     help="µm per pixel, for slides whose file does not say")
    seg.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    seg.add_argument("--scheduler", default=None,
                     help="address of a dask.distributed scheduler; one task per slide")
    seg.add_argument("--geojson", action="store_true",
                     help="also write <slide>.geojson beside the masks, for QuPath")

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
    tr_f.add_argument("--loss", choices=sorted(LOSSES), default="dice+bce",
                      help="soft Dice + cross-entropy (the bundled model) or soft Dice alone "
                           "(the CoNeMOS paper's loss)")
    tr_f.add_argument("--baseline", action="store_true",
                      help="the unconditioned U-Net with one output per region instead")
    tr_f.add_argument("--evaluate", type=A.non_negative_int, default=0, metavar="N",
                      help="afterwards, Dice per region on N held-out phantoms")

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

    ft = sub.add_parser("finetune", help="fine-tune on annotated kidney patches or fetal volumes")
    ft.add_argument("--manifest", type=Path, required=True,
                    help="CSV with columns image, mask, tissue, stain, magnification[, split] "
                         "(kidney patches), or image, mask, region[, annotated, split] (fetal "
                         "volumes)")
    ft.add_argument("--base", default=None,
                    help="starting checkpoint or bundled name (default: the bundled model of "
                         "the manifest's kind)")
    ft.add_argument("--minutes", type=A.positive_float, default=10.0)
    ft.add_argument("--split-column", default=None,
                    help="column saying train / val (rows named val are held out for "
                         "validation); default 'split', and without one every row trains")
    ft.add_argument("--semi", action="store_true",
                    help="add pseudo-labels and the consistency loss (off by default: they "
                         "lowered validation Dice on real kidney patches, see the docs)")
    ft.add_argument("--lr", type=A.positive_float, default=None,
                    help="learning rate (default 1e-3 kidney, 2e-4 fetal)")
    ft.add_argument("--synthetic", type=A.integer(0, 100_000), default=0, metavar="N",
                    help="kidney: N synthetic pairs per trained tissue (simulated layouts made "
                         "into images by --generator) join the batches after half the budget, "
                         "at loss weight 0.03")
    ft.add_argument("--generator", default="synthesis",
                    help="with --synthetic: generator checkpoint (default: the bundled one)")
    ft.add_argument("--seed", type=A.seed, default=0,
                    help="seed of the batches' order and augmentation (and of the synthetic "
                         "pairs)")
    ft.add_argument("-o", "--out", type=Path, required=True, help="checkpoint to write (.pt)")

    ev = sub.add_parser("evaluate", help="per-tissue Dice and 95%% Hausdorff (µm) on a manifest "
                                         "(per-region Dice for fetal volumes)")
    ev.add_argument("--manifest", type=Path, required=True)
    ev.add_argument("--model", default=None,
                    help="checkpoint file or bundled model name (default: the bundled model of "
                         "the manifest's kind)")
    ev.add_argument("--split-column", default=None,
                    help="column saying train / val (default 'split', if the manifest has it)")
    ev.add_argument("--split", default=None, help="only rows of this split (e.g. val)")

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
                         f"{_MIN_SIZES}); the file states the sizes used")
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
                    help=f"smallest object counted (µm²; default per tissue: {_MIN_SIZES})")
    qu.add_argument("--mpp", type=A.mpp, default=None,
                    help="µm per pixel, for files that do not say")
    qu.add_argument("--table", type=Path, default=None,
                    help="with --spots: a CSV keyed by barcode to correlate with")
    qu.add_argument("--column", default=None, help="with --table: its column to correlate")
    qu.add_argument("--tissue", default=None, choices=list(vocab.TISSUE_CODES),
                    help="with --table: the tissue whose percentage is correlated")
    qu.add_argument("-o", "--out", type=Path, required=True, help="CSV to write")

    info = sub.add_parser("info", help="describe slides or volumes (levels, pixel size)")
    info.add_argument("paths", nargs="+", type=Path)
    info.add_argument("--mpp", type=A.mpp, default=None,
                      help="µm per pixel, for slides whose file does not say")
    # what each (sub-)command runs: main() calls args.run(args)
    for parser, run in ((r, _simulate_renal), (f, _simulate_fetal), (s, _simulate_samples),
                        (tr_r, _train_renal), (tr_f, _train_fetal), (seg, _segment),
                        (sv, _segment_volume), (ft, _finetune), (ev, _evaluate), (info, _info),
                        (ex, _export), (qu, _quantify), (tr_s, _train_synthesis),
                        (syn, _synthesize)):
        parser.set_defaults(run=run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``omniseg`` console script."""
    args = build_parser().parse_args(argv)
    with _terminate_like_ctrl_c():
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
    except Exception as e:  # noqa: BLE001 (anything else is one sentence too)
        if os.environ.get("OMNISEG_DEBUG"):
            raise
        from .errors import short_reason

        print(f"omniseg: error: {short_reason(e)} (set OMNISEG_DEBUG=1 to see where)",
              file=sys.stderr)
        return 1


@contextmanager
def _terminate_like_ctrl_c():
    """While inside, a kill (SIGTERM, as a job scheduler sends) cleans up like Ctrl-C:
    temporary files go, the output folder is released."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    with _handling(signal.SIGTERM, interrupt):
        yield


def _holding_output_folder(command: Callable[[argparse.Namespace], int]
                           ) -> Callable[[argparse.Namespace], int]:
    """``command`` run while it holds its output folder (``-o``): one run at a time."""
    def held(args: argparse.Namespace) -> int:
        with output_folder(args.out):
            return command(args)

    return held


def _holding_output_file(*inputs: str, also: str | None = None
                         ) -> Callable[[Callable[[argparse.Namespace], int]],
                                       Callable[[argparse.Namespace], int]]:
    """``command`` run once its output file (``-o``; and the file named by the ``also``
    argument, if given) is checked and held: not one of the ``inputs`` (names of arguments
    holding paths), not a folder or device, in a writable folder, one run at a time. All of it
    before any work starts."""
    def wrap(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        def held(args: argparse.Namespace) -> int:
            given = [getattr(args, name, None) for name in inputs]
            # only files that exist can be overwritten ("hex", a bundled model's name: not)
            paths = [Path(str(p)) for g in given for p in (g if isinstance(g, list) else [g])
                     if p is not None and Path(str(p)).exists()]
            second = getattr(args, also, None) if also else None
            if second is not None and Path(second).resolve() == Path(args.out).resolve():
                raise OmnisegInputError(f"--{also.replace('_', '-')} and -o are the same file; "
                                        "give each model its own")
            with output_file(args.out, paths), (
                    output_file(second, paths + [args.out]) if second is not None
                    else contextlib.nullcontext()):
                return command(args)

        return held

    return wrap


@_holding_output_folder
def _simulate_renal(args: argparse.Namespace) -> int:
    from .simulate.renal import write_renal_slide

    stains = list(vocab.STAINS) if args.stain == "all" else [args.stain]
    for seed in range(args.seed, args.seed + args.count):
        for stain in stains:
            stem = f"renal_{stain}_seed{seed}"
            with _bar(stem) as bar:
                img, msk = write_renal_slide(
                    args.out / f"{stem}.ome.tif", args.height, args.width, stain=stain,
                    seed=seed, shape=args.shape, levels=args.levels,
                    masks_path=None if args.no_masks else args.out / f"{stem}_masks.ome.tif",
                    progress=bar,
                )
            print(img)
            if msk:
                print(msk)
    return 0


@_holding_output_folder
def _simulate_fetal(args: argparse.Namespace) -> int:
    from .simulate.fetal import simulate_fetal, write_fetal_nifti

    for seed in range(args.seed, args.seed + args.count):
        sample = simulate_fetal(seed, size=args.size, spacing=args.spacing)
        paths = write_fetal_nifti(sample, args.out, all_masks=args.all_masks)
        print(json.dumps({k: str(v) for k, v in paths.items()} | {
            "labelled": list(sample.labelled)}))
    return 0


@_holding_output_folder
def _simulate_samples(args: argparse.Namespace) -> int:
    from ._sample_data import write_samples

    with _bar("samples") as bar:
        for path in write_samples(args.out, progress=bar):
            print(path)
    return 0


@_holding_output_file("bank")
def _train_renal(args: argparse.Namespace) -> int:
    from .train.renal import dice_table, evaluate_simulated, train_renal

    with _bar("train renal") as bar:
        recipe = train_renal(args.out, minutes=args.minutes, slides=args.slides,
                             width=args.width, batch=args.batch, lr=args.lr,
                             bank_path=args.bank, half=args.half, progress=bar)
    print(json.dumps(recipe, indent=2))
    if args.evaluate:
        from .checkpoints import load_model
        from .train.renal import evaluation_seeds

        scores = evaluate_simulated(load_model(args.out), seeds=evaluation_seeds(args.evaluate),
                                    bf16=True)
        print(dice_table(scores))
    return 0


def _segment(args: argparse.Namespace) -> int:
    from .predict.batch import segment_slides

    tissues = list(vocab.TISSUE_CODES) if args.tissue == "all" else [args.tissue]
    mag = None if args.magnification == "auto" else float(args.magnification)
    def work(bar) -> dict:
        result = segment_slides(args.slides, tissues, mag, args.model, args.out, mpp=args.mpp,
                                scheduler=args.scheduler, progress=bar)
        if args.geojson:
            from .quantify.files import geojson_beside_masks

            geojson_beside_masks(result, args.out)
        return result

    return _batch(args, "segment", work)


@_holding_output_file("manifest", "unlabelled", "init", also="segmenter_out")
def _train_synthesis(args: argparse.Namespace) -> int:
    import time

    from .train.synthesis import pairs_from_bank, pairs_from_manifest, train_generator

    started = time.perf_counter()
    parts, sources = [], []
    if args.manifest is not None:
        split = None if args.split == "all" else args.split
        parts.append(pairs_from_manifest(args.manifest, split=split))
        sources.append(f"{args.manifest.name} ({args.split} rows, {len(parts[-1])} patches)")
    if args.simulated:
        from .train.renal_data import build_patch_bank

        with _bar("simulate") as bar:
            bank = build_patch_bank(list(range(7000, 7000 + args.simulated)), size=4096,
                                    patch=256, progress=bar)
        parts.append(pairs_from_bank(bank))
        sources.append(f"simulator ({args.simulated} slides, {len(bank)} patches)")
    if not parts:
        raise OmnisegInputError("nothing to train on: give --manifest or --simulated N")
    pairs = parts[0]
    for p in parts[1:]:
        pairs = pairs + p
    if args.segmenter_out is not None:
        return _train_three_player(args, pairs, sources, started)
    if args.unlabelled is not None:
        raise OmnisegInputError("--unlabelled belongs to the three-player game: give "
                                "--segmenter-out too")
    with _bar("train synthesis") as bar:
        recipe = train_generator(args.out, pairs, minutes=args.minutes, max_steps=args.steps,
                                 crop=args.crop, batch=args.batch, width=args.width,
                                 levels=args.levels, perceptual=args.perceptual,
                                 architecture=args.architecture, init=args.init,
                                 seed=args.seed,
                                 trained_on=" + ".join(sources), started=started, progress=bar)
    print(json.dumps(recipe, indent=2))
    return 0


def _train_three_player(args: argparse.Namespace, pairs, sources: list[str],
                        started: float) -> int:
    from .train.synthesis import pairs_from_manifest
    from .train.three_player import train_three_player

    unlabelled = None
    if args.unlabelled is not None:
        split = None if args.split == "all" else args.split
        unlabelled = pairs_from_manifest(args.unlabelled, split=split)
        sources.append(f"{args.unlabelled.name} images without masks ({len(unlabelled)})")
    with _bar("three-player game") as bar:
        recipe = train_three_player(args.out, args.segmenter_out, pairs,
                                    unlabelled=unlabelled, generator_init=args.init,
                                    adv_weight=args.segmenter_adversarial,
                                    minutes=args.minutes, max_steps=args.steps,
                                    levels=args.levels, crop=args.crop, batch=args.batch,
                                    perceptual=args.perceptual, seed=args.seed,
                                    trained_on=" + ".join(sources), started=started,
                                    progress=bar)
    print(json.dumps(recipe, indent=2))
    return 0


@_holding_output_file("mask", "generator")
def _synthesize(args: argparse.Namespace) -> int:
    from .predict.synthesize_file import synthesize_file

    with _bar("synthesize") as bar:
        result = synthesize_file(args.mask, args.out, args.stain, args.magnification,
                                 seed=args.seed, generator=args.generator, mpp=args.mpp,
                                 progress=bar)
    print(json.dumps(result, indent=2))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .quantify.files import export_masks

    return _batch(args, "export", lambda bar: export_masks(
        args.masks, args.format, args.out, mpp=args.mpp, object_type=args.objects,
        min_area_um2=args.min_area, progress=bar))


@_holding_output_file("masks", "slide", "spots", "table")
def _quantify(args: argparse.Namespace) -> int:
    from .quantify.files import quantify_files

    if (args.table is None) != (args.column is None):
        raise OmnisegInputError("--table and --column go together")
    if args.table is not None and not args.spots:
        raise OmnisegInputError("--table correlates per-spot percentages: give --spots too")
    with _bar("quantify") as bar:
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

    from .quantify.spots import correlate

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


def _batch(args: argparse.Namespace, name: str, work: Callable[..., dict]) -> int:
    """Run a batch into the output folder it holds (``work(progress)`` returns the summary),
    write summary.json, print it, then each failure as one line; exit 2 if any failed."""
    with output_folder(args.out), _bar(name) as bar:
        summary = work(bar)
        write_text_atomically(args.out / "summary.json", json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    for err in summary["failed"].values():
        print(f"omniseg: error: {err}", file=sys.stderr)
    return 2 if summary["failed"] else 0


@_holding_output_file()
def _train_fetal(args: argparse.Namespace) -> int:
    from .train.fetal import evaluate_fetal, train_fetal

    with _bar("train fetal") as bar:
        recipe = train_fetal(args.out, minutes=args.minutes, volumes=args.volumes,
                             batch=args.batch, crop=args.crop, baseline=args.baseline,
                             regions_per_crop=args.regions_per_crop, loss=args.loss,
                             sampling=args.region_sampling, progress=bar)
    print(json.dumps(recipe, indent=2))
    if args.evaluate:
        from .checkpoints import load_model

        print(json.dumps(evaluate_fetal(load_model(args.out), list(range(1, 1 + args.evaluate))),
                         indent=2))
    return 0


def _segment_volume(args: argparse.Namespace) -> int:
    from .predict.batch import segment_volumes

    return _batch(args, "segment-volume", lambda bar: segment_volumes(
        args.volumes, (args.region,), args.model, args.out, flips=args.flips,
        clean_up=args.clean_up, progress=bar))


def _info(args: argparse.Namespace) -> int:
    from .io.slides import SLIDE_SUFFIXES, open_slide
    from .io.volumes import is_volume_file, open_volume

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
        except Exception as e:  # noqa: BLE001 (one file's failure; the others go on)
            print(f"omniseg: error: {failure_sentence(path.name, e)}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


def _split_column(args: argparse.Namespace) -> str:
    """The manifest's split column; one the user names must exist (a misspelt name would
    silently train on the validation rows)."""
    from .io.manifest import columns

    if args.split_column is None:
        return "split"
    header = columns(args.manifest)
    if args.split_column not in header:
        raise OmnisegInputError(f"{args.manifest.name} has no column {args.split_column!r} "
                                f"(its columns: {', '.join(header)})")
    return args.split_column


@_holding_output_file("manifest", "base", "generator")
def _finetune(args: argparse.Namespace) -> int:
    from .checkpoints import load_model
    from .tasks import task_of_manifest

    task = task_of_manifest(args.manifest)
    args.split_column = _split_column(args)
    splits = task.read_manifest(args.manifest, args.split_column)
    train, val = splits.get("train", []), splits.get("val", [])
    if not train:
        raise OmnisegInputError(f"{args.manifest.name} has no training rows "
                                f"(column {args.split_column!r} = train)")
    if args.semi and not task.semi_supervision:
        raise OmnisegInputError("--semi applies to kidney patch manifests only; "
                                f"{args.manifest.name} lists volumes")
    base_name = args.base or task.name
    base = load_model(base_name)
    extra: dict = {}
    if args.synthetic:
        if not task.semi_supervision:  # the generator makes kidney histology only
            raise OmnisegInputError("--synthetic applies to kidney patch manifests only")
        extra["synthetic"] = _synthetic_pairs(args, train)
    with _bar("finetune") as bar, _ctrl_c_stops("fine-tuning") as should_stop:
        result = task.finetune(base, train, val, minutes=args.minutes, lr=args.lr or task.lr,
                               semi_supervised=args.semi, seed=args.seed, progress=bar,
                               on_validate=_print_validation, should_stop=should_stop,
                               **extra)
    meta = {"synthetic_pairs": len(extra["synthetic"]),
            "generator": str(args.generator)} if extra else {}
    task.save(result, args.out, str(base_name), train, val, semi_supervised=args.semi, **meta)
    summary = {"checkpoint": str(args.out), "steps": result.steps, "stopped": result.stopped,
               "seconds": round(result.seconds, 1), "history": result.history}
    if val:
        summary["val"] = task.evaluate(result.model, val)
    print(json.dumps(summary, indent=2))
    return 130 if result.stopped else 0


def _synthetic_pairs(args: argparse.Namespace, train: list) -> list:
    from .checkpoints import load_generator
    from .train.synthesis import synthetic_annotations

    g = load_generator(args.generator, device="cpu")
    tissues = sorted({a.tissue for a in train})
    stains = sorted({a.stain for a in train if a.stain}) or ["he"]
    with _bar("synthetic pairs") as bar:
        # made within the first half of the budget, before which they do not join anyway
        return synthetic_annotations(g, args.synthetic, tissues, stains, seed=args.seed,
                                     progress=bar, seconds=args.minutes * 60 / 2)


def _print_validation(entry: dict) -> None:
    from tqdm import tqdm

    tqdm.write(f"step {entry['step']}: loss {entry['loss']}, validation Dice {entry['val_dice']}",
               file=sys.stderr)


def _evaluate(args: argparse.Namespace) -> int:
    from .checkpoints import load_model
    from .tasks import task_of_manifest

    task = task_of_manifest(args.manifest)
    splits = task.read_manifest(args.manifest, _split_column(args))
    rows = splits.get(args.split, []) if args.split else [a for v in splits.values() for a in v]
    if not rows:
        raise OmnisegInputError(f"no rows of split {args.split!r} in {args.manifest.name}")
    model = load_model(args.model or task.name)
    print(json.dumps(task.evaluate(model, rows), indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
