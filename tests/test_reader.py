"""The npe2 reader inside a real napari viewer (headless, under Xvfb)."""

import numpy as np
import pytest
from conftest import MPP, write_ome_series, write_ome_subifd, write_png, write_svs

from napari_omniseg.io.export import save_nifti

pytestmark = pytest.mark.gui
PLUGIN = "napari-omniseg"


@pytest.mark.parametrize("writer, name, levels, mpp, mag", [
    (write_ome_subifd, "a.ome.tif", 3, MPP, 40),
    (write_ome_series, "b.ome.tif", 3, MPP, 40),
    (write_svs, "c.svs", 3, 0.2525, 40),
    (write_png, "d.png", 3, MPP, 40),
])
def test_slides_open_as_multiscale_layers_in_um(make_napari_viewer, tmp_path, image, writer,
                                                name, levels, mpp, mag):
    path = writer(tmp_path / name, image)
    viewer = make_napari_viewer()
    layers = viewer.open(path, plugin=PLUGIN)
    assert len(layers) == 1
    layer = layers[0]
    assert layer.rgb and layer.multiscale and len(layer.data) == levels
    np.testing.assert_allclose(layer.scale, (mpp, mpp), rtol=1e-3)
    assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]
    assert layer.metadata["mpp"] == pytest.approx(mpp, rel=1e-3)
    assert layer.metadata["magnification"] == pytest.approx(mag, rel=0.02)
    # a slide at another magnification overlays in the same physical space
    half = write_ome_subifd(tmp_path / "half.ome.tif", image[::2, ::2].copy(), levels=2,
                            mpp=2 * mpp)
    other = viewer.open(half, plugin=PLUGIN)[0]
    np.testing.assert_allclose(other.extent.world[1], layer.extent.world[1], rtol=0.01)


def test_volume_opens_as_3d_layer_in_mm(make_napari_viewer, tmp_path):
    vol = np.random.default_rng(0).random((12, 20, 24)).astype(np.float32)
    path = save_nifti(vol, np.diag([1.0, 2.0, 3.0, 1.0]), tmp_path / "v.nii.gz")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(path, plugin=PLUGIN)
    assert layer.ndim == 3 and layer.data.shape == (12, 20, 24)
    np.testing.assert_allclose(layer.scale, (3.0, 2.0, 1.0))
    lo, hi = layer.contrast_limits  # the 0.5 / 99.5 percentile window, not the dtype's range
    assert 0 <= lo < 0.05 and 0.95 < hi <= 1


def _text_tif(tmp_path, image):
    p = tmp_path / "bad.tif"
    p.write_text("this is not an image\n" * 10)
    return p


def _truncated_tif(tmp_path, image):
    good = write_ome_subifd(tmp_path / "good.ome.tif", image).read_bytes()
    p = tmp_path / "bad.ome.tif"
    p.write_bytes(good[: len(good) // 2])
    return p


def _two_channel_tif(tmp_path, image):
    import tifffile

    p = tmp_path / "two.tif"
    tifffile.imwrite(p, np.zeros((256, 256, 2), np.uint8), photometric="minisblack",
                     planarconfig="contig")
    return p


def _flat_nifti(tmp_path, image):
    return save_nifti(np.zeros((1, 30, 40), np.float32), np.eye(4), tmp_path / "flat.nii.gz")


@pytest.mark.parametrize("make, words", [
    (_text_tif, "not a TIFF file"),
    (_truncated_tif, "truncated"),
    (_two_channel_tif, "has 2 channels"),
    (_flat_nifti, "2D image"),
])
def test_bad_files_give_one_sentence_and_no_layer(make_napari_viewer, tmp_path, image, make,
                                                  words, monkeypatch):
    path = make(tmp_path, image)
    shown = []
    import napari.utils.notifications as notifications

    monkeypatch.setattr(notifications, "show_error", lambda msg: shown.append(msg))
    viewer = make_napari_viewer()
    layers = viewer.open(path, plugin=PLUGIN)
    assert layers == [] and len(viewer.layers) == 0
    assert len(shown) == 1 and words in shown[0] and "\n" not in shown[0]


def test_slide_without_pixel_size_opens_in_pixels_with_a_warning(make_napari_viewer, tmp_path,
                                                                 image, monkeypatch):
    warned = []
    import napari.utils.notifications as notifications

    monkeypatch.setattr(notifications, "show_warning", lambda msg: warned.append(msg))
    path = write_png(tmp_path / "nompp.png", image, mpp=None)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(path, plugin=PLUGIN)
    assert tuple(layer.scale) == (1.0, 1.0) and layer.metadata["mpp"] is None
    assert warned and "no pixel size" in warned[0]


def test_manifest_is_valid_and_lists_reader_and_samples():
    import shutil
    import subprocess

    import npe2

    npe2_cli = shutil.which("npe2")
    assert npe2_cli, "npe2 command missing"
    done = subprocess.run([npe2_cli, "validate", PLUGIN], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = npe2.PluginManifest.from_distribution(PLUGIN)
    assert manifest.contributions.readers
    keys = {s.key for s in manifest.contributions.sample_data}
    assert keys == {"renal_he", "renal_pas", "renal_sil", "renal_tri", "fetal_mri"}
    assert [w.display_name for w in manifest.contributions.widgets] == [
        "Segment (kidney)", "Segment (fetal MRI)", "Fine-tune", "Quantify", "Synthesize",
        "Correct (kidney)", "Block labels"]
    assert [w.display_name for w in manifest.contributions.writers] == [
        "QuPath GeoJSON", "OME-TIFF labels pyramid", "CSV of objects"]


@pytest.mark.parametrize("key", ["renal_he", "renal_tri", "fetal_mri"])
def test_sample_data_opens(make_napari_viewer, key):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, key)
    image, truth = viewer.layers
    assert truth.visible is False
    if key.startswith("renal"):
        assert image.multiscale and image.rgb and len(image.data) == 4
        assert image.metadata["mpp"] == pytest.approx(0.25)
        assert len(truth.data) == 4
        np.testing.assert_allclose(truth.scale, image.scale)
        assert set(np.unique(np.asarray(truth.data[3]))) <= set(range(7))
    else:
        assert image.ndim == 3 and tuple(image.scale) == (3.0, 3.0, 3.0)
        assert set(np.unique(truth.data)) == set(range(6))
