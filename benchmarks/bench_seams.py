"""Seams and position sensitivity of whole-slide segmentation with the bundled renal model.

Usage::

    python benchmarks/bench_seams.py [--out /tmp/omniseg-seams]

1. Seams: on a simulated 1536 x 1536 H&E slide, the mean jump of the blended PTC probability
   across tile-border lines divided by the mean jump across all other lines (1 = no seam),
   for the shipped blending and for plain averaging of overlapping tiles.
2. Position sensitivity: the slide segmented whole and as crops shifted by a few offsets; Dice
   of the two answers on their overlap (PTC at 40x, PT at 10x).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    from test_bundled_renal import border_jump_ratio

    from napari_omniseg import load_model, open_slide, segment_slide
    from napari_omniseg.predict.slide import make_engines
    from napari_omniseg.simulate.renal import write_renal_slide

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/omniseg-seams"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = load_model("renal")
    img, _ = write_renal_slide(args.out / "s.ome.tif", 1536, 1536, stain="he", seed=3)
    slide = open_slide(img)
    engine, k = make_engines(slide, ("ptc",), None, model)["ptc"]
    blended = border_jump_ratio(engine, k)
    engine._window_of = lambda oy, ox: np.ones((engine.tile, engine.tile), np.float32)
    print("| blending | tile-border jump / other lines |\n|---|---|")
    print(f"| squared ramp (shipped) | {blended:.2f} |")
    print(f"| plain average of overlaps | {border_jump_ratio(engine, k):.2f} |\n")
    full = segment_slide(slide, ("ptc", "pt"), None, model)
    print("| crop offset (px at 40x) | PTC Dice | PT Dice |\n|---|---|---|")
    for dy, dx in [(128, 320), (136, 72), (8, 8)]:
        crop = np.asarray(slide.levels[0][dy:, dx:])
        path = args.out / "crop.ome.tif"
        tifffile.imwrite(path, crop, photometric="rgb", tile=(256, 256), ome=True,
                         metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
        part = segment_slide(open_slide(path), ("ptc", "pt"), None, model)
        row = []
        for code, level, f in (("ptc", 0, 1), ("pt", 2, 4)):
            a = full[code][level][dy // f + 64:, dx // f + 64:].compute().astype(bool)
            b = part[code][level][64:, 64:].compute().astype(bool)
            h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
            a, b = a[:h, :w], b[:h, :w]
            row.append(2 * (a & b).sum() / (a.sum() + b.sum()))
        print(f"| ({dy}, {dx}) | {row[0]:.3f} | {row[1]:.3f} |")


if __name__ == "__main__":
    main()
