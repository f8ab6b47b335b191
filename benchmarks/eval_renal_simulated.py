"""Dice of a renal model on held-out simulated slides, per stain and tissue (optimal power).

Usage::

    python benchmarks/eval_renal_simulated.py --model renal --seeds 2 [--compare-fp32]
    python benchmarks/eval_renal_simulated.py --model renal --seeds 2 --as-slides [--quality 90]

Held-out seeds come from ``evaluation_seeds``: the first slides below the training seed range
that hold a whole artery and a whole glomerulus, so every tissue has ground truth. Inference
runs with bfloat16 autocast, as the plugin does on CPU; ``--compare-fp32`` repeats one stain in
float32 to show what bfloat16 changes. ``--as-slides`` scores what users get instead: each slide
written as a JPEG-compressed OME-TIFF pyramid, opened with ``open_slide`` and segmented by
``segment_slide`` (tile engine, glass mask; ``--fp32`` in float32, as a CPU without bfloat16
in hardware runs it). ``--ptc-slits S``, ``--small-vessels V`` and
``--veins W`` score on the simulator with those shares of slit capillaries, small oblique
arteries and veins (``RenalAnatomy``; default 0, the slides the bundled model is held to).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    from napari_omniseg.checkpoints import load_model
    from napari_omniseg.cli.common import add_anatomy_arguments, anatomy_of
    from napari_omniseg.train.renal import (
        dice_table,
        evaluate_simulated,
        evaluate_simulated_slides,
        evaluation_seeds,
    )

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="renal")
    p.add_argument("--seeds", type=int, default=2, help="slides per stain")
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--compare-fp32", action="store_true")
    p.add_argument("--as-slides", action="store_true",
                   help="through JPEG OME-TIFF files, open_slide and segment_slide")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality with --as-slides")
    p.add_argument("--fp32", action="store_true",
                   help="with --as-slides: float32, as on a CPU without bfloat16 in hardware")
    add_anatomy_arguments(p)
    args = p.parse_args()
    model = load_model(args.model)
    seeds = evaluation_seeds(args.seeds, args.size)
    anatomy = anatomy_of(args)
    t = time.perf_counter()
    if args.as_slides:
        scores = evaluate_simulated_slides(model, seeds, size=args.size, quality=args.quality,
                                           anatomy=anatomy, bf16=False if args.fp32 else None)
        how = f"JPEG q{args.quality} OME-TIFF, segment_slide{', fp32' if args.fp32 else ''}"
    else:
        from napari_omniseg.checkpoints import default_bf16

        bf16 = default_bf16(next(model.parameters()).device)  # as Segment would run here
        scores = evaluate_simulated(model, seeds, size=args.size, bf16=bf16,
                                    anatomy=anatomy)
        how = f"arrays, {'bf16' if bf16 else 'fp32'}"
    if anatomy.describe():
        how += f", {anatomy.describe()}"
    print(f"<!-- {time.strftime('%Y-%m-%d')}, seeds {seeds}, {args.size} px slides, {how}, "
          f"{time.perf_counter() - t:.0f} s -->")
    print(dice_table(scores))
    worst = min(v for row in scores.values() for v in row.values())
    print(f"\nlowest Dice: {worst:.3f}")
    if args.compare_fp32:
        fp32 = evaluate_simulated(model, seeds[:1], stains=("pas",), size=args.size, bf16=False)
        bf16 = evaluate_simulated(model, seeds[:1], stains=("pas",), size=args.size, bf16=True)
        print("\nPAS, one slide, float32 vs bfloat16:")
        print(dice_table({"pas fp32": fp32["pas"], "pas bf16": bf16["pas"]}))


if __name__ == "__main__":
    main()
