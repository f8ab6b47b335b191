"""Reading adaptation targets: every kind of input, and one sentence for each bad one."""

import warnings

import numpy as np
import pytest
from conftest import write_ome_subifd

from napari_omniseg.errors import OmnisegInputError
from napari_omniseg.train.adapt_targets import (
    TargetSampler,
    targets_from_arrays,
    targets_from_path,
)


def tissue(h=300, w=300, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal((200, 120, 170), 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _png(path, a):
    from PIL import Image

    Image.fromarray(a).save(path)
    return path


def test_a_folder_of_images_is_read_without_its_masks(tmp_path):
    for i in range(2):
        _png(tmp_path / f"p{i}.png", tissue(seed=i))
        _png(tmp_path / f"p{i}_mask.png", np.zeros((300, 300), np.uint8))
    t = targets_from_path(tmp_path, magnification=10, crop=256)
    assert t.names == ["p0.png", "p1.png"] and t.magnifications == [10, 10]
    with pytest.raises(OmnisegInputError, match="--magnification"):
        targets_from_path(tmp_path, crop=256)
    assert targets_from_path(tmp_path, mpp=1.0, crop=256).magnifications == [10, 10]


def test_a_csv_gives_each_image_its_magnification_and_ignores_masks(tmp_path):
    _png(tmp_path / "a.png", tissue())
    _png(tmp_path / "b.png", tissue(seed=1))
    (tmp_path / "t.csv").write_text("image,mask,magnification\na.png,nothing.png,5\n"
                                    "b.png,,40\n")
    t = targets_from_path(tmp_path / "t.csv", crop=256)
    assert t.magnifications == [5, 40]
    (tmp_path / "u.csv").write_text("image\na.png\n")
    with pytest.raises(OmnisegInputError, match="no magnification"):
        targets_from_path(tmp_path / "u.csv", crop=256)


def test_a_slide_is_sampled_on_tissue_at_each_optimal_magnification(tmp_path):
    img = np.full((2048, 2048, 3), 245, np.uint8)  # glass, with tissue in the middle
    img[256:1792, 256:1792] = tissue(1536, 1536)
    path = write_ome_subifd(tmp_path / "s.ome.tif", img, levels=3, mpp=0.25)
    t = targets_from_path(path, crop=256, per_magnification=3)
    assert sorted(set(t.magnifications)) == [5, 10, 40]
    from napari_omniseg.predict.tissue_mask import tissue_pixels

    assert all(tissue_pixels(a).mean() >= 0.5 for a in t.images)
    assert all(a.shape == (256, 256, 3) for a in t.images)


@pytest.mark.parametrize("image, words", [
    (np.zeros((300, 300), np.uint8), "grayscale"),
    (np.zeros((300, 300, 1), np.uint8), "grayscale"),
    (np.zeros((5, 300, 300), np.uint8), "volume"),
    (np.zeros((100, 300, 3), np.uint8) + 128, "smaller than one training patch"),
    (np.full((300, 300, 3), 240, np.uint8), "no tissue"),
])
def test_bad_target_images_get_one_sentence(image, words):
    with pytest.raises(OmnisegInputError, match=words):
        targets_from_arrays([image, tissue()], [10, 10], ["bad", "good"], crop=256)


def test_a_slide_without_tissue_and_a_volume_file_are_refused(tmp_path):
    glass = write_ome_subifd(tmp_path / "glass.ome.tif", np.full((1024, 1024, 3), 242,
                                                                  np.uint8), mpp=0.25)
    with pytest.raises(OmnisegInputError, match="no tissue"):
        targets_from_path(glass, crop=256)
    (tmp_path / "v.nii.gz").write_bytes(b"")
    with pytest.raises(OmnisegInputError, match="volume"):
        targets_from_path(tmp_path / "v.nii.gz")
    with pytest.raises(OmnisegInputError, match="does not exist"):
        targets_from_path(tmp_path / "missing.png")


def test_one_target_image_warns_and_goes_on():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = targets_from_arrays([tissue()], [10], ["only"], crop=256)
    assert len(t) == 1
    assert any("only one target image" in str(w.message) for w in caught)


def test_the_sampler_asks_for_tissues_seen_at_the_crop_magnification():
    t = targets_from_arrays([tissue(), tissue(seed=1)], [5, 40], ["a", "b"], crop=128)
    batch = TargetSampler(t, 8, 128, seed=0)()
    assert batch["images"].shape == (8, 3, 128, 128)
    tids, sids = batch["conditions"]
    from napari_omniseg import vocab

    for tid, sid in zip(tids.tolist(), sids.tolist()):
        mag = vocab.MAGNIFICATIONS[sid]
        optimal = vocab.TISSUES[tid].optimal_magnification
        assert abs(vocab.MAGNIFICATIONS.index(mag) - vocab.MAGNIFICATIONS.index(optimal)) <= 1
