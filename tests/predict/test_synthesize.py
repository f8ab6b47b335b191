"""Synthesis: one seed one image, no seams whatever the chunking, bad masks refused."""

import numpy as np
import pytest

from napari_omniseg.errors import OmnisegInputError
from napari_omniseg.nets.pyramid_gan import PyramidGenerator
from napari_omniseg.predict.synthesize import level_noise, synthesize


@pytest.fixture(scope="module")
def generator():
    import torch

    torch.manual_seed(0)
    return PyramidGenerator(levels=3, width=8).eval()


def painted(h=300, w=340):
    lab = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    lab[(yy - 120) ** 2 + (xx - 150) ** 2 < 70 ** 2] = 3
    lab[(yy - 120) ** 2 + (xx - 150) ** 2 < 40 ** 2] = 4
    lab[230:260, 20:300] = 2
    return lab


def test_noise_is_the_same_for_the_same_place():
    a = level_noise(3, 1, 10, 20, 100, 150)
    b = level_noise(3, 1, 50, 70, 40, 60)
    np.testing.assert_array_equal(a[:, 40:80, 50:110], b)
    assert not np.array_equal(level_noise(4, 1, 10, 20, 100, 150), a)


def test_same_seed_same_image_and_no_seams(generator):
    lab = painted()
    a = synthesize(generator, lab, "pas", 10, seed=1, chunk=128, bf16=False).compute()
    b = synthesize(generator, lab, "pas", 10, seed=1, chunk=256, bf16=False).compute()
    assert a.shape == (300, 340, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)  # chunks computed apart agree bit for bit
    c = synthesize(generator, lab, "pas", 10, seed=2, chunk=256, bf16=False).compute()
    assert not np.array_equal(a, c)  # another seed, a variation
    # bfloat16 (the CPU default): the same image again, and within a few grey levels of
    # float32 whatever the chunking
    d = synthesize(generator, lab, "pas", 10, seed=1, chunk=128, bf16=True).compute()
    np.testing.assert_array_equal(
        d, synthesize(generator, lab, "pas", 10, seed=1, chunk=128, bf16=True).compute())
    e = synthesize(generator, lab, "pas", 10, seed=1, chunk=256, bf16=True).compute()
    diff = np.abs(d.astype(int) - e)
    assert diff.max() <= 12 and diff.mean() < 1.0
    assert np.abs(d.astype(int) - a).mean() < 2.0


def test_a_prior_reading_generator_is_seamless_and_reads_the_prior():
    """The prior is drawn per chunk with its own context, so chunks still agree with one
    pass; and what the generator makes depends on the prior it is given."""
    import torch

    from napari_omniseg.nets.pyramid_gan import condition_pyramid, generator_conditions
    from napari_omniseg.predict.synthesize import window_prior

    torch.manual_seed(0)
    g = PyramidGenerator(levels=3, width=8, prior=True).eval()
    lab = painted(200, 240)
    a = synthesize(g, lab, "pas", 10, seed=1, chunk=128, bf16=False).compute()
    b = synthesize(g, lab, "pas", 10, seed=1, chunk=512, bf16=False).compute()
    np.testing.assert_array_equal(a, b)
    cond = condition_pyramid(torch.zeros(1, 20, 64, 64), 3)
    noise = [torch.zeros(1, 3, *c.shape[-2:]) for c in cond]
    flat, bright = (g(generator_conditions(g, cond, torch.full((1, 3, 64, 64), v)), noise)[-1]
                    for v in (-1.0, 1.0))
    assert (flat - bright).abs().mean() > 1e-3
    with pytest.raises(ValueError, match="prior"):
        generator_conditions(g, cond, None)
    # the window's prior mirrors the masks past its edge: a region painted up to the edge
    # is drawn open there, not closed by a wall of epithelium
    masks = np.zeros((6, 64, 64), np.uint8)
    masks[1] = 1
    rgb = window_prior(masks, "pas", 10, 0)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8


def test_the_mask_is_not_modified(generator):
    lab = painted()
    before = lab.copy()
    synthesize(generator, lab, "he", 40, chunk=128).compute()
    np.testing.assert_array_equal(lab, before)


@pytest.mark.parametrize("labels, words", [
    (np.zeros((64, 64), np.uint8), "is empty"),
    (np.full((64, 64), 9, np.uint8), "label values 9"),
    (np.zeros((64, 64, 3), np.uint8), "not a 2D label image"),
    (np.zeros((64, 64), np.float32), "not labels"),
])
def test_bad_masks_are_one_sentence(generator, labels, words):
    with pytest.raises(OmnisegInputError, match=words):
        synthesize(generator, labels, "pas", 10)


