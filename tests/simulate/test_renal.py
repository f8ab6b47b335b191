import tracemalloc

import dask.array as da
import numpy as np
import pytest
from skimage.measure import label, regionprops

from napari_omniseg import open_slide, simulate_renal
from napari_omniseg.errors import OmnisegInputError
from napari_omniseg.run import Stopped
from napari_omniseg.simulate.renal import make_renderer, read_renal_masks, write_renal_slide
from napari_omniseg.simulate.renal_layout import RenalAnatomy, RenalLayout


@pytest.fixture(scope="module")
def cortex():
    """One 1 mm x 1 mm H&E cortex, shared by the size tests."""
    return simulate_renal(4096, 4096, stain="he", seed=21, levels=4)


def _inner_regions(mask, mpp):
    """(equivalent diameter, minor axis) in um of components not cut by the border."""
    out = []
    for r in regionprops(label(mask > 0)):
        y0, x0, y1, x1 = r.bbox
        if y0 and x0 and y1 < mask.shape[0] and x1 < mask.shape[1]:
            out.append((r.equivalent_diameter_area * mpp, r.axis_minor_length * mpp))
    return np.array(out)


def test_glomerular_capsules_are_150_to_250_um(cortex):
    caps = _inner_regions(cortex.masks["cap"][1], 0.5)
    assert len(caps) >= 1
    assert np.all((caps[:, 0] > 150) & (caps[:, 0] < 250))


def test_tuft_lies_inside_its_capsule_with_bowmans_space(cortex):
    tuft, cap = cortex.masks["tuft"][0] > 0, cortex.masks["cap"][0] > 0
    assert tuft.any() and not (tuft & ~cap).any()
    assert (cap & ~tuft).sum() > 0.1 * cap.sum()  # capsule wall + Bowman's space


def test_tubule_and_capillary_sizes(cortex):
    pt = _inner_regions(cortex.masks["pt"][1], 0.5)
    dt = _inner_regions(cortex.masks["dt"][1], 0.5)
    assert 50 <= np.median(pt[:, 0]) <= 60
    assert 30 <= np.median(dt[:, 0]) <= 50
    assert np.median(pt[:, 0]) > np.median(dt[:, 0])
    ptc = _inner_regions(cortex.masks["ptc"][0], 0.25)
    lumen_minor = ptc[:, 1] - 2 * 0.7  # masks include a 0.7 um endothelial wall
    assert 5 <= np.median(lumen_minor) <= 10
    assert len(ptc) > 100


def test_tissue_fractions_look_like_cortex(cortex):
    frac = {k: float(np.mean(v[2])) for k, v in cortex.masks.items()}
    assert frac["pt"] > frac["dt"] > frac["ptc"] > 0
    assert 0.3 < frac["pt"] + frac["dt"] < 0.85


def test_lower_levels_are_majority_downsampled_and_aligned(cortex):
    for k in (1, 2, 3):
        f = 2**k
        for code in ("pt", "ptc"):
            m0 = cortex.masks[code][0].astype(np.float32)
            h, w = cortex.masks[code][k].shape
            expected = m0[: h * f, : w * f].reshape(h, f, w, f).mean((1, 3)) >= 0.5
            np.testing.assert_array_equal(cortex.masks[code][k], expected)
        img0 = cortex.image[0][: 64 * f, : 64 * f].astype(np.float32)
        mean = img0.reshape(64, f, 64, f, 3).mean((1, 3))
        np.testing.assert_allclose(cortex.image[k][:64, :64], np.round(mean), atol=1)


def test_tissues_have_their_own_colour(cortex):
    img = cortex.image[0].astype(np.float32)
    pt = img[cortex.masks["pt"][0] > 0].mean(0)
    glass_free = img[(cortex.masks["pt"][0] == 0) & (cortex.masks["dt"][0] == 0)].mean(0)
    assert np.abs(pt - glass_free).max() > 5


def test_deterministic_by_seed_and_seeds_differ():
    a = simulate_renal(512, 512, stain="pas", seed=4, levels=1)
    b = simulate_renal(512, 512, stain="pas", seed=4, levels=1)
    c = simulate_renal(512, 512, stain="pas", seed=5, levels=1)
    np.testing.assert_array_equal(a.image[0], b.image[0])
    assert (a.image[0] != c.image[0]).mean() > 0.5


