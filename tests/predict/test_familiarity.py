"""The out-of-distribution check: a record of the training patches, distances, slide tiles."""

import numpy as np
import pytest
import torch

from napari_omniseg import open_slide
from napari_omniseg.nets.omniseg import OmniSegPlus
from napari_omniseg.predict.familiarity import (
    Familiarity,
    check_slide,
    engine_tiles,
    familiarity_metadata,
    familiarity_of,
    fit_familiarity,
    patch_descriptors,
    random_crops,
    slide_familiarity,
)
from napari_omniseg.predict.slide import make_engines
from napari_omniseg.simulate.renal import simulate_renal, write_renal_slide


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return OmniSegPlus(width=0.25).eval()


@pytest.fixture(scope="module")
def he_slide(tmp_path_factory):
    d = tmp_path_factory.mktemp("fam")
    img, _ = write_renal_slide(d / "he.ome.tif", 768, 768, stain="he", seed=21)
    return open_slide(img)


def test_distances_separate_a_shifted_set_and_survive_the_checkpoint_round_trip():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(400, 40)) @ rng.normal(size=(40, 40))  # correlated dimensions
    fam = fit_familiarity(train)
    inside = fam.distances(train) / fam.threshold
    assert 0.9 <= (inside <= 1).mean() <= 0.99  # the 95% quantile of held-out patches
    shifted = train[:50] + 6 * train.std(0)
    assert (fam.distances(shifted) > fam.threshold).all()
    again = Familiarity.from_dict(fam.as_dict())
    np.testing.assert_allclose(again.distances(train), fam.distances(train), rtol=1e-3)


def test_a_small_held_out_slide_does_not_pool_the_slides():
    # slides differ from each other more than their patches do: the slide threshold resamples
    # slide by slide; one held-out slide of two patches once sent every slide to the pooled
    # resampling, whose threshold (about the overall median) flagged the bundled sample
    rng = np.random.default_rng(0)
    offsets = np.repeat(np.linspace(0.6, 2.0, 8), 5)  # eight slides, each tight around its own
    held = list(offsets + rng.normal(scale=0.02, size=len(offsets)))
    groups = list(np.repeat(np.arange(8), 5))
    fam = Familiarity([0.0], [1.0], [[1.0]], [1.0], 1.0, 1.0, held, groups, 40)
    with_small = Familiarity([0.0], [1.0], [[1.0]], [1.0], 1.0, 1.0, [*held, 1.0, 1.1],
                             [*groups, 8, 8], 42)
    assert fam.slide_threshold(30) > 1.9  # about the farthest slide, not the pooled median
    assert with_small.slide_threshold(30) == pytest.approx(fam.slide_threshold(30), rel=0.05)
    singletons = Familiarity([0.0], [1.0], [[1.0]], [1.0], 1.0, 1.0, held, [], 40)
    assert singletons.slide_threshold(30) < 1.6  # no slides known: pooled, as before


def test_too_few_patches_are_refused_and_give_no_record(model):
    with pytest.raises(ValueError, match="too few"):
        fit_familiarity(np.zeros((10, 40)))
    assert familiarity_metadata(model, np.zeros((4, 64, 64, 3), np.uint8)) == {}


def test_descriptors_have_the_context_and_the_texture_statistics(model):
    images = np.random.default_rng(1).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    d = patch_descriptors(model, images, batch=2)
    with torch.no_grad():
        encoder = model.feature_maps(torch.zeros(1, 3, 64, 64))[2]
    assert d.shape == (3, 2 * (encoder[0].shape[1] + encoder[1].shape[1]))
    assert np.isfinite(d).all()


def test_random_crops_pad_small_images_and_keep_the_size():
    crops = random_crops([np.zeros((100, 300, 3), np.uint8), np.ones((512, 512, 3), np.uint8)],
                         size=256, per_image=3)
    assert crops.shape == (6, 256, 256, 3) and crops.dtype == np.uint8


def test_slide_tiles_lie_on_tissue(model, he_slide):
    engine, _ = make_engines(he_slide, ("dt",), None, model)["dt"]
    tiles = engine_tiles(engine, 6)
    assert 1 <= len(tiles) <= 6
    from napari_omniseg.predict.tissue_mask import tissue_pixels

    assert all(tissue_pixels(t).mean() > 0.5 for t in tiles)


def _jpeg(images):
    from napari_omniseg.train.augment import jpeg

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = jpeg(x, torch.Generator().manual_seed(0), p=0.5)
    return (x.permute(0, 2, 3, 1) * 255 + 0.5).to(torch.uint8).numpy()


def _with_record(model, images, groups):
    m = OmniSegPlus(width=0.25).eval()
    m.load_state_dict(model.state_dict())
    m.omniseg_metadata = familiarity_metadata(m, images, groups)
    return m


def test_a_slide_like_the_training_patches_passes_and_an_unlike_one_warns(model, he_slide,
                                                                         tmp_path):
    # the record: 40x crops of the slide's own image as simulated (PTC is seen at 40x); the
    # slide is checked as Segment reads it (JPEG OME-TIFF pyramid, network tiles, bfloat16).
    # Across slides the benchmark measures it with a trained model (benchmarks/familiarity.py):
    # an untrained network's texture features differ from slide to slide
    sim = simulate_renal(768, 768, stain="he", seed=21)
    checked = _with_record(model, _jpeg(random_crops([np.asarray(sim.image[0])], 256, 120)),
                           None)
    engines = make_engines(he_slide, ("ptc",), None, checked)
    familiar = slide_familiarity(engines, checked)
    assert familiar is not None and familiar.tiles > 0 and not familiar.unfamiliar
    assert check_slide(engines, checked) == ""

    # the same tissue in another stain's colours and with blurred texture
    from conftest import write_png
    from scipy import ndimage

    odd = np.asarray(simulate_renal(1024, 1024, stain="he", seed=31).image[0])[..., ::-1]
    odd = ndimage.uniform_filter(odd, (9, 9, 1))
    other = open_slide(write_png(tmp_path / "odd.png", odd, mpp=0.25))
    engines = make_engines(other, ("ptc",), None, checked)
    result = slide_familiarity(engines, checked)
    assert result is not None and result.unfamiliar and result.beyond > 0.5
    sentence = check_slide(engines, checked, "the bundled model")
    assert sentence.startswith("this slide looks unlike what the bundled model was trained on")
    assert sentence.count(".") <= 1 and "Correct" in sentence


def test_a_model_without_a_record_is_not_judged(model, he_slide):
    assert familiarity_of(model) is None
    engines = make_engines(he_slide, ("dt",), None, model)
    assert slide_familiarity(engines, model) is None and check_slide(engines, model) == ""


def test_a_tile_that_cannot_be_read_gives_no_warning_rather_than_a_failure(model, he_slide,
                                                                          monkeypatch):
    import napari_omniseg.predict.familiarity as familiarity

    checked = _with_record(model, np.random.default_rng(0).integers(
        0, 255, (96, 64, 64, 3), dtype=np.uint8), None)

    def unreadable(*_a, **_k):
        raise OSError("the file went away")

    monkeypatch.setattr(familiarity, "engine_tiles", unreadable)
    engines = make_engines(he_slide, ("ptc",), None, checked)
    assert check_slide(engines, checked) == ""
