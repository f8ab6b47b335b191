"""The Segment dock widget in a real (headless) napari viewer."""

import numpy as np
import pytest

from conftest import tiny_renal_checkpoint
from napari_omniseg.predict.slide import segment_slide
from napari_omniseg.simulate.renal import write_renal_slide
from napari_omniseg.widgets.segment import SegmentWidget, layer_name

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("w")
    ckpt = tiny_renal_checkpoint(d / "tiny.pt")
    img, _ = write_renal_slide(d / "s.ome.tif", 1024, 1536, seed=4)
    return ckpt, img


def _widget(viewer, ckpt, tissue="ptc", mag="40", where="whole slide"):
    w = SegmentWidget(viewer)
    w.tissue.value = tissue
    w.magnification.value = mag
    w.model_source.value = "file"
    w.model_file.value = ckpt
    w.where.value = where
    return w


def test_segment_whole_slide_matches_segment_slide(make_napari_viewer, qtbot, files):
    ckpt, img = files
    viewer = make_napari_viewer()
    (image,) = viewer.open(img, plugin="napari-omniseg")
    w = _widget(viewer, ckpt)
    viewer.window.add_dock_widget(w)
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.status.value == "done"
    layer = viewer.layers[layer_name("ptc", 40)]
    assert layer.multiscale and len(layer.data) == len(image.data)
    np.testing.assert_allclose(layer.scale, image.scale)
    ref = segment_slide(image.metadata["omniseg_slide"], ("ptc",), 40, w._model(), bf16=True)
    for k in (0, 2):
        np.testing.assert_array_equal(np.asarray(layer.data[k]), ref["ptc"][k].compute())
    # what napari shows at the coarsest level is the computed result, not the empty start
    viewer.reset_view()
    coarse = np.asarray(layer.data[-1])
    shown = np.asarray(layer._slice.image.raw)  # napari's displayed slice
    if layer.data_level == len(layer.data) - 1:
        assert shown.sum() == coarse.sum()
    # running again replaces the layer instead of adding another
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert [lyr.name for lyr in viewer.layers].count(layer_name("ptc", 40)) == 1


def test_stop_keeps_what_was_computed(make_napari_viewer, qtbot, files):
    ckpt, img = files
    viewer = make_napari_viewer()
    viewer.open(img, plugin="napari-omniseg")
    w = _widget(viewer, ckpt, tissue="all", mag="auto")
    w.run_button.clicked()
    w.stop_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.status.value.startswith("stopped")
    assert w.run_button.enabled and not w.stop_button.enabled
    assert w.progress.value < w.progress.max


def test_missing_model_or_pixel_size_is_explained(make_napari_viewer, files):
    ckpt, img = files
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((256, 256, 3), np.uint8), rgb=True, name="plain")
    w = _widget(viewer, ckpt)
    w.start()
    assert "no pixel size" in w.status.value and w.worker is None
    w.mpp.value = 0.25
    w.model_file.value = ckpt.parent / "nope.pt"
    w.start()
    assert "checkpoint file" in w.status.value


def test_plain_rgb_layer_in_current_view(make_napari_viewer, qtbot, files):
    ckpt, img = files
    viewer = make_napari_viewer()
    rgb = np.asarray(viewer.open(img, plugin="napari-omniseg")[0].data[0][:512, :512])
    viewer.layers.clear()
    viewer.add_image(rgb, rgb=True, name="crop")
    viewer.reset_view()
    w = _widget(viewer, ckpt, where="current view")
    w.mpp.value = 0.25
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.status.value == "done"
    assert viewer.layers[layer_name("ptc", 40)].data.shape == (512, 512)
