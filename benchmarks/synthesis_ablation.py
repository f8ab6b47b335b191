"""Which generator, with the same budget? The baseline and ablation rows of docs/synthesis.md.

Usage::

    python benchmarks/synthesis_ablation.py MANIFEST OUT_FOLDER [--steps 700] [--simulated 4]

Trains, on the same pairs (the manifest's ``train`` rows plus simulated slides, as the bundled
generator) and for the same number of generator updates, with the same seed:

- the pyramid generator with the perceptual loss on the renal segmenter's features;
- the pyramid generator without a perceptual loss;
- the single-scale pix2pix-style U-Net, with the perceptual loss.

Each is saved in OUT_FOLDER with its wall time and seconds per step; then run
``synthesis_eval.py realism MANIFEST name=OUT_FOLDER/<name>.pt ...`` on them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

VARIANTS = {
    "pyramid_segmenter": {"architecture": "pyramid", "perceptual": "segmenter", "width": 32},
    "pyramid_none": {"architecture": "pyramid", "perceptual": "none", "width": 32},
    # width 16: 0.46 M parameters, near the pyramid's 0.32 M
    "single_segmenter": {"architecture": "single", "perceptual": "segmenter", "width": 16},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--steps", type=int, default=700)
    p.add_argument("--simulated", type=int, default=4)
    p.add_argument("--only", nargs="*", default=list(VARIANTS))
    a = p.parse_args()
    import torch

    from napari_omniseg.train.renal_data import build_patch_bank
    from napari_omniseg.train.synthesis import (
        pairs_from_bank,
        pairs_from_manifest,
        train_generator,
    )

    torch.set_num_threads(2)
    a.out.mkdir(parents=True, exist_ok=True)
    # the bundled generator's recipe (omniseg train synthesis): the same slides and patches
    bank = build_patch_bank(list(range(7000, 7000 + a.simulated)), size=4096, patch=256)
    pairs = pairs_from_manifest(a.manifest, split="train") + pairs_from_bank(bank)
    print(f"{time.strftime('%Y-%m-%d')}; {len(pairs)} pairs; {a.steps} steps each", flush=True)
    for name in a.only:
        t = time.perf_counter()
        recipe = train_generator(a.out / f"{name}.pt", pairs, max_steps=a.steps, crop=128,
                                 batch=4, seed=0, trained_on="ablation: ki-dev train + "
                                 f"{a.simulated} simulated slides", **VARIANTS[name]).recipe
        seconds = time.perf_counter() - t
        print(json.dumps({"variant": name, "steps": recipe["steps"],
                          "seconds": round(seconds), "s_per_step": round(seconds / a.steps, 3),
                          "final_losses": recipe["final_losses"]}), flush=True)


if __name__ == "__main__":
    main()