@pytest.mark.parametrize("ptc_slits", [0.0, 0.6])
def test_windows_agree_with_the_whole(ptc_slits):
    """Chunked rendering is exact: any window equals the same crop of a larger render."""
    r = make_renderer(seed=9, stain="tri", height=2048, width=2048,
                      anatomy=RenalAnatomy(ptc_slits=ptc_slits))
    rgb, masks = r.render(0, 0, 768, 768)
    windows = [(0, 0, 384, 768), (384, 0, 384, 768), (101, 333, 250, 77)]
    # small windows (32 um) that long capillaries reaching in from outside must still cross
    windows += [(y, x, 128, 128) for y in range(0, 768, 128) for x in range(0, 768, 128)]
    for y, x, h, w in windows:
        rgb_w, masks_w = r.render(y, x, h, w)
        np.testing.assert_array_equal(rgb_w, rgb[y:y + h, x:x + w])
        np.testing.assert_array_equal(masks_w, masks[:, y:y + h, x:x + w])


def _major_minor_um(mask):
    """(major, minor) axis lengths in um of 40x components not cut by the border."""
    out = [(r.axis_major_length * 0.25, r.axis_minor_length * 0.25)
           for r in regionprops(label(mask > 0))
           if r.bbox[0] and r.bbox[1] and r.bbox[2] < mask.shape[0] and r.bbox[3] < mask.shape[1]]
    return np.array(out)


SLITS = RenalAnatomy(ptc_slits=1.0)


def test_slit_capillaries_are_as_long_and_narrow_as_real_ones():
    """Real peritubular capillaries in PAS at 40x (ki-dev `train` masks) are slits 15-40 um
    long and 4-9 um wide between tubules; the default simulator draws short, rounder ones."""
    round_ = _major_minor_um(simulate_renal(1536, 1536, "pas", seed=21, levels=1)
                             .masks["ptc"][0])
    slits = _major_minor_um(simulate_renal(1536, 1536, "pas", seed=21, levels=1, anatomy=SLITS)
                            .masks["ptc"][0])
    assert len(slits) > 40
    assert np.median(round_[:, 0]) < 15 and (round_[:, 0] >= 15).mean() < 0.05
    assert 15 <= np.median(slits[:, 0]) <= 40 and 4 <= np.median(slits[:, 1]) <= 9
    assert np.median(slits[:, 0] / slits[:, 1]) > 2.5
    with pytest.raises(OmnisegInputError, match="ptc_slits"):
        RenalAnatomy(ptc_slits=1.5)


def test_small_vessels_are_small_oblique_arteries_drawn_whole():
    """Real vessel profiles in a biopsy (ki-dev masks at 10x) are 37-127 um across and often
    several times as long; the default simulator draws only large round arteries."""
    small = RenalLayout(3, RenalAnatomy(small_vessels=1.0)).arteries(0, 0, 4000, 4000)
    large = RenalLayout(3).arteries(0, 0, 4000, 4000)
    assert len(small) >= len(large) >= 3  # a smaller artery fits beside more glomeruli
    assert all(a.r_out >= 35 and a.ecc <= 1.25 for a in large)
    assert all(18 <= a.r_out <= 50 and a.r_out * a.ecc <= 130 for a in small)
    assert np.median([a.ecc for a in small]) > 1.6
    _drawn_whole_around(small[0], RenalAnatomy(small_vessels=1.0))


def test_veins_are_thin_walled_with_wide_lumens_drawn_whole():
    """Many real vessel profiles are veins: a thin wall round a wide, often collapsed lumen."""
    veins = RenalLayout(3, RenalAnatomy(veins=1.0)).arteries(0, 0, 4000, 4000)
    arteries = RenalLayout(3).arteries(0, 0, 4000, 4000)
    assert len(veins) >= 3 and all(v.vein for v in veins) and not any(a.vein for a in arteries)
    assert all(v.r_lumen >= 0.8 * v.r_out and v.r_out * v.ecc <= 130 for v in veins)
    assert all(a.r_lumen <= 0.5 * a.r_out for a in arteries)
    assert np.median([v.ecc for v in veins]) > np.median([a.ecc for a in arteries]) + 0.3
    _drawn_whole_around(veins[0], RenalAnatomy(veins=1.0))


