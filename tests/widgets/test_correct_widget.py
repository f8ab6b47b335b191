"""The Correct (kidney) dock widget, opened from the Plugins menu: segment, paint strokes,
Learn, the layer changes where painted; Reset gives Segment's mask back; a stop keeps it."""

import numpy as np
import pytest

from napari_omniseg.simulate.renal import write_renal_slide
from napari_omniseg.widgets.correct import PAINT_BACKGROUND, PAINT_TISSUE
from napari_omniseg.widgets.segment import layer_name

pytestmark = pytest.mark.gui
PLUGIN = "napari-omniseg"


@pytest.fixture(scope="module")
def slide_file(tmp_path_factory):
    img, _ = write_renal_slide(tmp_path_factory.mktemp("c") / "s.ome.tif", 1024, 1024, seed=3)
    return img


def _segmented(viewer, qtbot, slide_file):
    (image,) = viewer.open(slide_file, plugin=PLUGIN)
    _, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment (kidney)")
    seg.tissue.value, seg.magnification.value, seg.where.value = "pt", "10", "whole slide"
    seg.run_button.clicked()
    qtbot.waitUntil(lambda: seg.worker is None, timeout=120_000)
    mask = viewer.layers[layer_name("pt", 10)]
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Correct (kidney)")
    w.mask.reset_choices()
    w.mask.value = mask
    return image, mask, w


def test_strokes_change_the_mask_where_painted_and_reset_restores(make_napari_viewer, qtbot,
                                                                   slide_file):
    viewer = make_napari_viewer()
    image, mask, w = _segmented(viewer, qtbot, slide_file)
    before = np.asarray(mask.data[0]).copy()
    viewer.reset_view()
    strokes = w.add_strokes_layer()
    assert strokes.metadata["strokes_for"] == mask.name
    # the strokes layer lies over the image at the working magnification (10x of a 40x slide)
    np.testing.assert_allclose(strokes.scale, np.asarray(image.scale[-2:]) * 4)
    h, w_ = strokes.data.shape
    assert (h, w_) == (256, 256)
    # a wide "not tissue" stroke where PT was found, a "tissue" stroke where it was not
    found = before[::4, ::4][:h, :w_] > 0
    ys, xs = np.nonzero(found)
    assert len(ys), "the bundled model finds PT on the simulated slide"
    data = np.zeros((h, w_), np.uint8)
    data[max(0, ys[0] - 6):ys[0] + 6, max(0, xs[0] - 6):xs[0] + 6] = PAINT_BACKGROUND
    ys, xs = np.nonzero(~found)
    data[max(0, ys[0] - 3):ys[0] + 3, max(0, xs[0] - 3):xs[0] + 3] = PAINT_TISSUE
    strokes.data = data
    in_use_before = w.correctors.get(mask.name)
    w.run_button.clicked()
    assert w.worker is not None, w.status.value  # the click started the update
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert not w.run_failed, w.status.value
    after = np.asarray(mask.data[0])
    painted_bg = np.kron(data == PAINT_BACKGROUND, np.ones((4, 4), bool))
    assert after[:1024, :1024][painted_bg].mean() < before[:1024, :1024][painted_bg].mean()
    assert "learned from" in w.status.value and in_use_before is None
    assert w.use_button.enabled and w.save_button.enabled
    # Reset: Segment's mask again, strokes gone
    w.reset_button.clicked()
    np.testing.assert_array_equal(np.asarray(mask.data[0]), before)
    assert not [lyr for lyr in viewer.layers if "strokes_for" in lyr.metadata]


def test_learn_without_strokes_is_one_sentence(make_napari_viewer, qtbot, slide_file):
    viewer = make_napari_viewer()
    _, _, w = _segmented(viewer, qtbot, slide_file)
    w.run_button.clicked()
    assert "add a strokes layer first" in w.status.value
    viewer.reset_view()
    w.add_strokes_layer()
    w.run_button.clicked()
    assert "the strokes layers are empty" in w.status.value and w.worker is None


def test_a_stop_mid_update_keeps_the_previous_mask(make_napari_viewer, qtbot, slide_file):
    viewer = make_napari_viewer()
    _, mask, w = _segmented(viewer, qtbot, slide_file)
    before = np.asarray(mask.data[0]).copy()
    viewer.reset_view()
    strokes = w.add_strokes_layer()
    data = np.zeros(strokes.data.shape, np.uint8)
    data[:40, :40] = PAINT_BACKGROUND
    strokes.data = data
    w.run_button.clicked()
    w.stop_button.clicked()  # before the features are ready
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.run_stopped
    np.testing.assert_array_equal(np.asarray(mask.data[0]), before)


def test_a_failed_update_is_one_sentence_and_the_model_in_use_stays(make_napari_viewer, qtbot,
                                                                     slide_file, monkeypatch):
    from napari_omniseg.train.correct import Corrector
    from napari_omniseg.widgets.model_in_use import MODELS_IN_USE

    def broken(self, should_stop=None):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Corrector, "update", broken)
    viewer = make_napari_viewer()
    _, mask, w = _segmented(viewer, qtbot, slide_file)
    before = np.asarray(mask.data[0]).copy()
    in_use = MODELS_IN_USE.model("renal")
    viewer.reset_view()
    strokes = w.add_strokes_layer()
    data = np.zeros(strokes.data.shape, np.uint8)
    data[100:110, 100:110] = PAINT_TISSUE
    strokes.data = data
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.run_failed and w.status.value == "correction failed: out of memory"
    np.testing.assert_array_equal(np.asarray(mask.data[0]), before)
    assert MODELS_IN_USE.model("renal") is in_use and not w.use_button.enabled


def test_a_view_of_glass_is_told(make_napari_viewer, qtbot, tmp_path):
    from conftest import write_png

    path = write_png(tmp_path / "glass.png", np.full((1024, 1024, 3), 245, np.uint8), mpp=0.25)
    viewer = make_napari_viewer()
    _, _, w = _segmented(viewer, qtbot, path)
    viewer.reset_view()
    strokes = w.add_strokes_layer()
    data = np.zeros(strokes.data.shape, np.uint8)
    data[10:20, 10:20] = PAINT_TISSUE
    strokes.data = data
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert "shows no tissue" in w.status.value
