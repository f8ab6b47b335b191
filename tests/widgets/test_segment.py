"""The Segment dock widget, opened from the Plugins menu of a real (headless) napari viewer.

The bundled model segments a simulated slide, so every mask checked here varies in space and
a widget that wrote nothing, or the wrong place, would fail.
"""

import numpy as np
import pytest

from napari_omniseg.checkpoints import load_model
from napari_omniseg.predict.slide import TileEngine, segment_slide
from napari_omniseg.simulate.renal import write_renal_slide
from napari_omniseg.widgets.segment import layer_name

pytestmark = pytest.mark.gui
PLUGIN = "napari-omniseg"


@pytest.fixture(scope="module")
def slide_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("w")
    img, _ = write_renal_slide(d / "s.ome.tif", 1024, 1536, seed=4)
    return img


@pytest.fixture(scope="module")
def reference(slide_file):
    """What segment_slide answers for PTC at 40x on the whole slide, level by level."""
    from napari_omniseg import open_slide

    # the default precision, as the widget runs (bfloat16 only where the CPU computes it)
    out = segment_slide(open_slide(slide_file), ("ptc",), 40, load_model("renal"))
    return [lv.compute() for lv in out["ptc"]]


def assert_masks_agree(got, expected) -> None:
    """Equal masks, up to a few pixels in 100,000: under bfloat16 a tile's probabilities depend
    on which tiles shared its batch (the widget fills chunks centre first, segment_slide in
    order), so a pixel at probability 0.5 may flip on some CPUs' kernels."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape
    differ = int((got != expected).sum())
    assert differ <= max(1, 2e-5 * got.size), f"{differ} pixels differ"


def _widget(viewer, tissue="ptc", mag="40", where="whole slide"):
    _, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment (kidney)")
    assert w.model_source.value == "bundled"
    w.tissue.value = tissue
    w.magnification.value = mag
    w.where.value = where
    return w


def test_segment_whole_slide_matches_segment_slide(make_napari_viewer, qtbot, slide_file,
                                                   reference):
    viewer = make_napari_viewer()
    (image,) = viewer.open(slide_file, plugin=PLUGIN)
    w = _widget(viewer)
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.status.value == "done"
    layer = viewer.layers[layer_name("ptc", 40)]
    assert layer.multiscale and len(layer.data) == len(image.data)
    np.testing.assert_allclose(layer.scale, image.scale)
    assert 0.01 < reference[0].mean() < 0.5  # capillaries here and there, not everywhere
    for k in range(len(reference)):
        assert_masks_agree(layer.data[k], reference[k])
    # what napari shows is the computed result, not the empty start: the displayed slice at
    # the level it chose, and the layer-list thumbnail (made from the coarsest level)
    layer.refresh()
    shown = np.asarray(layer._slice.image.raw)  # napari's displayed slice
    assert_masks_agree(shown, reference[layer.data_level][:shown.shape[0], :shown.shape[1]])
    assert shown.any()
    assert_masks_agree(layer._slice.thumbnail.raw, reference[-1])
    # running again replaces the layer instead of adding another
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert [lyr.name for lyr in viewer.layers].count(layer_name("ptc", 40)) == 1


def _chunks_done(reference_level0, got) -> tuple[int, int]:
    """(computed pixels that agree with the reference, tissue pixels of the reference)."""
    return int((got & reference_level0).sum()), int(reference_level0.sum())


def test_stop_keeps_what_was_computed(make_napari_viewer, qtbot, slide_file, reference):
    viewer = make_napari_viewer()
    viewer.open(slide_file, plugin=PLUGIN)
    w = _widget(viewer)
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.progress.value >= 1 or w.worker is None, timeout=120_000)
    w.stop_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.status.value.startswith("stopped")
    assert w.run_button.enabled and not w.stop_button.enabled
    assert 1 <= w.progress.value < w.progress.max
    got = np.asarray(viewer.layers[layer_name("ptc", 40)].data[0]).astype(bool)
    kept, total = _chunks_done(reference[0].astype(bool), got)
    assert not (got & ~reference[0].astype(bool)).any()  # what is there is the true answer
    assert 0 < kept < total  # part of it was computed and kept, the rest was not


def test_a_failing_run_reports_and_keeps_the_computed_tiles(make_napari_viewer, qtbot,
                                                            slide_file, reference, monkeypatch):
    import napari_omniseg.predict.slide as slide_module

    chunks_done = []
    real_fill, real_run = slide_module.fill_region, TileEngine._run

    def counting_fill(*args, progress=None, **kwargs):
        def counting(done, total, message):
            chunks_done.append(done)
            progress(done, total, message)

        return real_fill(*args, progress=counting, **kwargs)

    def fails_after_two_chunks(self, keys):
        if len(chunks_done) >= 2:
            raise RuntimeError("out of memory")
        return real_run(self, keys)

    monkeypatch.setattr(slide_module, "fill_region", counting_fill)
    monkeypatch.setattr(TileEngine, "_run", fails_after_two_chunks)
    viewer = make_napari_viewer()
    viewer.open(slide_file, plugin=PLUGIN)
    w = _widget(viewer)
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.status.value == "segmentation failed: out of memory"
    assert w.run_button.enabled and not w.stop_button.enabled
    got = np.asarray(viewer.layers[layer_name("ptc", 40)].data[0]).astype(bool)
    kept, total = _chunks_done(reference[0].astype(bool), got)
    assert not (got & ~reference[0].astype(bool)).any() and 0 < kept < total


def test_inside_shapes_segments_only_the_drawn_box(make_napari_viewer, qtbot, slide_file,
                                                   reference):
    viewer = make_napari_viewer()
    (image,) = viewer.open(slide_file, plugin=PLUGIN)
    mpp = image.scale[-1]
    y0, y1, x0, x1 = 256, 640, 384, 1024  # level-0 pixels
    viewer.add_shapes([np.array([[y0, x0], [y1, x1]]) * mpp], shape_type="rectangle",
                      name="regions", scale=(1, 1))
    w = _widget(viewer, where="inside shapes")
    assert w.shapes.value.name == "regions"
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.status.value == "done"
    got = np.asarray(viewer.layers[layer_name("ptc", 40)].data[0])
    inside = (slice(y0, y1), slice(x0, x1))
    assert_masks_agree(got[inside], reference[0][inside])
    assert got[inside].any()
    outside = got.copy()
    outside[inside] = 0
    assert not outside.any()


def test_missing_model_or_pixel_size_is_explained(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((256, 256, 3), np.uint8), rgb=True, name="plain")
    w = _widget(viewer)
    w.start()
    assert "no pixel size" in w.status.value and w.worker is None
    w.mpp.value = 0.25
    w.model_source.value = "file"
    w.model_file.value = tmp_path / "nope.pt"
    w.start()
    assert "checkpoint file" in w.status.value and w.worker is None


def test_plain_rgb_layer_in_current_view(make_napari_viewer, qtbot, slide_file, reference):
    viewer = make_napari_viewer()
    rgb = np.asarray(viewer.open(slide_file, plugin=PLUGIN)[0].data[0][:512, :512])
    viewer.layers.clear()
    viewer.add_image(rgb, rgb=True, name="crop")
    viewer.reset_view()
    w = _widget(viewer, where="current view")
    w.mpp.value = 0.25
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.status.value == "done"
    got = np.asarray(viewer.layers[layer_name("ptc", 40)].data)
    assert got.shape == (512, 512)
    # the crop seen alone: the same capillaries, give or take the crop's own borders
    ref = reference[0][:512, :512].astype(bool)
    got = got.astype(bool)
    assert ref.any() and 2 * (got & ref).sum() / (got.sum() + ref.sum()) > 0.9


def test_normalising_the_stain_matches_segment_slide_with_it(make_napari_viewer, qtbot,
                                                              slide_file):
    from napari_omniseg import open_slide

    viewer = make_napari_viewer()
    viewer.open(slide_file, plugin=PLUGIN)
    w = _widget(viewer)
    w.normalise.value = "macenko"
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.status.value == "done", w.status.value
    expected = segment_slide(open_slide(slide_file), ("ptc",), 40, load_model("renal"),
                             normalise_stain="macenko")["ptc"][0].compute()
    got = np.asarray(viewer.layers[layer_name("ptc", 40)].data[0])
    assert_masks_agree(got, expected)


def test_an_unfamiliar_slide_is_told_in_one_sentence(make_napari_viewer, qtbot, slide_file,
                                                     tmp_path):
    from conftest import unfamiliar_renal_checkpoint

    viewer = make_napari_viewer()
    viewer.open(str(slide_file), plugin=PLUGIN)
    w = _widget(viewer, tissue="ptc", mag="40", where="whole slide")
    w.model_source.value = "file"
    w.model_file.value = unfamiliar_renal_checkpoint(tmp_path / "odd.pt")
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.status.value.startswith("done, but this slide looks unlike what odd.pt was "
                                     "trained on"), w.status.value
    assert layer_name("ptc", 40) in viewer.layers  # the masks are still there
    w.model_source.value = "bundled"
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.status.value == "done"  # the bundled model knows simulated slides


def test_a_pixel_size_typed_again_keeps_the_view_the_person_chose(make_napari_viewer):
    """Typed once, the view follows the image to its size in µm; Segment run again with the
    same µm/px must not throw away the person's zoom (that would turn "current view" into the
    whole image)."""
    from napari_omniseg.widgets.layers import give_pixel_size

    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((400, 600, 3), np.uint8), rgb=True, name="field")
    give_pixel_size(viewer, layer, 0.5)
    cam = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    cam.zoom, cam.center = cam.zoom * 4, (0, 50.0, 60.0)
    zoom, center = cam.zoom, tuple(cam.center)
    give_pixel_size(viewer, layer, 0.5)
    assert cam.zoom == pytest.approx(zoom) and tuple(cam.center) == pytest.approx(center)
    give_pixel_size(viewer, layer, 0.25)  # a new size: the view follows again
    np.testing.assert_allclose(layer.scale[-2:], (0.25, 0.25))
