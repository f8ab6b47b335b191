"""The bundled renal model: accuracy on held-out simulated slides, and seam-free tiling."""

import numpy as np
import pytest

from napari_omniseg import load_model, open_slide, segment_slide
from napari_omniseg.models import read_metadata
from napari_omniseg.simulate.renal import write_renal_slide
from napari_omniseg.train.renal import TRAIN_SEED0, evaluate_simulated, evaluation_seeds


@pytest.fixture(scope="module")
def model():
    return load_model("renal")


def test_bundled_checkpoint_says_how_it_was_made():
    from napari_omniseg.models import BUNDLED, _resolve

    meta = read_metadata(_resolve("renal"))
    assert meta["architecture"] == "omniseg_plus" and "simulated" in meta["trained_on"]
    assert meta["data_seconds"] + meta["training_seconds"] < 2 * 3600
    assert _resolve("renal").stat().st_size < 10e6 and "renal" in BUNDLED


@pytest.mark.slow
def test_dice_on_held_out_simulated_slides(model):
    seeds = evaluation_seeds(1, size=4096)
    assert all(s < TRAIN_SEED0 for s in seeds)
    scores = evaluate_simulated(model, seeds, size=4096, bf16=True)
    for stain, row in scores.items():
        for tissue, dice in row.items():
            assert dice >= 0.85, (stain, tissue, dice)


@pytest.mark.xfail(strict=True, reason="known gap: PTC boundaries still move with the tile grid "
                   "(Dice 0.92 on a shifted crop, measured 2026-11-22); the renal issue stays "
                   "open until this reaches 0.99")
def test_shifted_crop_agrees_on_the_overlap(model, tmp_path):
    """No seams: the same tissue segmented from a slide and from a shifted crop agrees."""
    import tifffile

    img, _ = write_renal_slide(tmp_path / "s.ome.tif", 1536, 1536, stain="he", seed=3)
    slide = open_slide(img)
    full = segment_slide(slide, ("ptc", "pt"), None, model)
    dy, dx = 136, 72  # multiples of 8 keep the crop's 10x level on the same pixel grid
    crop = np.asarray(slide.levels[0][dy:, dx:])
    crop_path = tmp_path / "crop.ome.tif"
    tifffile.imwrite(crop_path, crop, photometric="rgb", tile=(256, 256), ome=True,
                     metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
    part = segment_slide(open_slide(crop_path), ("ptc", "pt"), None, model)
    for code, level, f in (("ptc", 0, 1), ("pt", 2, 4)):
        a = full[code][level][dy // f + 64:, dx // f + 64:].compute().astype(bool)
        b = part[code][level][64:, 64:].compute().astype(bool)
        h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
        a, b = a[:h, :w], b[:h, :w]
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice >= 0.99, (code, dice)