class HugePaintedMask:
    """A 200k x 200k mask (40 GB if it were read) painted PT on its first 100 rows, read
    only where asked, as a lazily read whole-slide mask is."""

    shape, dtype, ndim = (200_000, 200_000), np.dtype(np.uint8), 2

    def __getitem__(self, key):
        rows = np.arange(self.shape[0])[key[0]]
        cols = np.arange(self.shape[1])[key[1]]
        out = np.zeros((len(rows), len(cols)), np.uint8)
        out[rows < 100] = 2
        return out


def test_a_mask_larger_than_memory_streams(generator):
    lazy = synthesize(generator, HugePaintedMask(), "pas", 10, chunk=256)
    assert lazy.shape == (200_000, 200_000, 3)
    corner = lazy[:256, :256].compute()  # only what is asked for is generated
    assert corner.shape == (256, 256, 3)
    assert not np.array_equal(corner[:90].mean((0, 1)), corner[120:].mean((0, 1)))


def test_the_prior_draws_in_micrometres_at_the_masks_own_pixel_size():
    """The same painted pixels at 0.125 µm/px (finer than 40x) and at 40x's 0.25: the finer
    mask's nuclei are about twice as wide in pixels (they keep their size in µm)."""
    from scipy import ndimage

    from napari_omniseg import vocab
    from napari_omniseg.predict.synthesize import ANATOMY_PRIOR

    labels = np.full((384, 384), 1 + vocab.tissue("pt").task_id, np.uint8)  # all PT

    def nucleus_area(mpp):
        img = np.asarray(synthesize(ANATOMY_PRIOR, labels, "he", 40, seed=3, mpp=mpp)
                         ).astype(float)
        nuclei = img[..., 2] - img[..., 0] > 20  # haematoxylin: blue over red
        lab, n = ndimage.label(ndimage.binary_opening(nuclei))
        return np.median(np.bincount(lab.ravel())[1:]) if n else 0.0

    fine, coarse = nucleus_area(0.125), nucleus_area(None)  # None: 40x's 0.25 µm/px
    assert 2.5 < fine / coarse < 6  # area: about (0.25 / 0.125) ** 2 = 4
    with pytest.raises(OmnisegInputError, match="positive"):
        synthesize(ANATOMY_PRIOR, labels, "he", 40, mpp=-1.0)


def test_a_prior_reading_generator_takes_known_maps_per_tissue_or_per_pixel():
    """A ki-dev tuft row knows some capsule pixels only: its known map is per pixel, and the
    prior is drawn from the stated masks alone either way."""
    import torch

    from napari_omniseg.predict.synthesize import generate_window

    torch.manual_seed(0)
    g = PyramidGenerator(levels=3, width=8, prior=True).eval()
    masks = np.zeros((6, 64, 64), np.uint8)
    masks[2, 16:48, 16:48] = 1
    masks[3, 8:56, 8:56] = 1
    per_pixel = np.zeros((6, 64, 64), np.uint8)
    per_pixel[3] = 1
    per_pixel[2, 16:48, 16:48] = 1
    a = generate_window(g, masks, "pas", 10, 0, known=per_pixel)
    b = generate_window(g, masks, "pas", 10, 0, known=np.array([0, 0, 1, 1, 0, 0]))
    assert a.shape == b.shape == (64, 64, 3)
    c = generate_window(g, masks, "pas", 10, 0, known=np.array([0, 0, 0, 1, 0, 0]))
    assert not np.array_equal(b, c)  # the capsule stated or not changes the image


def test_the_anatomy_prior_alone_does_not_depend_on_the_chunking():
    """The prior alone is read from shared prior tiles: chunks of any side give one image."""
    from napari_omniseg import vocab
    from napari_omniseg.predict.synthesize import ANATOMY_PRIOR

    labels = np.zeros((300, 420), np.uint8)
    labels[:, :200] = 1 + vocab.tissue("pt").task_id
    labels[60:240, 230:400] = 1 + vocab.tissue("cap").task_id
    small = np.asarray(synthesize(ANATOMY_PRIOR, labels, "pas", 40, seed=2, chunk=96))
    large = np.asarray(synthesize(ANATOMY_PRIOR, labels, "pas", 40, seed=2, chunk=512))
    assert small.shape == (300, 420, 3)
    np.testing.assert_array_equal(small, large)
    assert small[:, :200].std() > 5  # drawn tissue, not a flat fill
