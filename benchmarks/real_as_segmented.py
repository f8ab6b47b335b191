"""Dice of a renal model on real annotated patches as Segment computes it, beside `omniseg
evaluate`'s figure for the same rows.

Usage::

    python benchmarks/real_as_segmented.py MANIFEST --model renal [--split val]

`omniseg evaluate` predicts each patch as one network tile. A person who opens the same PNG in
napari (or `omniseg segment`s it) goes through the tile engine instead (its tiles, blending and
glass mask). Until 2026-12-04 the engine's edge tiles were read partly mirrored past the image,
and the two figures differed (0.37 against 0.51 for a mixed model); they should now agree. This
benchmark opens every row with ``open_slide`` at its µm/px (10 / magnification), runs
``segment_slide`` for the row's tissue at the row's magnification, and scores level 0 against
the mask; both figures are printed per tissue (mean over rows, as `omniseg evaluate` averages).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from machine import cpu_model


def main() -> None:
    from napari_omniseg.checkpoints import load_model
    from napari_omniseg.io.slides import open_slide
    from napari_omniseg.predict.slide import segment_slide
    from napari_omniseg.tasks import task_of_manifest
    from napari_omniseg.train.finetune_renal import evaluate_annotations
    from napari_omniseg.train.metrics import dice
    from napari_omniseg.train.task_functions import functions_of

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("manifest")
    p.add_argument("--model", default="renal")
    p.add_argument("--split", default="val")
    p.add_argument("--no-glass-mask", action="store_true",
                   help="segment without the glass mask (to see what it changes)")
    p.add_argument("--flips", action="store_true",
                   help="average each tile over its four mirror images (a tile-engine "
                        "option that Segment does not offer)")
    args = p.parse_args()
    model = load_model(args.model)
    rows = functions_of(task_of_manifest(args.manifest)).read_manifest(args.manifest)[args.split]
    t = time.perf_counter()
    engine: dict[str, list[float]] = {}
    for a in rows:
        slide = open_slide(Path(args.manifest).parent / a.name, mpp=10.0 / a.magnification)
        pred = segment_slide(slide, (a.tissue,), a.magnification, model,
                             mask_glass=not args.no_glass_mask,
                             flips=args.flips)[a.tissue][0].compute()
        slide.close()
        engine.setdefault(a.tissue, []).append(dice((pred > 0) & a.known, a.mask & a.known))
    tile = evaluate_annotations(model, rows)
    by_tissue = {k: round(float(np.mean(v)), 4) for k, v in engine.items()}
    out = {"model": args.model, "split": args.split, "glass_mask": not args.no_glass_mask,
           "flips": args.flips,
           "rows": len(rows),
           "date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(),
           "seconds": round(time.perf_counter() - t),
           "as_segmented": {"mean_dice": round(float(np.mean(list(by_tissue.values()))), 4),
                            "tissues": by_tissue},
           "one_tile": {"mean_dice": tile["mean_dice"],
                        "tissues": {k: v["dice"] for k, v in tile["tissues"].items()}}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
