"""The anatomy prior drawn inside painted masks."""

import numpy as np
import pytest
from conftest import REAL_TUBULE_LOCAL_SD_FLOOR, local_sd
from scipy import ndimage
from skimage.draw import disk

from napari_omniseg.simulate.mask_prior import prior_halo, render_prior
from napari_omniseg.vocab import tissue


def _painted(side: int = 320) -> np.ndarray:
    m = np.zeros((6, side, side), bool)
    for k, (cy, cx) in enumerate([(60, 60), (60, 170), (170, 60)]):
        m[tissue("pt" if k % 2 else "dt").task_id][disk((cy, cx), 40, shape=m.shape[1:])] = True
    m[tissue("cap").task_id][disk((220, 220), 80, shape=m.shape[1:])] = True
    m[tissue("ves").task_id][disk((60, 270), 40, shape=m.shape[1:])] = True
    m[tissue("ptc").task_id][disk((280, 60), 6, shape=m.shape[1:])] = True
    return m


def test_windows_agree_with_the_whole_image():
    m, mpp = _painted(), 1.0
    whole = render_prior(m, "pas", mpp, seed=4)
    halo = prior_halo(mpp)
    for y, x in [(100, 100), (180, 200)]:
        s = 60
        ya, xa = max(0, y - halo), max(0, x - halo)
        window = render_prior(m[:, ya:y + s + halo, xa:x + s + halo], "pas", mpp, seed=4,
                              y0=ya, x0=xa)
        assert np.array_equal(window[y - ya:y - ya + s, x - xa:x - xa + s],
                              whole[y:y + s, x:x + s])



@pytest.mark.parametrize("tuft", [False, True])
def test_cropping_inside_gives_the_pixels_of_cropping_after(tuft):
    """``crop`` draws only the distances in the context band, and the same pixels result."""
    m, mpp = _painted(), 1.0
    if tuft:
        m[tissue("tuft").task_id][disk((220, 220), 60, shape=m.shape[1:])] = True
    halo = prior_halo(mpp)
    whole = render_prior(m, "pas", mpp, seed=3, y0=-7, x0=11)
    cropped = render_prior(m, "pas", mpp, seed=3, y0=-7, x0=11, crop=halo)
    assert cropped.shape == (320 - 2 * halo, 320 - 2 * halo, 3)
    np.testing.assert_array_equal(cropped, whole[halo:-halo, halo:-halo])
    # a crop narrower than the drawing's own margin is a plain crop
    np.testing.assert_array_equal(render_prior(m, "he", mpp, seed=3, crop=5),
                                  render_prior(m, "he", mpp, seed=3)[5:-5, 5:-5])

def test_a_seed_gives_one_image_and_another_seed_another():
    m = _painted()
    a = render_prior(m, "he", 1.0, seed=1)
    assert np.array_equal(a, render_prior(m, "he", 1.0, seed=1))
    assert np.abs(a.astype(int) - render_prior(m, "he", 1.0, seed=2)).mean() > 5


@pytest.mark.parametrize("code", ["dt", "pt", "cap", "ves"])
def test_a_tissue_lies_inside_its_painted_region(code):
    """Painting one tissue changes the image only within its region (and the optics' blur)."""
    m = _painted()
    empty = np.zeros_like(m)
    only = empty.copy()
    only[tissue(code).task_id] = m[tissue(code).task_id]
    base = render_prior(empty, "pas", 1.0, seed=0).astype(int)
    drawn = render_prior(only, "pas", 1.0, seed=0).astype(int)
    changed = np.abs(drawn - base).max(-1) > 12
    near = ndimage.binary_dilation(only[tissue(code).task_id], iterations=3)
    assert changed[near].mean() > 0.3
    # nuclei of the unpainted interstitium may be displaced next to the region; nothing else
    assert changed[~ndimage.binary_dilation(near, iterations=8)].mean() < 0.002


def test_tubules_are_not_flat():
    m = _painted()
    for stain in ("he", "pas", "sil", "tri"):
        img = render_prior(m, stain, 1.0, seed=0)
        inner = ndimage.binary_erosion(m[tissue("pt").task_id], iterations=4)
        for c in range(3):
            assert np.median(local_sd(img[..., c])[inner]) > REAL_TUBULE_LOCAL_SD_FLOOR


def test_a_painted_disc_gets_a_tuft_with_nuclei_and_an_artery_a_lumen():
    m = _painted()
    img = render_prior(m, "pas", 1.0, seed=0).astype(float).mean(-1)
    cap = m[tissue("cap").task_id]
    centre = np.zeros_like(cap)
    centre[disk((220, 220), 50, shape=cap.shape)] = True
    rim = cap & ~ndimage.binary_erosion(cap, iterations=6)
    assert img[centre].mean() < img[rim].mean() - 15  # tuft darker than Bowman's space
    ves = m[tissue("ves").task_id]
    lumen = np.zeros_like(ves)
    lumen[disk((60, 270), 8, shape=ves.shape)] = True
    wall = ves & ~ndimage.binary_erosion(ves, iterations=10)
    assert img[lumen].mean() > img[wall].mean() + 20


def test_a_wide_tubule_region_is_split_into_tubules():
    m = np.zeros((6, 300, 300), bool)
    m[tissue("pt").task_id, 20:280, 20:280] = True
    img = render_prior(m, "pas", 1.0, seed=0).astype(float).mean(-1)
    bright = img[20:280, 20:280] > np.percentile(img[20:280, 20:280], 85)
    # the bright gaps between tubules are thin; an opening leaves the lumens
    _, n = ndimage.label(ndimage.binary_opening(bright, iterations=3))
    assert n >= 6  # a 260 um square holds many tubule lumens, not one



def test_distal_tubules_are_smaller_and_more_open_than_proximal_ones():
    """The segmenter learnt the simulator's tubules: distal ones small, with a low epithelium
    round a wide lumen. The prior once drew both kinds at one size (as many lumens in a
    painted distal square as in a proximal one), and the segmenter read its distal tubules as
    proximal."""
    side, mpp = 400, 0.5
    stats = {}
    for code in ("dt", "pt"):
        m = np.zeros((6, side, side), bool)
        m[tissue(code).task_id, 20:380, 20:380] = True
        grey = render_prior(m, "pas", mpp, seed=0).astype(float)[40:360, 40:360].mean(-1)
        lumen = grey > 200  # pale lumens (epithelium, nuclei and membranes are darker)
        _, n_lumens = ndimage.label(ndimage.binary_opening(lumen, iterations=2))
        stats[code] = lumen.mean(), n_lumens
    (dt_lumen, dt_tubules), (pt_lumen, pt_tubules) = stats["dt"], stats["pt"]
    assert dt_lumen > 1.15 * pt_lumen  # more of a distal region is lumen
    assert dt_tubules > 1.25 * pt_tubules  # more, smaller tubules in the same area


@pytest.mark.parametrize("mpp", [0.25, 0.2527, 2.0])
def test_inside_distances_are_scipys_euclidean_distances_clipped(mpp):
    from napari_omniseg.simulate.mask_prior import REACH_UM, _inside_distance

    rng = np.random.default_rng(0)
    for share in (0.5, 0.97, 1.0):
        mask = ndimage.binary_opening(rng.random((260, 230)) < share) if share < 1 else \
            np.ones((260, 230), bool)
        want = np.minimum(ndimage.distance_transform_edt(mask).astype(np.float32) * mpp,
                          REACH_UM)
        got = _inside_distance(mask, mpp)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
