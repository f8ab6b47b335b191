"""The simulator's vessel shapes in numbers and pictures: docs/simulator.md, "Veins".

Usage::

    python benchmarks/simulator_vessels.py [--layouts 12] [--montage OUT.png]

For the default arteries, ``veins=1`` and ``veins=1, small_vessels=1`` (``RenalAnatomy``), the
vessels of ``--layouts`` 4 mm x 4 mm layouts (seeds 0 on): wall thickness (outer minus lumen
radius), diameter across the minor axis and elongation, 10th / 50th / 90th percentiles.
``--montage`` renders vessels at 10x (1 µm/px) from H&E and PAS slides with ``veins=1,
small_vessels=0.6``, each beside its vessel mask.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def shape_table(layouts: int) -> None:
    """Print the percentiles of the vessels' sizes under each anatomy."""
    from napari_omniseg.simulate.renal_layout import RenalAnatomy, RenalLayout

    print("| anatomy | vessels | wall (µm) | minor-axis diameter (µm) | elongation |")
    print("|---|---:|---|---|---|")
    for name, anatomy in (("default (arteries)", RenalAnatomy()),
                          ("veins=1", RenalAnatomy(veins=1.0)),
                          ("veins=1, small_vessels=1", RenalAnatomy(small_vessels=1.0, veins=1.0))):
        vessels = [a for seed in range(layouts)
                   for a in RenalLayout(seed, anatomy).arteries(0, 0, 4000, 4000)]

        def pct(values) -> str:
            return " / ".join(f"{v:.1f}" for v in np.percentile(values, [10, 50, 90]))

        print(f"| {name} | {len(vessels)} | {pct([a.r_out - a.r_lumen for a in vessels])} | "
              f"{pct([2 * a.r_out for a in vessels])} | {pct([a.ecc for a in vessels])} |")


def montage(out: Path, side: int = 192) -> None:
    """Write vessels at 10x beside their masks, alternating H&E and PAS slides."""
    from PIL import Image
    from skimage.measure import label, regionprops

    from napari_omniseg.simulate.renal import simulate_renal
    from napari_omniseg.simulate.renal_layout import RenalAnatomy

    rows = []
    for seed, stain in ((6, "he"), (17, "pas"), (24, "he"), (25, "pas")):
        s = simulate_renal(4096, 4096, stain=stain, seed=seed, levels=3,
                           anatomy=RenalAnatomy(small_vessels=0.6, veins=1.0))
        img, mask = np.asarray(s.image[2]), np.asarray(s.masks["ves"][2]) > 0  # 10x
        regions = regionprops(label(mask))
        if not regions:
            continue
        cy, cx = (int(v) for v in max(regions, key=lambda r: r.area).centroid)
        y = min(max(cy - side // 2, 0), img.shape[0] - side)
        x = min(max(cx - side // 2, 0), img.shape[1] - side)
        crop, m = img[y:y + side, x:x + side], mask[y:y + side, x:x + side]
        over = crop.copy()
        over[m] = (0.5 * over[m] + [0, 127, 0]).astype(np.uint8)
        rows.append(np.concatenate([crop, over], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(out)
    print(f"wrote {out}")


def main() -> None:
    """Print the table; write the montage if asked."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layouts", type=int, default=12)
    p.add_argument("--montage", type=Path)
    a = p.parse_args()
    shape_table(a.layouts)
    if a.montage:
        montage(a.montage)


if __name__ == "__main__":
    main()