def _drawn_whole_around(a, anatomy: RenalAnatomy) -> None:
    """Render 512 px round vessel ``a`` and check that windows agree with the whole."""
    y, x = int(a.cy / 0.25) - 256, int(a.cx / 0.25) - 256
    r = make_renderer(seed=3, stain="he", height=y + 512, width=x + 512, anatomy=anatomy)
    rgb, masks = r.render(y, x, 512, 512)
    assert masks[4].mean() > 0.02  # the vessel is drawn, and whole windows agree with parts
    for wy, wx in ((0, 0), (200, 300), (384, 128)):
        rgb_w, masks_w = r.render(y + wy, x + wx, 128, 128)
        np.testing.assert_array_equal(rgb_w, rgb[wy:wy + 128, wx:wx + 128])
        np.testing.assert_array_equal(masks_w, masks[:, wy:wy + 128, wx:wx + 128])


@pytest.mark.parametrize("stain", ["he", "pas", "sil", "tri"])
def test_every_stain_renders_differently(stain):
    s = simulate_renal(256, 256, stain=stain, seed=1, levels=1, variation=0.0)
    ref = simulate_renal(256, 256, stain="he" if stain != "he" else "pas", seed=1, levels=1,
                         variation=0.0)
    assert s.image[0].dtype == np.uint8
    assert np.abs(s.image[0].astype(int) - ref.image[0]).mean() > 5


def test_lazy_returns_dask_computed_on_demand():
    s = simulate_renal(100_000, 100_000, seed=2, lazy=True)
    assert isinstance(s.image[0], da.Array) and s.image[0].shape == (100_000, 100_000, 3)
    assert s.image[3].shape == (12_500, 12_500, 3)
    tile = s.image[0][50_000:50_256, 70_000:70_256].compute()
    assert tile.shape == (256, 256, 3) and tile.std() > 5


def test_biopsy_has_glass_and_masks_stay_in_tissue():
    s = simulate_renal(1024, 3072, seed=3, shape="biopsy", levels=1)
    img = s.image[0]
    glass = img[:40].mean()
    assert glass > 225  # top rows are glass
    assert s.masks["pt"][0][:40].sum() == 0


def test_written_slide_opens_as_pyramid_with_masks(tmp_path):
    img, msk = write_renal_slide(tmp_path / "s.ome.tif", 1024, 1536, stain="sil", seed=3,
                                 masks_path=tmp_path / "s_masks.ome.tif")
    slide = open_slide(img)
    assert slide.mpp == pytest.approx(0.25) and slide.magnification == pytest.approx(40)
    assert [lv.shape[:2] for lv in slide.levels] == [(1024, 1536), (512, 768), (256, 384),
                                                     (128, 192)]
    ref = simulate_renal(1024, 1536, stain="sil", seed=3)
    for k in (0, 2):
        masks = read_renal_masks(msk, level=k)
        for code in ("pt", "cap", "ptc"):
            np.testing.assert_array_equal(masks[code], ref.masks[code][k])
        # JPEG is lossy (and the texture is noisy); the picture must still be the same picture
        got = slide.levels[k].compute().astype(np.float32).ravel()
        assert np.corrcoef(got, ref.image[k].astype(np.float32).ravel())[0, 1] > 0.95


def test_stop_removes_partial_files(tmp_path):
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Stopped):
        write_renal_slide(tmp_path / "x.ome.tif", 2048, 512, masks_path=tmp_path / "m.ome.tif",
                          should_stop=stop)
    assert list(tmp_path.iterdir()) == []


def test_memory_stays_flat_while_writing(tmp_path):
    """Memory held between bands does not grow with the slide's height, and no band needs much.

    Peaks differ between bands by what they contain (a glomerulus needs more scratch space
    than tubules), so the check is on what stays allocated after each band plus a bound on
    the peak.
    """
    held, peaks = [], []

    def progress(done, total, message):
        current, peak = tracemalloc.get_traced_memory()
        held.append(current)
        peaks.append(peak)
        tracemalloc.reset_peak()

    tracemalloc.start()
    try:
        write_renal_slide(tmp_path / "tall.ome.tif", 4096, 1024, seed=1,
                          masks_path=tmp_path / "tall_m.ome.tif", progress=progress)
    finally:
        tracemalloc.stop()
    assert len(held) == 8
    assert max(held) - min(held) < 4e6
    assert max(peaks) < 400e6


def test_a_full_disk_while_simulating_leaves_nothing(tmp_path, monkeypatch):
    import errno

    import tifffile

    real = tifffile.TiffWriter.write
    calls = []

    def fills_up(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:  # the first level is written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(tifffile.TiffWriter, "write", fills_up)
    with pytest.raises(OSError):
        write_renal_slide(tmp_path / "x.ome.tif", 1024, 512, masks_path=tmp_path / "m.ome.tif")
    assert list(tmp_path.iterdir()) == []
