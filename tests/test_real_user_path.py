"""A real slide, start to finish, the way a pathologist takes it in napari.

A 1024 x 1024 RGB PNG at 20x (a field of the PAS sample at 0.5 µm/px, the size of a real
biopsy tile) is opened with ``viewer.open``; Segment (kidney) opens from the Plugins menu and
runs with its defaults; every output layer is saved through napari's own File > Save Selected
Layers handler (its file dialog answered) as QuPath GeoJSON and OME-TIFF; both files are read
back; Quantify measures the layers. Once with the pixel size in the file, once typed into the
widget (asked once: Fine-tune and Quantify then find it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.gui, pytest.mark.slow]
PLUGIN = "napari-omniseg"
MPP_20X = 0.5


def field_png(path: Path, mpp: float | None) -> Path:
    """A 1024 x 1024 field of the PAS sample at 20x, as a PNG (with its pixel size or not)."""
    from PIL import Image

    from napari_omniseg import open_slide
    from napari_omniseg._sample_data import renal_sample_paths

    slide = open_slide(renal_sample_paths("pas")[0])
    rgb = np.asarray(slide.levels[1][200:1224, 500:1524])  # level 1: 0.5 µm/px
    slide.close()
    kw = {"dpi": (25400 / mpp, 25400 / mpp)} if mpp else {}
    Image.fromarray(rgb).save(path, **kw)
    return path


def save_selected(viewer, layer, path: Path, writer: str, monkeypatch) -> None:
    """File > Save Selected Layers on ``layer``, the dialog answered with ``path`` and the
    filter of the plugin's ``writer`` (its display name)."""
    from napari._qt import qt_viewer
    from napari.plugins import _npe2

    viewer.layers.selection.active = layer
    ext_str, _ = _npe2.file_extensions_string_for_layers([layer])
    (chosen,) = [f for f in ext_str.split(";;") if writer in f]
    monkeypatch.setattr(qt_viewer.QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(path), chosen))
    viewer.window._qt_viewer._save_layers_dialog(selected=True)


def rasterized(path: Path, shape: tuple[int, int]) -> np.ndarray:
    from rasterio import features
    from shapely.geometry import shape as geometry

    fc = json.loads(path.read_text())
    shapes = [geometry(f["geometry"]) for f in fc["features"]]
    if not shapes:
        return np.zeros(shape, np.uint8)
    return features.rasterize(shapes, out_shape=shape)


@pytest.mark.parametrize("pixel_size", ["in the file", "typed"])
def test_open_segment_save_reopen_quantify(make_napari_viewer, qtbot, tmp_path, monkeypatch,
                                           pixel_size):
    from napari.layers import Labels

    from napari_omniseg import vocab

    typed = pixel_size == "typed"
    png = field_png(tmp_path / "biopsy.png", None if typed else MPP_20X)
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(png), plugin=PLUGIN)
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment (kidney)")
    segment.where.value = "whole slide"
    if typed:
        segment.mpp.value = MPP_20X
    else:
        segment.tissue.value = "cap"  # one tissue here; every tissue in the typed run
    segment.run_button.clicked()
    qtbot.waitUntil(lambda: segment.worker is None, timeout=300_000)
    assert segment.status.value == "done", segment.status.value

    # the pixel size is the image layer's, and every output layer carries it
    np.testing.assert_allclose(image.scale, (MPP_20X, MPP_20X))
    # and the view follows the image to its size in µm (it showed a speck in a corner)
    lo, hi = image.extent.world[:, -2:]
    np.testing.assert_allclose(viewer.camera.center[-2:], (lo + hi) / 2, rtol=0.05)
    assert image.metadata["mpp"] == pytest.approx(MPP_20X)
    outputs = [lyr for lyr in viewer.layers if isinstance(lyr, Labels)]
    assert len(outputs) == (len(vocab.TISSUES) if typed else 1)
    for lyr in outputs:
        assert lyr.multiscale
        np.testing.assert_allclose(lyr.scale, (MPP_20X, MPP_20X))
        assert lyr.metadata["mpp"] == pytest.approx(MPP_20X)
    cap = viewer.layers["CAP @ 5x"]
    assert np.asarray(cap.data[0]).any()  # the sample field has a glomerulus

    for lyr in outputs:
        stem = lyr.name.replace(" @ ", "_").replace(" ", "")
        level0 = np.asarray(lyr.data[0])
        save_selected(viewer, lyr, tmp_path / f"{stem}.geojson", "QuPath GeoJSON", monkeypatch)
        save_selected(viewer, lyr, tmp_path / f"{stem}.ome.tif", "OME-TIFF", monkeypatch)
        geojson, tiff = tmp_path / f"{stem}.geojson", tmp_path / f"{stem}.ome.tif"
        assert geojson.is_file() and tiff.is_file(), lyr.name
        fc = json.loads(geojson.read_text())
        floors = fc["properties"]["minimum object area µm^2"]
        assert floors == {lyr.name.split(" @ ")[0]: vocab.MIN_OBJECT_UM2[lyr.metadata["tissue"]]}
        back = rasterized(geojson, level0.shape)
        # specks below the minimum size are left out; every object kept is where the mask is
        assert (back.astype(bool) & ~level0.astype(bool)).mean() < 0.002
        if level0.sum() > 2000:
            inter = (back.astype(bool) & level0.astype(bool)).sum()
            assert inter / level0.sum() > 0.9, lyr.name
        (reopened,) = viewer.open(str(tiff), plugin=PLUGIN)
        np.testing.assert_array_equal(np.asarray(reopened.data[0]), level0)
        np.testing.assert_allclose(reopened.scale, (MPP_20X, MPP_20X))
        assert reopened.metadata["tissue"] == lyr.metadata["tissue"]
        viewer.layers.remove(reopened)

    _, quantify = viewer.window.add_plugin_dock_widget(PLUGIN, "Quantify")
    quantify.masks.value = outputs
    quantify.image.value = image
    quantify.run_button.clicked()
    qtbot.waitUntil(lambda: quantify.worker is None, timeout=120_000)
    assert "mm² of tissue" in quantify.status.value, quantify.status.value
    found = {s.cls.name: s for s in quantify.summaries}
    pixels = int((np.asarray(cap.data[0]) > 0).sum())
    assert found["CAP"].area_mm2 == pytest.approx(pixels * MPP_20X ** 2 / 1e6)
    headers = [quantify.table.horizontalHeaderItem(j).text() for j in range(5)]
    assert headers[1] == "area (mm²)" and headers[4] == "median size (µm²)"

    if typed:  # Fine-tune does not ask again: "from image" finds the typed µm/px
        _, finetune = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune")
        row = finetune.rows[-1]
        row.image.value = image
        row.labels_layer.value = cap
        row.complete.value = "whole layer (unpainted = background)"
        train, _ = finetune.annotations()
        assert train[0].magnification == 5 and train[0].tissue == "cap"
