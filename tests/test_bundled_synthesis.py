"""The bundled generator: it loads as data, says what it was trained on, and makes images."""

import numpy as np
import torch

from napari_omniseg.checkpoints import _resolve, load_model, read_metadata


def test_bundled_generator_says_how_it_was_made():
    path = _resolve("synthesis")
    assert path.stat().st_size < 5e6  # small enough to commit
    torch.load(path, weights_only=True)  # data, never code
    meta = read_metadata(path)
    assert meta["architecture"] == "pyramid_cgan"
    assert "train rows" in meta["trained_on"] and "val rows were not used" in meta["trained_on"]
    assert meta["steps"] > 1000 and meta["perceptual"] in ("segmenter", "none")
    assert meta["prior"] is True  # it reads the anatomy prior drawn from the mask


def local_sd(rgb: np.ndarray, inside: np.ndarray, k: int = 9) -> np.ndarray:
    """Median k x k local standard deviation per channel over ``inside``."""
    from scipy import ndimage

    rgb = rgb.astype(float)
    out = []
    for c in range(3):
        mean = ndimage.uniform_filter(rgb[..., c], k)
        var = ndimage.uniform_filter(rgb[..., c] ** 2, k) - mean ** 2
        out.append(np.median(np.sqrt(np.clip(var, 0, None))[inside]))
    return np.array(out)


def test_a_painted_tubule_is_not_flat():
    """Real tubules are textured: in the ki-dev `train` patches the median 9 x 9 local SD
    inside a DT or PT mask is at least 14.5 / 18.3 / 13.8 (R / G / B; `python
    benchmarks/synthesis_eval.py local-sd ki-dev/manifest.csv`). The generator before the
    anatomy prior made 8-11 there: colour fields without nuclei."""
    from napari_omniseg.predict.synthesize import synthesize

    g = load_model("synthesis", device="cpu")
    lab = np.zeros((256, 256), np.uint8)
    lab[32:224, 32:224] = 2
    inside = np.zeros(lab.shape, bool)
    inside[56:200, 56:200] = True
    for stain in ("pas", "he"):
        sd = local_sd(synthesize(g, lab, stain, 20, seed=0).compute(), inside)
        assert (sd > 12).all(), (stain, sd.round(1))


def test_bundled_generator_paints_the_stains_apart():
    from napari_omniseg.predict.synthesize import synthesize

    g = load_model("synthesis", device="cpu")
    lab = np.zeros((256, 256), np.uint8)
    lab[40:200, 40:200] = 2
    he = synthesize(g, lab, "he", 10, seed=0).compute()
    pas = synthesize(g, lab, "pas", 10, seed=0).compute()
    assert he.shape == (256, 256, 3) and he.std() > 2  # an image, not a flat colour
    assert np.abs(he.astype(int) - pas).mean() > 1  # the stain condition matters
    inside, outside = he[60:180, 60:180].mean((0, 1)), he[210:, 210:].mean((0, 1))
    assert np.abs(inside - outside).max() > 3  # the painted tubule shows
