import json

import nibabel as nib
import numpy as np
import pytest

from napari_omniseg import open_volume, simulate_fetal
from napari_omniseg.simulate.fetal import LABEL_PROBABILITY, draw_label_set, write_fetal_nifti


@pytest.fixture(scope="module")
def phantoms():
    return [simulate_fetal(seed, size=96) for seed in range(3)]


def test_regions_nest_as_in_anatomy(phantoms):
    for f in phantoms:
        m = {k: v > 0 for k, v in f.masks.items()}
        assert all(v.any() for v in m.values())
        assert not (m["body"] & ~m["uterus"]).any()
        assert not (m["brain"] & ~m["body"]).any()
        assert not (m["eyes"] & ~m["body"]).any()
        assert not (m["eyes"] & m["brain"]).any()
        assert not (m["placenta"] & ~m["uterus"]).any()
        assert not (m["placenta"] & m["body"]).any()
        # two eyes
        from scipy import ndimage
        assert ndimage.label(m["eyes"])[1] == 2


def test_placenta_is_thin(phantoms):
    from scipy import ndimage

    for f in phantoms:
        depth = ndimage.distance_transform_edt(f.masks["placenta"]) * f.spacing[0]
        assert depth.max() < 20  # mm: a slab, not a ball
        assert f.masks["placenta"].sum() > 200


def test_contrast_is_low_but_present(phantoms):
    for f in phantoms:
        v = f.volume
        brain = v[f.masks["brain"] > 0].mean()
        from scipy import ndimage

        inner = ndimage.binary_erosion(f.masks["body"] > 0, iterations=2)
        body_only = v[inner & ~ndimage.binary_dilation(f.masks["brain"] + f.masks["eyes"] > 0,
                                                       iterations=2)]
        assert abs(brain - body_only.mean()) > 0.05
        assert abs(brain - body_only.mean()) < 3 * body_only.std() + 0.5


def test_seeds_change_shape_and_pose_and_are_reproducible(phantoms):
    a, b = phantoms[0], phantoms[1]
    assert (a.masks["uterus"] != b.masks["uterus"]).mean() > 0.02
    again = simulate_fetal(0, size=96)
    np.testing.assert_array_equal(again.volume, a.volume)
    assert again.labelled == a.labelled


def test_partial_label_proportions():
    rng = np.random.default_rng(0)
    sets = [draw_label_set(rng) for _ in range(4000)]
    assert all(len(s) >= 1 for s in sets)
    for region, p in LABEL_PROBABILITY.items():
        freq = np.mean([region in s for s in sets])
        assert abs(freq - p) < 0.05, (region, freq, p)


def test_nifti_written_with_affine_and_opens_as_volume(tmp_path, phantoms):
    f = phantoms[2]
    paths = write_fetal_nifti(f, tmp_path, all_masks=True)
    img = nib.load(paths["volume"])
    np.testing.assert_allclose(img.affine, f.affine)
    assert img.header.get_zooms() == (3.0, 3.0, 3.0)
    v = open_volume(paths["volume"])
    assert v.spacing == (3.0, 3.0, 3.0) and v.data.shape == (96, 96, 96)
    brain = open_volume(paths["brain"]).data.compute()
    np.testing.assert_array_equal(brain, f.masks["brain"])
    assert json.loads(paths["labels"].read_text())["labelled"] == list(f.labelled)
