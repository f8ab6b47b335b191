"""Can a classifier tell the simulator's patches from real kidney at the same magnification?

Usage::

    python benchmarks/simulator_realism.py MANIFEST [--slides 4] [--montage OUT.png]
        [--ptc-slits S] [--small-vessels V] [--veins W]

For each magnification of the manifest's ``train`` rows (ki-dev: 5x, 10x, 40x), real patches
against as many simulated patches at that magnification (H&E and PAS slides, the manifest's
stains; seeds 9200 on, never training seeds), in the texture space of docs/synthesis.md (channel
means and spreads of the bundled segmenter's first two encoder maps) and its deep space: the
cross-validated accuracy of a logistic classifier (0.5: indistinguishable; balanced classes).
``--montage`` writes real and simulated patches side by side, one row per magnification;
``--ptc-slits``, ``--small-vessels`` and ``--veins`` set the simulator's shares of slit
capillaries, small oblique arteries and veins (``RenalAnatomy``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    from synthesis_eval import _cpu, classifier_accuracy, features

    from napari_omniseg.checkpoints import load_model
    from napari_omniseg.cli.common import add_anatomy_arguments, anatomy_of
    from napari_omniseg.train.annotations import read_manifest
    from napari_omniseg.train.renal_data import build_patch_bank

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("manifest", type=Path)
    p.add_argument("--slides", type=int, default=4, help="simulated slides per stain")
    p.add_argument("--montage", type=Path)
    add_anatomy_arguments(p)
    args = p.parse_args()

    t0 = time.perf_counter()
    real = read_manifest(args.manifest)["train"]
    stains = tuple(sorted({a.stain for a in real if a.stain}))
    mags = sorted({int(a.magnification) for a in real})
    crops = dict.fromkeys((5, 10, 20, 40), 0)
    for m in mags:
        crops[m] = 8
    seeds = list(range(9200, 9200 + args.slides * len(stains)))
    bank = build_patch_bank(seeds, stains=stains, size=2048, crops=crops,
                            anatomy=anatomy_of(args))
    seg = load_model("renal", device="cpu").float().eval()
    rng = np.random.default_rng(0)
    print(f"<!-- {time.strftime('%Y-%m-%d')}, {_cpu()}, {len(real)} real train patches, "
          f"{len(bank)} simulated from slides {seeds[0]}-{seeds[-1]} -->")
    print("| magnification | real patches | texture: classifier | deep: classifier |")
    print("|---|---:|---:|---:|")
    pooled: dict[str, tuple[list, list]] = {"texture": ([], []), "deep": ([], [])}
    montage_rows = []
    for m in mags:
        r = [a.image[:256, :256, :3] for a in real if int(a.magnification) == m]
        pool = np.flatnonzero(bank.magnifications == m)
        s = list(bank.images[rng.permutation(pool)[:len(r)]])
        cells = []
        for space in ("texture", "deep"):
            fr, fs = features(seg, r, space), features(seg, s, space)
            pooled[space][0].append(fr)
            pooled[space][1].append(fs)
            cells.append(f"{classifier_accuracy(fr, fs):.2f}")
        print(f"| {m}x | {len(r)} | " + " | ".join(cells) + " |")
        montage_rows.append((r[:4], s[:4]))
    cells = [f"{classifier_accuracy(np.concatenate(a), np.concatenate(b)):.2f}"
             for a, b in pooled.values()]
    print(f"| all | {sum(len(x) for x in pooled['texture'][0])} | " + " | ".join(cells) + " |")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.montage:
        _montage(montage_rows, mags, args.montage)


def _montage(rows: list, mags: list[int], out: Path) -> None:
    """Real patches (left) and simulated ones (right), 128 px each, a row per magnification."""
    from skimage.transform import resize

    from napari_omniseg.io.atomic import written_atomically

    cell = 128

    def small(img: np.ndarray) -> np.ndarray:
        return (resize(img, (cell, cell), anti_aliasing=True, preserve_range=True) + 0.5
                ).astype(np.uint8)

    lines = []
    for real, sim in rows:
        tiles = [small(x) for x in real] + [np.full((cell, 8, 3), 255, np.uint8)] + \
                [small(x) for x in sim]
        lines.append(np.concatenate(tiles, 1))
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, 4), (0, width - line.shape[1]), (0, 0)), constant_values=255)
             for line in lines]
    from PIL import Image

    with written_atomically(out) as tmp:
        Image.fromarray(np.concatenate(lines)).save(tmp, format="PNG")
    print(f"wrote {out} (rows: {', '.join(f'{m}x' for m in mags)}; real left, simulated right)")


if __name__ == "__main__":
    main()
