"""Compare the simulator's colours with real kidney patches.

Usage::

    python benchmarks/compare_real_colours.py PATH/TO/ki-dev [--montage out.png]

For every (tissue, stain) pair of the manifest with tubules (pt, dt), prints the mean optical
density (OD = -log10(I / 245)) per RGB channel inside the real masks and inside the simulator's
masks at the same magnification (10x), averaged over a few seeds. ``--montage`` writes real and
synthetic patches side by side for a visual check (keep it outside the repository: it contains
the real data).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def _csv_rows(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _od(pixels: np.ndarray) -> np.ndarray:
    return -np.log10(np.clip(pixels.astype(np.float64), 1, 255) / 245)


def main() -> None:
    import imageio.v3 as iio

    from napari_omniseg import simulate_renal

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", type=Path, help="folder with manifest.csv and the PNG patches")
    p.add_argument("--montage", type=Path, default=None)
    args = p.parse_args()
    rows = _csv_rows(args.data / "manifest.csv")
    tiles = []
    print("| tissue | stain | real OD (R, G, B) | simulated OD (R, G, B) | max difference |")
    print("|---|---|---|---|---:|")
    for tissue in ("pt", "dt"):
        for stain in ("he", "pas"):
            sel = [r for r in rows if r["tissue"] == tissue and r["stain"] == stain]
            if not sel:
                continue
            real = []
            for r in sel:
                im = iio.imread(args.data / r["image"])[..., :3]
                m = iio.imread(args.data / r["mask"])
                m = (m[..., 0] if m.ndim == 3 else m) > 0
                real.append(im[m])
            real_od = _od(np.concatenate(real)).mean(0)
            syn = []
            for seed in range(4):
                s = simulate_renal(1024, 1024, stain=stain, seed=seed, levels=3)
                syn.append(_od(s.image[2][s.masks[tissue][2] > 0]).mean(0))
                if seed == 0:
                    tiles.append((iio.imread(args.data / sel[0]["image"])[..., :3],
                                  s.image[2][:256, :256]))
            syn_od = np.mean(syn, 0)
            fmt = ", ".join
            print(f"| {tissue} | {stain} | {fmt(f'{v:.2f}' for v in real_od)} | "
                  f"{fmt(f'{v:.2f}' for v in syn_od)} | {np.abs(real_od - syn_od).max():.2f} |")
    if args.montage:
        rows_img = [np.concatenate([a[:256, :256], b], 1) for a, b in tiles]
        iio.imwrite(args.montage, np.concatenate(rows_img, 0))


if __name__ == "__main__":
    main()
