"""The Synthesize dock widget, from the Plugins menu: new mask, paint a disc, Synthesize."""

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@pytest.fixture
def tiny_generator(tmp_path):
    import torch

    from napari_omniseg.checkpoints import save_checkpoint
    from napari_omniseg.nets.pyramid_gan import PyramidGenerator

    torch.manual_seed(0)
    path = tmp_path / "g.pt"
    save_checkpoint(PyramidGenerator(levels=3, width=8), path, trained_on="nothing (a test)")
    return path


def _open(viewer):
    return viewer.window.add_plugin_dock_widget("napari-omniseg", "Synthesize")[1]


def _setup(viewer, generator):
    w = _open(viewer)
    viewer.add_image(np.full((300, 400, 3), 240, np.uint8), rgb=True, name="view",
                     scale=(0.5, 0.5), units=("µm", "µm"))
    mask = w.new_mask_layer()
    assert mask.data.shape == (300, 400) and tuple(mask.scale) == (0.5, 0.5)
    yy, xx = np.mgrid[:300, :400]
    mask.data[(yy - 150) ** 2 + (xx - 200) ** 2 < 60 ** 2] = 3  # a glomerular unit
    w.model_source.value = "file"
    w.model_file.value = generator
    w.variations.value = 2
    return w, mask


def test_paint_a_disc_and_synthesize(make_napari_viewer, qtbot, tiny_generator):
    viewer = make_napari_viewer()
    w, mask = _setup(viewer, tiny_generator)
    before = mask.data.copy()
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert not w.run_failed, w.status.value
    images = [lyr for lyr in viewer.layers if lyr.name.startswith("synthetic PAS")]
    assert len(images) == 2 and all(lyr.rgb for lyr in images)
    assert images[0].data.shape == (300, 400, 3)
    np.testing.assert_allclose(images[0].scale, mask.scale)
    assert not np.array_equal(images[0].data, images[1].data)  # two seeds, two variations
    np.testing.assert_array_equal(mask.data, before)  # the mask is only read
    w.run_button.clicked()  # again: the layers are replaced, not added
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert len([lyr for lyr in viewer.layers if lyr.name.startswith("synthetic")]) == 2


def test_anatomy_prior_draws_tissue_inside_a_painted_tubule(make_napari_viewer, qtbot,
                                                           tiny_generator):
    """With no learned model, a painted tubule gets epithelium, nuclei and a lumen: the image
    inside it is not flat, and the glass-free interstitium around it is another texture."""
    from conftest import REAL_TUBULE_LOCAL_SD_FLOOR, local_sd
    from scipy import ndimage

    viewer = make_napari_viewer()
    w, mask = _setup(viewer, tiny_generator)
    w.model_source.value = "bundled"
    w.variations.value = 1
    yy, xx = np.mgrid[:300, :400]
    tubule = (yy - 150) ** 2 + (xx - 80) ** 2 < 40 ** 2  # 40 µm across at 0.5 µm/px
    mask.data[tubule] = 2
    w.prior_only.value = True
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert not w.run_failed, w.status.value
    (image,) = [lyr for lyr in viewer.layers if lyr.name.startswith("synthetic PAS")]
    inner = ndimage.binary_erosion(tubule, iterations=4)
    for c in range(3):
        assert np.median(local_sd(image.data[..., c])[inner]) > REAL_TUBULE_LOCAL_SD_FLOOR
    # a lumen: the tubule's centre is brighter than its epithelium
    grey = image.data.astype(float).mean(-1)
    ring = tubule & ~ndimage.binary_erosion(tubule, iterations=10)
    centre = (yy - 150) ** 2 + (xx - 80) ** 2 < 8 ** 2
    assert grey[centre].mean() > grey[ring].mean() + 15


def test_stop_leaves_no_half_written_layer(make_napari_viewer, qtbot, tiny_generator):
    viewer = make_napari_viewer()
    w, _mask = _setup(viewer, tiny_generator)
    w.variations.value = 1
    w.run_button.clicked()
    w.stop_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.run_stopped
    assert not [lyr for lyr in viewer.layers if lyr.name.startswith("synthetic")]


@pytest.mark.parametrize("case, words", [
    ("rgb", "is an image, not a mask"),
    ("empty", "is empty"),
    ("values", "label values 9"),
    ("generator", "not a histology generator"),
])
def test_bad_input_is_one_sentence(make_napari_viewer, qtbot, tiny_generator, case, words):
    viewer = make_napari_viewer()
    w, mask = _setup(viewer, tiny_generator)
    if case == "rgb":
        w.mask.value = viewer.layers["view"]
    elif case == "empty":
        mask.data[:] = 0
    elif case == "values":
        mask.data[0, 0] = 9
    else:
        from conftest import tiny_renal_checkpoint

        w.model_file.value = tiny_renal_checkpoint(tiny_generator.parent / "seg.pt")
    w.run_button.clicked()
    # the mask is checked at the click; the generator is loaded (and checked) in the worker
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    assert words in w.status.value
    assert not [lyr for lyr in viewer.layers if lyr.name.startswith("synthetic")]


def test_a_typed_pixel_size_keeps_the_mask_its_image_and_the_result_together(
        make_napari_viewer, qtbot):
    """A mask painted over an RGB image without a pixel size, µm/px typed in Synthesize: the
    image, the mask and the synthetic result all end up in µm, on top of each other (the
    result once lay in a corner, a fraction of the image's size), and the view shows them."""
    viewer = make_napari_viewer()
    field = viewer.add_image(np.full((256, 320, 3), 200, np.uint8), rgb=True, name="field")
    mask = viewer.add_labels(np.zeros((256, 320), np.uint8), name="painted")
    yy, xx = np.mgrid[:256, :320]
    mask.data[(yy - 128) ** 2 + (xx - 160) ** 2 < 60 ** 2] = 2
    _, w = viewer.window.add_plugin_dock_widget("napari-omniseg", "Synthesize")
    w.mask.value = mask
    w.mpp.value = 0.5
    w.prior_only.value = True
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert not w.run_failed, w.status.value
    (result,) = [lyr for lyr in viewer.layers if lyr.name.startswith("synthetic")]
    for layer in (field, mask, result):
        np.testing.assert_allclose(layer.scale[-2:], (0.5, 0.5))
        np.testing.assert_allclose(layer.extent.world[:, -2:], field.extent.world[:, -2:])
    assert field.metadata["mpp"] == 0.5  # Segment on the image now knows its pixel size
    lo, hi = field.extent.world[:, -2:]
    np.testing.assert_allclose(viewer.camera.center[-2:], (lo + hi) / 2, rtol=0.05)
