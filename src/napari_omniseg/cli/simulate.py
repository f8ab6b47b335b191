"""``omniseg simulate renal|fetal|samples``: procedural data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .. import vocab
from . import args as A
from .common import (
    add_anatomy_arguments,
    anatomy_of,
    holding_output_folder,
    progress_bar,
    slide_side,
)


def add_commands(sub: Any) -> None:
    """Add the simulate command(s) to the ``omniseg`` sub-parsers."""
    sim = sub.add_parser("simulate", help="generate synthetic kidney slides or fetal MRI")
    simsub = sim.add_subparsers(dest="what", required=True)

    r = simsub.add_parser("renal", help="synthetic kidney cortex as pyramidal OME-TIFF + masks")
    r.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    r.add_argument("--stain", default="he", choices=[*vocab.STAINS, "all"])
    r.add_argument("--height", type=slide_side, default=4096, help="pixels at 40x")
    r.add_argument("--width", type=slide_side, default=4096, help="pixels at 40x")
    r.add_argument("--seed", type=A.seed, default=0)
    r.add_argument("--count", type=A.positive_int, default=1, help="slides (seeds seed, seed+1..)")
    r.add_argument("--shape", default="full", choices=["full", "biopsy"])
    r.add_argument("--levels", type=int, default=4, choices=[1, 2, 3, 4])
    r.add_argument("--no-masks", action="store_true", help="write the image only")
    add_anatomy_arguments(r)

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
    for parser, run in ((r, _simulate_renal), (f, _simulate_fetal), (s, _simulate_samples),):
        parser.set_defaults(run=run)


@holding_output_folder
def _simulate_renal(args: argparse.Namespace) -> int:
    from ..simulate.renal import write_renal_slide

    stains = list(vocab.STAINS) if args.stain == "all" else [args.stain]
    for seed in range(args.seed, args.seed + args.count):
        for stain in stains:
            stem = f"renal_{stain}_seed{seed}"
            with progress_bar(stem) as bar:
                img, msk = write_renal_slide(
                    args.out / f"{stem}.ome.tif", args.height, args.width, stain=stain,
                    seed=seed, shape=args.shape, levels=args.levels,
                    anatomy=anatomy_of(args),
                    masks_path=None if args.no_masks else args.out / f"{stem}_masks.ome.tif",
                    progress=bar,
                )
            print(img)
            if msk:
                print(msk)
    return 0


@holding_output_folder
def _simulate_fetal(args: argparse.Namespace) -> int:
    from ..simulate.fetal import simulate_fetal, write_fetal_nifti

    for seed in range(args.seed, args.seed + args.count):
        sample = simulate_fetal(seed, size=args.size, spacing=args.spacing)
        paths = write_fetal_nifti(sample, args.out, all_masks=args.all_masks)
        print(json.dumps({k: str(v) for k, v in paths.items()} | {
            "labelled": list(sample.labelled)}))
    return 0


@holding_output_folder
def _simulate_samples(args: argparse.Namespace) -> int:
    from .._sample_data import write_samples

    with progress_bar("samples") as bar:
        for path in write_samples(args.out, progress=bar):
            print(path)
    return 0

