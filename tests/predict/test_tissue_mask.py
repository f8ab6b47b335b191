import numpy as np
import torch
from conftest import constant_logits_model, write_ome_subifd

from napari_omniseg import open_slide
from napari_omniseg.predict.slide import segment_slide
from napari_omniseg.predict.tissue_mask import tissue_mask
from napari_omniseg.simulate.renal import read_renal_masks, write_renal_slide


def AlwaysForeground():
    """Says "yes" everywhere, glass included: only the tissue mask can stop it."""
    def fn(n, k, h, w):
        logits = torch.zeros(n, k, 2, h, w)
        logits[:, :, 1] = 5.0
        return logits

    return constant_logits_model(fn)


def glass_with_tissue(h=2048, w=2048):
    img = np.full((h, w, 3), 242, np.uint8)
    img[512:1536, 256:1280] = (190, 110, 170)      # a block of tissue
    img[800:1000, 600:800] = (250, 250, 250)       # a lumen inside it: bright, enclosed
    return img


def test_mask_keeps_enclosed_lumens_and_drops_glass(tmp_path):
    slide = open_slide(write_ome_subifd(tmp_path / "g.ome.tif", glass_with_tissue(), levels=4))
    tm = tissue_mask(slide)
    assert tm.downsample == 16  # 4 µm mask pixels, read from the 2 µm/px level

    def at(y, x):
        return tm.mask[int(y // tm.downsample), int(x // tm.downsample)]

    assert at(900, 700)                       # the lumen is tissue
    assert at(1000, 260) and at(1000, 200)    # the edge is grown by about 30 µm (120 px)
    assert not at(100, 100) and not at(1000, 1800)


def test_mask_of_a_plain_full_resolution_image_is_coarse_and_cheap(tmp_path):
    slide = open_slide(write_ome_subifd(tmp_path / "g.ome.tif", glass_with_tissue(), levels=1))
    tm = tissue_mask(slide)  # a single 0.25 µm/px level: read every 16th pixel
    assert tm.downsample == 16 and tm.mask.shape == (128, 128)


def test_no_mask_when_the_coarsest_level_is_too_big(tmp_path):
    slide = open_slide(write_ome_subifd(tmp_path / "g.ome.tif", glass_with_tissue(), levels=1))
    assert tissue_mask(slide, max_side=1024) is None


def test_predictions_stay_off_the_glass(tmp_path):
    slide = open_slide(write_ome_subifd(tmp_path / "g.ome.tif", glass_with_tissue(), levels=4))
    kw = {"tissues": ("ptc",), "model": AlwaysForeground(), "bf16": False}
    masked = segment_slide(slide, **kw)["ptc"][0].compute()
    unmasked = segment_slide(slide, mask_glass=False, **kw)["ptc"][0].compute()
    # 140 px (35 um) above the tissue, inside a tile that straddles its edge
    assert unmasked[372, 700] == 1
    assert masked[372, 700] == 0 and masked[100, 1800] == 0
    assert masked[512:1536, 256:1280].all()  # all the tissue, lumen included


def test_the_glass_of_the_margin_gets_no_prediction(tmp_path):
    """The margin keeps the outlines of objects cut by the biopsy's edge, not the glass strip
    along it (the sample's arteries once lay there)."""
    from napari_omniseg.predict.tissue_mask import MARGIN_KEEP_PX

    slide = open_slide(write_ome_subifd(tmp_path / "g.ome.tif", glass_with_tissue(), levels=4))
    tm = tissue_mask(slide)
    edge_band = tm.mask[int(1000 // 16), int(200 // 16)] and not tm.inner[
        int(1000 // 16), int(200 // 16)]
    assert edge_band  # 56 px left of the tissue: in the margin, on glass
    ptc = segment_slide(slide, tissues=("ptc",), model=AlwaysForeground(), bf16=False)["ptc"]
    masked = ptc[0].compute()
    assert masked[1000, 256 - MARGIN_KEEP_PX:256].all()  # the outline's neighbours stay
    assert not masked[1000, 150:240].any()  # the glass of the margin does not


def test_simulated_biopsy_glass_is_masked(tmp_path):
    img, masks = write_renal_slide(tmp_path / "b.ome.tif", 2048, 2048, stain="pas", seed=2,
                                   shape="biopsy", masks_path=tmp_path / "m.ome.tif")
    tm = tissue_mask(open_slide(img))
    labelled = np.any(list(read_renal_masks(masks, level=3).values()), axis=0)[::2, ::2]
    assert tm.mask.shape == labelled.shape
    assert tm.mask[labelled > 0].all()  # every structure is inside
    assert tm.mask.mean() < 0.9         # and the glass around the biopsy is out


def test_tissue_pixels_are_saturated_or_dark():
    from napari_omniseg.predict.tissue_mask import tissue_pixels

    rng = np.random.default_rng(0)
    for spread in (256, 60):  # anything, and near-white glass with a little colour
        rgb = (255 - rng.integers(0, spread, (128, 128, 3))).astype(np.uint8)
        x = rgb.astype(int)
        expected = (x.max(-1) - x.min(-1) > 18) | (x.mean(-1) < 200)
        np.testing.assert_array_equal(tissue_pixels(rgb), expected)
