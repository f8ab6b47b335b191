"""Every npe2 contribution of the installed manifest, taken the way a person takes it.

Widgets open from the Plugins menu (``viewer.window.add_plugin_dock_widget``) and run once with
their defaults on the matching sample; samples open through ``viewer.open_sample``; the reader
through ``viewer.open`` on a file of each pattern it claims; writers (none yet) through
``viewer.layers.save``. The lists come from the manifest, so a contribution added later is
tested here at once, and fails until it has a run, a file maker or a save case below.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import MPP, rgb_image, write_ome_subifd, write_png, write_svs

pytestmark = pytest.mark.gui


def _csv_rows(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


PLUGIN = "napari-omniseg"


def _manifest():
    import npe2

    return npe2.PluginManifest.from_distribution(PLUGIN)


MANIFEST = _manifest()
WIDGETS = [w.display_name for w in MANIFEST.contributions.widgets or []]
SAMPLES = [s.key for s in MANIFEST.contributions.sample_data or []]
PATTERNS = [p for r in MANIFEST.contributions.readers or [] for p in r.filename_patterns]
WRITERS = [w.display_name or w.command for w in MANIFEST.contributions.writers or []]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2 * (a & b).sum() / max(1, a.sum() + b.sum())


def _wait(qtbot, widget, seconds: float = 300) -> None:
    qtbot.waitUntil(lambda: widget.worker is None, timeout=int(seconds * 1000))


# -- widgets: one run of each with its defaults on the matching sample -------------------------


def _renal_truth(stain: str, level: int) -> dict[str, np.ndarray]:
    import tifffile

    from napari_omniseg import vocab
    from napari_omniseg._sample_data import renal_sample_paths

    with tifffile.TiffFile(renal_sample_paths(stain)[1]) as tif:
        masks = tif.series[0].levels[level].asarray()
    return {t.code: masks[t.task_id] > 0 for t in vocab.TISSUES}


def run_segment_kidney(viewer, widget, qtbot, tmp_path) -> None:
    from napari_omniseg import vocab
    from napari_omniseg.widgets.segment import layer_name

    viewer.open_sample(PLUGIN, "renal_pas")
    viewer.reset_view()  # the default "current view" is then the whole biopsy
    assert widget.image.value.name == viewer.layers[0].name
    widget.run_button.clicked()
    _wait(qtbot, widget)
    assert widget.status.value == "done"
    level = 2  # compare at 10x: every tissue's answer, without reading 40x masks whole
    truth = _renal_truth("pas", level)
    for t in vocab.TISSUES:
        layer = viewer.layers[layer_name(t.code, t.optimal_magnification)]
        got = np.asarray(layer.data[level]) > 0
        assert got.shape == truth[t.code].shape
        if truth[t.code].any():
            assert dice(got, truth[t.code]) > 0.85, t.code
        else:  # the PAS sample has no vessel: false positives stay few
            assert got.mean() < 0.02, t.code


def run_segment_fetal(viewer, widget, qtbot, tmp_path) -> None:
    from napari_omniseg import vocab

    viewer.open_sample(PLUGIN, "fetal_mri")
    truth = np.asarray(viewer.layers["ground truth (simulated)"].data)
    widget.run_button.clicked()
    # five regions, each with flip averaging, in float32 on a CPU without bfloat16 hardware:
    # about 2.5 minutes on two cores, more on a loaded machine
    _wait(qtbot, widget, seconds=900)
    assert widget.status.value == "done"
    ids = {r.code: r.region_id + 1 for r in vocab.FETAL_REGIONS}
    # the sample's truth is one label volume painted outer to inner: brain and eyes are whole
    for code in ("brain", "eyes"):
        layer = viewer.layers[vocab.fetal_region(code).name]
        assert layer.data.shape == truth.shape
        assert dice(layer.data, truth == ids[code]) > 0.7, code


def run_finetune(viewer, widget, qtbot, tmp_path) -> None:
    import torch

    from napari_omniseg.checkpoints import load_model
    from napari_omniseg.widgets.model_in_use import MODELS_IN_USE

    viewer.open_sample(PLUGIN, "renal_pas")
    truth = _renal_truth("pas", 0)["ptc"]
    painted = np.zeros(truth.shape, np.uint8)
    box = (slice(768, 1536), slice(2048, 3072))
    painted[box] = truth[box]  # PTC painted inside one field of view
    image = viewer.layers[0]
    labels = viewer.add_labels(painted, name="my PTC", scale=image.scale, units=image.units)
    widget.add_row()  # the new row picks the newest labels layer
    row = widget.rows[-1]
    assert row.labels_layer.value.name == labels.name
    row.tissue.value = "ptc"
    for extra in list(widget.rows)[:-1]:
        widget.rows.remove(extra)
    widget.minutes.value = widget.minutes.min  # the shortest run the widget allows
    widget.save_to.value = str(tmp_path / "ft.pt")
    widget.run_button.clicked()
    # the default "painted pixels only" knows no background: the person is warned first
    assert widget.worker is None and "no known background" in widget.status.value
    widget.run_button.clicked()  # and trains as it is when clicking again
    _wait(qtbot, widget)
    assert widget.status.value.startswith("done"), widget.status.value
    assert np.array_equal(labels.data, painted)  # layers are only read
    trained = load_model(tmp_path / "ft.pt")
    bundled = load_model("renal")
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(),
                                                     bundled.state_dict().values()))
    widget.use_button.clicked()
    assert MODELS_IN_USE.model("renal") is not None
    assert MODELS_IN_USE.name("renal").startswith("ft.pt")


def run_quantify(viewer, widget, qtbot, tmp_path) -> None:
    from scipy import ndimage

    viewer.open_sample(PLUGIN, "renal_pas")  # the slide and its ground-truth labels layer
    assert [lyr.name for lyr in widget.masks.value] == ["ground truth (simulated)"]
    widget.run_button.clicked()
    _wait(qtbot, widget)
    assert "measured" in widget.status.value, widget.status.value
    found = {s.cls.name: s for s in widget.summaries}
    truth = np.asarray(viewer.layers["ground truth (simulated)"].data[0])
    labels, _n = ndimage.label(truth == 6)
    from napari_omniseg import vocab

    assert widget.min_area_um2() is None  # the default: each tissue's own minimum size
    big = (np.bincount(labels.ravel())[1:] * 0.25 ** 2 >= vocab.MIN_OBJECT_UM2["ptc"]).sum()
    assert found["PTC"].count == big and found["PTC"].density > 0
    assert widget.table.rowCount() == len(found)


def run_synthesize(viewer, widget, qtbot, tmp_path) -> None:
    viewer.open_sample(PLUGIN, "renal_pas")
    slide = viewer.layers[0]
    crop = np.asarray(slide.data[0][:512, :512])
    field = viewer.add_image(crop, rgb=True, name="field of view", scale=slide.scale,
                             units=slide.units)
    viewer.layers.selection.active = field
    mask = widget.new_mask_layer()  # over the selected image, in its µm
    assert mask.data.shape == (512, 512)
    yy, xx = np.mgrid[:512, :512]
    mask.data[(yy - 256) ** 2 + (xx - 256) ** 2 < 100 ** 2] = 3  # a glomerular unit
    mask.data[(yy - 256) ** 2 + (xx - 256) ** 2 < 60 ** 2] = 4  # its tuft
    widget.run_button.clicked()  # the bundled generator, at 40x from the mask's µm
    _wait(qtbot, widget)
    assert widget.status.value.startswith("added"), widget.status.value
    out = viewer.layers["synthetic PAS (seed 0)"]
    assert out.rgb and out.data.shape == (512, 512, 3)
    np.testing.assert_allclose(out.scale, mask.scale)


def run_correct_kidney(viewer, widget, qtbot, tmp_path) -> None:
    from napari_omniseg.widgets.correct import PAINT_BACKGROUND
    from napari_omniseg.widgets.segment import layer_name

    viewer.open_sample(PLUGIN, "renal_pas")
    viewer.reset_view()
    _, seg = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment (kidney)")
    seg.tissue.value, seg.magnification.value = "pt", "10"
    seg.run_button.clicked()
    _wait(qtbot, seg)
    mask = viewer.layers[layer_name("pt", 10)]
    widget.mask.reset_choices()
    assert widget.mask.value is mask  # the one tissue layer is the default
    strokes = widget.add_strokes_layer()
    level = 2  # 10x of the 40x sample: the strokes layer's own grid
    found = np.asarray(mask.data[level])[:strokes.data.shape[0], :strokes.data.shape[1]] > 0
    ys, xs = np.nonzero(found)
    data = np.zeros(strokes.data.shape, np.uint8)
    data[ys[0]:ys[0] + 8, xs[0]:xs[0] + 8] = PAINT_BACKGROUND  # "this PT is not PT"
    strokes.data = data
    widget.run_button.clicked()
    _wait(qtbot, widget)
    assert widget.status.value.startswith("learned from"), widget.status.value
    after = np.asarray(mask.data[level])[:strokes.data.shape[0], :strokes.data.shape[1]] > 0
    assert after[data > 0].mean() < found[data > 0].mean()


def run_block_labels(viewer, widget, qtbot, tmp_path) -> None:
    viewer.open_sample(PLUGIN, "renal_pas")
    truth = _renal_truth("pas", 0)["ptc"] > 0
    widget.image.value = viewer.layers[0]
    widget.tissue.value = "ptc"
    blocks = widget.make_block_layer()  # the default block size divides the sample
    b = widget.block_size.value
    rows, cols = slice(768 // b, 1536 // b), slice(2048 // b, 3072 // b)
    box = truth[rows.start * b:rows.stop * b, cols.start * b:cols.stop * b]
    frac = box.reshape(box.shape[0] // b, b, box.shape[1] // b, b).mean(axis=(1, 3))
    painted_blocks = blocks.data.copy()
    painted_blocks[rows, cols] = np.where(frac == 0, 1, np.where(frac < 0.1, 2, 3))
    blocks.data = painted_blocks
    examples = np.zeros(truth.shape, np.uint8)
    examples[rows.start * b:rows.start * b + 2 * b, cols.start * b:cols.stop * b] = truth[
        rows.start * b:rows.start * b + 2 * b, cols.start * b:cols.stop * b]
    widget.painted.value = viewer.add_labels(examples, name="painted blocks",
                                             scale=viewer.layers[0].scale)
    widget.estimate_button.clicked()
    assert "estimated from" in widget.status.value, widget.status.value
    widget.minutes.value = widget.minutes.min
    widget.save_to.value = str(tmp_path / "blocks.pt")
    widget.run_button.clicked()
    _wait(qtbot, widget)
    assert widget.status.value.startswith("done"), widget.status.value
    assert np.array_equal(blocks.data, painted_blocks)  # layers are only read
    assert "ptc class" in widget.report.value


WIDGET_RUNS = {
    "Block labels": run_block_labels,
    "Segment (kidney)": run_segment_kidney,
    "Correct (kidney)": run_correct_kidney,
    "Segment (fetal MRI)": run_segment_fetal,
    "Fine-tune": run_finetune,
    "Quantify": run_quantify,
    "Synthesize": run_synthesize,
}


@pytest.fixture
def models_in_use_restored():
    from napari_omniseg.widgets.model_in_use import MODELS_IN_USE

    saved = dict(MODELS_IN_USE._models)
    yield
    MODELS_IN_USE._models = saved


@pytest.mark.parametrize("name", WIDGETS)
def test_widget_opens_from_the_plugins_menu(make_napari_viewer, name):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    assert viewer.window.dock_widgets[f"{name} ({PLUGIN})"] is widget
    # the widget acts on this viewer (napari hands plugins a proxy of it)
    assert getattr(widget.viewer, "__wrapped__", widget.viewer) is viewer


def test_the_plugins_menu_lists_and_opens_every_widget(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    (submenu,) = [a.menu() for a in viewer.window.plugins_menu.actions()
                  if a.menu() is not None and a.text() == PLUGIN]
    entries = {a.text(): a for a in submenu.actions()}
    assert sorted(entries) == sorted(WIDGETS)
    for name in WIDGETS:
        entries[name].trigger()  # the click
        title = f"{name} ({PLUGIN})"
        qtbot.waitUntil(lambda title=title: title in viewer.window.dock_widgets, timeout=5000)


@pytest.mark.parametrize("name", WIDGETS)
def test_a_closed_viewers_widget_ignores_later_model_changes(make_napari_viewer, name,
                                                             models_in_use_restored):
    from qtpy.QtCore import QCoreApplication, QEvent

    from napari_omniseg.tasks import TASKS
    from napari_omniseg.widgets.model_in_use import MODELS_IN_USE

    viewer = make_napari_viewer()
    viewer.window.add_plugin_dock_widget(PLUGIN, name)
    viewer.close()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    for task in TASKS:
        MODELS_IN_USE.set(task, object(), "another model")  # must not reach the deleted widget


@pytest.mark.slow
@pytest.mark.parametrize("name", WIDGETS)
def test_widget_runs_with_its_defaults_on_the_sample(make_napari_viewer, qtbot, tmp_path, name,
                                                    models_in_use_restored):
    assert name in WIDGET_RUNS, f"no run of the '{name}' widget is tested: add one above"
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    WIDGET_RUNS[name](viewer, widget, qtbot, tmp_path)


# -- samples -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", SAMPLES)
def test_sample_opens_from_the_file_menu(make_napari_viewer, key):
    from napari.layers import Image, Labels

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, key)
    image, truth = viewer.layers
    assert isinstance(image, Image) and isinstance(truth, Labels)
    data = image.data[-1] if image.multiscale else image.data
    assert float(np.asarray(data).std()) > 1  # a picture, not a blank
    labels = np.asarray(truth.data[-1] if truth.multiscale else truth.data)
    assert len(np.unique(labels)) >= 4  # several structures drawn
    np.testing.assert_allclose(image.extent.world, truth.extent.world, rtol=0.01, atol=1.5)


# -- the reader: one file of every pattern the manifest claims --------------------------------


def _plain_tif(path: Path) -> tuple[Path, np.ndarray, float]:
    import tifffile

    img = rgb_image(512, 768)
    tifffile.imwrite(path, img, photometric="rgb", resolution=(1e4 / 0.5, 1e4 / 0.5),
                     resolutionunit="CENTIMETER")
    return path, img, 0.5


def _ome_tiff(path: Path) -> tuple[Path, np.ndarray, float]:
    img = rgb_image(512, 768)
    return write_ome_subifd(path, img, levels=2), img, MPP


def _svs(path: Path) -> tuple[Path, np.ndarray, float]:
    img = rgb_image(1024, 1024)
    return write_svs(path, img), img, 0.2525


def _png(path: Path) -> tuple[Path, np.ndarray, float]:
    img = rgb_image(512, 768)
    return write_png(path, img), img, MPP


def _jpeg(path: Path) -> tuple[Path, np.ndarray, float]:
    from PIL import Image

    img = rgb_image(512, 768)
    # JFIF stores dots per inch in 16 bits: 0.5 um/px (20x) fits, 0.25 um/px would wrap
    Image.fromarray(img).save(path, quality=95, dpi=(25400 / 0.5, 25400 / 0.5))
    return path, img, 0.5


def _nifti(path: Path) -> tuple[Path, np.ndarray, tuple]:
    from napari_omniseg.io.export import save_nifti

    vol = np.random.default_rng(0).random((12, 20, 24)).astype(np.float32)
    return save_nifti(vol, np.diag([1.0, 2.0, 3.0, 1.0]), path), vol, (3.0, 2.0, 1.0)


FILE_MAKERS = {
    "*.tif": ("plain.tif", _plain_tif),
    "*.tiff": ("pyramid.ome.tiff", _ome_tiff),
    "*.svs": ("aperio.svs", _svs),
    "*.png": ("scan.png", _png),
    "*.jpg": ("scan.jpg", _jpeg),
    "*.jpeg": ("scan.jpeg", _jpeg),
    "*.nii": ("volume.nii", _nifti),
    "*.nii.gz": ("volume.nii.gz", _nifti),
}


@pytest.mark.parametrize("pattern", PATTERNS)
def test_reader_opens_every_claimed_format(make_napari_viewer, tmp_path, pattern):
    assert pattern in FILE_MAKERS, f"no file of the pattern {pattern} is opened: add a maker"
    name, make = FILE_MAKERS[pattern]
    path, data, size = make(tmp_path / name)
    viewer = make_napari_viewer()
    # File > Open offers every reader that claims the file; the person picks this plugin's
    from napari.plugins._npe2 import get_readers

    assert PLUGIN in get_readers(str(path))
    layers = viewer.open(path, plugin=PLUGIN)
    assert len(layers) == 1
    layer = layers[0]
    if data.ndim == 3 and data.shape[-1] == 3:  # a slide
        assert layer.rgb
        level0 = np.asarray(layer.data[0] if layer.multiscale else layer.data)[..., :3]
        assert level0.shape == data.shape
        tolerance = 6 if pattern in ("*.jpg", "*.jpeg") else 0
        assert np.abs(level0.astype(int) - data).mean() <= tolerance
        np.testing.assert_allclose(layer.scale, (size, size), rtol=1e-3)
    else:
        np.testing.assert_allclose(np.asarray(layer.data), data, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(layer.scale, size)


# -- writers -----------------------------------------------------------------------------------

def _mask_layer(viewer):
    """A PTC mask as the Segment widget leaves it: 0/1, µm scale, the tissue in metadata."""
    data = np.zeros((600, 700), np.uint8)
    data[100:180, 200:260] = 1
    data[300:420, 400:430] = 1
    data[350:360, 410:420] = 0  # a hole
    return viewer.add_labels(data, name="PTC 40x", scale=(0.25, 0.25), units=("µm", "µm"),
                             metadata={"tissue": "ptc"})


def _check_geojson(path, layer, viewer):
    import json

    from rasterio import features
    from shapely.geometry import shape

    fc = json.loads(Path(path).read_text())
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 2
    assert {f["properties"]["classification"]["name"] for f in fc["features"]} == {"PTC"}
    back = features.rasterize([shape(f["geometry"]) for f in fc["features"]],
                              out_shape=layer.data.shape)
    np.testing.assert_array_equal(back, layer.data)


def _check_ome_tiff(path, layer, viewer):
    back = viewer.open(path, plugin=PLUGIN)[0]
    np.testing.assert_array_equal(np.asarray(back.data[0] if back.multiscale else back.data),
                                  layer.data)
    np.testing.assert_allclose(back.scale, layer.scale)
    assert back.metadata["tissue"] == "ptc"


def _check_csv(path, layer, viewer):

    rows = _csv_rows(path)
    assert sorted(float(r["Area µm^2"]) for r in rows) == [
        (120 * 30 - 100) * 0.0625, 80 * 60 * 0.0625]


#: display name -> (file name, check of the written file)
WRITER_CASES: dict = {
    "QuPath GeoJSON": ("mask.geojson", _check_geojson),
    "OME-TIFF labels pyramid": ("mask.ome.tif", _check_ome_tiff),
    "CSV of objects": ("mask.csv", _check_csv),
}


@pytest.mark.parametrize("name", WRITERS)
def test_writer_saves_through_napari(make_napari_viewer, tmp_path, name):
    assert name in WRITER_CASES, f"the writer '{name}' is not tested: add a save case"
    filename, check = WRITER_CASES[name]
    viewer = make_napari_viewer()
    layer = _mask_layer(viewer)
    written = viewer.layers.save(str(tmp_path / filename), selected=False, plugin=PLUGIN)
    assert written and Path(written[0]).is_file()
    check(written[0], layer, viewer)


def test_layer_save_picks_the_writer_by_extension(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layer = _mask_layer(viewer)
    layer.save(str(tmp_path / "one.geojson"), plugin=PLUGIN)
    _check_geojson(tmp_path / "one.geojson", layer, viewer)
