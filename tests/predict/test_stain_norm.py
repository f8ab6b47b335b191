"""Stain normalisation: statistics matched, glass kept, tile-independent on slides."""

import typing

import numpy as np
import pytest
from conftest import write_ome_subifd

from napari_omniseg.errors import OmnisegInputError
from napari_omniseg.io.slides import open_slide
from napari_omniseg.predict.stain_norm import (
    StainStatistics,
    fit_stain,
    normalised_slide,
    normaliser_for,
    reference_of,
)


def stained(h, w, haem, eosin, seed=0):
    """Two-stain optical-density mixture: blobs of one stain on a background of the other."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    nuclei = (np.sin(yy / 7) * np.cos(xx / 5) > 0.6).astype(float)
    c_h = nuclei * rng.uniform(0.6, 1.2, (h, w))
    c_e = (1 - nuclei) * rng.uniform(0.4, 1.0, (h, w))
    od = c_h[..., None] * np.array(haem) + c_e[..., None] * np.array(eosin)
    return np.clip(256 * np.exp(-od) - 1, 0, 255).astype(np.uint8)


HE = ([0.65, 0.70, 0.29], [0.07, 0.99, 0.11])
PAS = ([0.45, 0.75, 0.48], [0.25, 0.85, 0.45])


@pytest.mark.parametrize("method", ["reinhard", "macenko"])
def test_normalising_moves_an_image_towards_the_reference(method):
    ref_img, other = stained(128, 128, *HE), stained(128, 128, *PAS, seed=1)
    reference = fit_stain([ref_img], method)
    out = normaliser_for([other], reference)(other)
    assert out.shape == other.shape and out.dtype == np.uint8
    before = np.abs(other.reshape(-1, 3).mean(0) - ref_img.reshape(-1, 3).mean(0)).sum()
    after = np.abs(out.reshape(-1, 3).mean(0) - ref_img.reshape(-1, 3).mean(0)).sum()
    assert after < 0.5 * before
    again = StainStatistics.from_dict(reference.as_dict())
    assert np.array_equal(normaliser_for([other], again)(other), out)


def test_glass_is_left_as_it_is():
    img = stained(64, 64, *PAS)
    img[:, :16] = 243
    out = normaliser_for([img], fit_stain([stained(64, 64, *HE)], "reinhard"))(img)
    assert np.array_equal(out[:, :16], img[:, :16])


def test_too_little_tissue_or_no_method_is_one_sentence():
    with pytest.raises(OmnisegInputError, match="too little tissue"):
        fit_stain([np.full((64, 64, 3), 245, np.uint8)], "reinhard")
    with pytest.raises(OmnisegInputError, match="none"):
        fit_stain([stained(64, 64, *HE)], "none")


def test_a_normalised_slide_is_the_same_read_by_tiles_or_at_once(tmp_path):
    img = stained(1024, 1024, *PAS)
    slide = open_slide(write_ome_subifd(tmp_path / "s.ome.tif", img, levels=3))
    norm = normalised_slide(slide, fit_stain([stained(128, 128, *HE)], "macenko"))
    whole = np.asarray(norm.levels[0].compute())
    assert np.array_equal(np.asarray(norm.levels[0][300:700, 200:600].compute()),
                          whole[300:700, 200:600])
    assert not np.array_equal(whole, img)
    slide.close()


def test_a_model_takes_its_checkpoints_reference_else_the_simulators():
    class Model:
        omniseg_metadata: typing.ClassVar = {"stain_reference": {"reinhard": {
            "method": "reinhard", "lab_mean": [50, 20, -10], "lab_std": [10, 5, 5]}}}

    assert reference_of(Model(), "reinhard").values["lab_mean"] == [50, 20, -10]
    assert reference_of(object(), "reinhard").method == "reinhard"
