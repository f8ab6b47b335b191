"""``omniseg finetune`` and ``evaluate``: a model on the user's annotations."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..choices import GENERATOR, ImageKind, LsrDistance, LsrLoss, StainNormalisation
from ..errors import OmnisegInputError
from . import args as A
from .common import (
    ctrl_c_stops,
    holding_output_file,
    print_validation,
    progress_bar,
)


def add_commands(sub: Any) -> None:
    """Add the finetune command(s) to the ``omniseg`` sub-parsers."""
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
    ft.add_argument("--generator", default=GENERATOR,
                    help="with --synthetic: generator checkpoint (default: the bundled one)")
    ft.add_argument("--seed", type=A.seed, default=0,
                    help="seed of the batches' order and augmentation (and of the synthetic "
                         "pairs)")
    ft.add_argument("--keep-start", type=A.real(0, 0.95), default=0.0, metavar="K",
                    help="mix this share of the starting model's weights back in at the end "
                         "(default 0; 0.5 keeps most of what it knew of slides unlike the rows, "
                         "e.g. other stains: docs/finetuning.md)")
    ft.add_argument("-o", "--out", type=Path, required=True, help="checkpoint to write (.pt)")
    bl = ft.add_argument_group(
        "block labels", "a kidney manifest with a 'blocks' column instead of 'mask' (image, "
        "blocks, block_size, tissue, magnification[, split]) trains from block labels")
    bl.add_argument("--block-table", type=Path, default=None, metavar="TABLE.csv",
                    help="p(tissue fraction | block class): columns tissue, block_class, mean, "
                         "sd (required with block labels)")
    bl.add_argument("--block-loss", default=str(LsrLoss.INTRA_INTER),
                    choices=[str(c) for c in LsrLoss],
                    help="per block (intra), per group of same-class blocks (inter), or both "
                         "(default intra+inter)")
    bl.add_argument("--block-distance", default=str(LsrDistance.NLL),
                    choices=[str(c) for c in LsrDistance],
                    help="Gaussian NLL (default) or the paper's statistics-matching distance")
    bl.add_argument("--alpha", type=A.real(0, 10, above=True), default=0.8,
                    help="the table's sd is matched as alpha x sd (default 0.8)")
    bl.add_argument("--group-size", type=A.integer(1, 1000), default=8,
                    help="blocks of one class per group (default 8)")
    bl.add_argument("--pixels", type=Path, default=None, metavar="MANIFEST.csv",
                    help="also train on the pixel masks of this manifest's train rows")

    ev = sub.add_parser("evaluate", help="per-tissue Dice and 95%% Hausdorff (µm) on a manifest "
                                         "(per-region Dice for fetal volumes)")
    ev.add_argument("--manifest", type=Path, required=True)
    ev.add_argument("--model", default=None,
                    help="checkpoint file or bundled model name (default: the bundled model of "
                         "the manifest's kind)")
    ev.add_argument("--split-column", default=None,
                    help="column saying train / val (default 'split', if the manifest has it)")
    ev.add_argument("--split", default=None, help="only rows of this split (e.g. val)")
    ev.add_argument("--normalise-stain", default="none",
                    choices=[str(c) for c in StainNormalisation],
                    help="kidney: map each patch's colours to the model's training stain first "
                         "(default none)")
    ev.add_argument("--robot-strokes", type=A.integer(0, 100), default=0, metavar="N",
                    help="kidney: also run the robot user (N strokes per patch, each a disk at "
                         "the largest error, learned on that patch only) and add its Dice after "
                         "0, 1, 2, 5, 10, ... strokes and its update latency under \"robot\"")
    ev.add_argument("--robot-radius", type=A.integer(1, 50), default=4, metavar="PX",
                    help="the robot's stroke radius in working pixels (default 4)")
    for parser, run in ((ft, _finetune), (ev, _evaluate),):
        parser.set_defaults(run=run)


def _split_column(args: argparse.Namespace) -> str:
    """The manifest's split column; one the user names must exist (a misspelt name would
    silently train on the validation rows)."""
    from ..io.manifest import columns

    if args.split_column is None:
        return "split"
    header = columns(args.manifest)
    if args.split_column not in header:
        raise OmnisegInputError(f"{args.manifest.name} has no column {args.split_column!r} "
                                f"(its columns: {', '.join(header)})")
    return args.split_column


@holding_output_file("manifest", "base", "generator", "block_table", "pixels")
def _finetune(args: argparse.Namespace) -> int:
    from ..checkpoints import load_model
    from ..io.manifest import columns
    from ..tasks import task_of_manifest
    from ..train.run_finetune import FinetuneOptions, run_finetune
    from ..train.task_functions import functions_of

    if "blocks" in columns(args.manifest):
        if args.keep_start:
            raise OmnisegInputError("--keep-start applies to fine-tuning on masks; "
                                    f"{args.manifest.name} holds block labels")
        return _finetune_blocks(args)
    if args.block_table is not None:
        raise OmnisegInputError(f"--block-table needs a manifest with a 'blocks' column; "
                                f"{args.manifest.name} has none")
    task = task_of_manifest(args.manifest)
    args.split_column = _split_column(args)
    splits = functions_of(task).read_manifest(args.manifest, args.split_column)
    train, val = splits.get("train", []), splits.get("val", [])
    if not train:
        raise OmnisegInputError(f"{args.manifest.name} has no training rows "
                                f"(column {args.split_column!r} = train)")
    # the flags' own names, before anything loads (run_finetune refuses them too)
    if args.semi and not task.semi_supervision:
        raise OmnisegInputError("--semi applies to kidney patch manifests only; "
                                f"{args.manifest.name} lists volumes")
    if args.synthetic and not task.semi_supervision:
        raise OmnisegInputError("--synthetic applies to kidney patch manifests only")
    base_name = args.base or task.name
    options = FinetuneOptions(minutes=args.minutes, lr=args.lr, semi_supervised=args.semi,
                              seed=args.seed, synthetic=args.synthetic,
                              generator=str(args.generator), keep_start=args.keep_start)
    with progress_bar("finetune") as bar, ctrl_c_stops("fine-tuning") as should_stop:
        result = run_finetune(task, load_model(base_name), str(base_name), train, val,
                              args.out, options, progress=bar, should_stop=should_stop,
                              on_validate=print_validation)
    summary = {"checkpoint": str(args.out), "steps": result.steps, "stopped": result.stopped,
               "seconds": round(result.seconds, 1), "history": result.history}
    if val:
        summary["val"] = functions_of(task).evaluate(result.model, val)
    print(json.dumps(summary, indent=2))
    return 130 if result.stopped else 0


def _finetune_blocks(args: argparse.Namespace) -> int:
    """``finetune`` on a block-label manifest (label super-resolution)."""
    from ..checkpoints import load_model
    from ..train.annotations import read_manifest
    from ..train.block_labels import BlockTable, read_block_manifest
    from ..train.finetune_blocks import (
        BlockOptions,
        finetune_blocks,
        fit_report,
        save_block_finetuned,
    )

    if args.block_table is None:
        raise OmnisegInputError(f"{args.manifest.name} lists block labels; give their table "
                                "with --block-table TABLE.csv (omniseg blocks from-masks "
                                "writes one)")
    for flag, given in (("--semi", args.semi), ("--synthetic", args.synthetic)):
        if given:
            raise OmnisegInputError(f"{flag} applies to pixel-mask manifests, not block labels")
    args.split_column = _split_column(args)
    blocks = read_block_manifest(args.manifest, args.split_column).get("train", [])
    if not blocks:
        raise OmnisegInputError(f"{args.manifest.name} has no training rows "
                                f"(column {args.split_column!r} = train)")
    table = BlockTable.load(args.block_table)
    table.check_covers(blocks)
    pixels = read_manifest(args.pixels).get("train", []) if args.pixels else None
    options = BlockOptions(loss=LsrLoss(args.block_loss),
                           distance=LsrDistance(args.block_distance), alpha=args.alpha,
                           group_size=args.group_size)
    base_name = args.base or "renal"
    with progress_bar("finetune (block labels)") as bar, \
            ctrl_c_stops("fine-tuning") as should_stop:
        result = finetune_blocks(load_model(base_name), blocks, table, pixels,
                                 options=options, lr=args.lr or 1e-3, seed=args.seed,
                                 minutes=args.minutes, progress=bar, should_stop=should_stop)
    save_block_finetuned(result, args.out, str(base_name), blocks, table, options, pixels)
    summary = {"checkpoint": str(args.out), "steps": result.steps, "stopped": result.stopped,
               "seconds": round(result.seconds, 1),
               "fit": fit_report(result.model, blocks, table)}
    print(json.dumps(summary, indent=2))
    return 130 if result.stopped else 0


def _evaluate(args: argparse.Namespace) -> int:
    from ..checkpoints import load_model
    from ..tasks import task_of_manifest
    from ..train.task_functions import functions_of

    task = task_of_manifest(args.manifest)
    splits = functions_of(task).read_manifest(args.manifest, _split_column(args))
    rows = splits.get(args.split, []) if args.split else [a for v in splits.values() for a in v]
    if not rows:
        raise OmnisegInputError(f"no rows of split {args.split!r} in {args.manifest.name}")
    if args.robot_strokes and task.image != ImageKind.RGB:
        raise OmnisegInputError("--robot-strokes applies to kidney patch manifests only")
    model = load_model(args.model or task.name)
    if args.normalise_stain != StainNormalisation.NONE:
        if task.image != ImageKind.RGB:
            raise OmnisegInputError("--normalise-stain applies to kidney patch manifests only")
        from ..train.finetune_renal import evaluate_annotations

        out = evaluate_annotations(model, rows, normalise_stain=args.normalise_stain)
    else:
        out = functions_of(task).evaluate(model, rows)
    if args.robot_strokes:
        from ..train.robot import robot_evaluate

        with progress_bar("robot user") as bar, ctrl_c_stops("the robot user") as should_stop:
            out["robot"] = robot_evaluate(model, rows, args.robot_strokes,
                                          radius=args.robot_radius, progress=bar,
                                          should_stop=should_stop)
    print(json.dumps(out, indent=2))
    return 0

