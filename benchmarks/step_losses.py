"""The losses of 20 training steps of the generator and of the three-player game, fixed seeds.

Usage::

    python benchmarks/step_losses.py OUT.json   # before a refactor of the training steps
    python benchmarks/step_losses.py AFTER.json # after it; the two files must be equal

The time budget is made so large that the learning-rate schedule depends on the step count
alone (on a real budget it follows the clock, and no two runs are alike); one thread, toy pairs
(those of ``tests/train/test_synthesis.py``). Equal files mean the refactor kept the recipes.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def toy_pairs(n: int, side: int = 64):
    from napari_omniseg.train.synthesis import SynthesisPairs

    rng = np.random.default_rng(0)
    masks = np.zeros((n, 6, side, side), np.uint8)
    images = np.full((n, side, side, 3), 230, np.uint8)
    for i in range(n):
        y, x = rng.integers(8, side - 24, 2)
        masks[i, 1, y:y + 16, x:x + 16] = 1
        images[i, y:y + 16, x:x + 16] = (150, 60, 140)
    return SynthesisPairs(images, masks, np.ones((n, 6), bool), ["pas"] * n, [10] * n,
                          ["toy"] * n)


def main() -> None:
    import torch

    import napari_omniseg.train.engine as engine
    from napari_omniseg.train.synthesis import train_generator
    from napari_omniseg.train.three_player import train_three_player

    torch.set_num_threads(1)
    runs: list[list[float]] = []
    real = engine.run_training

    def recording(step, **kw):
        result = real(step, **kw)
        runs.append(result.losses)
        return result

    engine.run_training = recording
    tmp = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    train_generator(tmp / "g.pt", toy_pairs(4), minutes=1e6, max_steps=20, levels=3, crop=64,
                    batch=2, perceptual="none", width=8, seed=1)
    torch.manual_seed(0)
    train_three_player(tmp / "g3.pt", tmp / "s3.pt", toy_pairs(4), unlabelled=toy_pairs(3),
                       minutes=1e6, max_steps=20, warmup=0.0, levels=3, crop=64, batch=2,
                       perceptual="none", trained_on="toy", seed=1)
    Path(sys.argv[1]).write_text(json.dumps({"generator": runs[0], "three_player": runs[1]}))
    print(f"generator: last loss {runs[0][-1]:.6f}; three-player: {runs[1][-1]:.6f}")


if __name__ == "__main__":
    main()
