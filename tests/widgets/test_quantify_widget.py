"""The Quantify dock widget, opened from the Plugins menu: table, plots, CSV, spots."""

import csv
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def _csv_rows(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"


def _open(viewer):
    return viewer.window.add_plugin_dock_widget("napari-omniseg", "Quantify")[1]


def _wait(qtbot, w):
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)


def test_quantify_the_sample_masks_table_plots_and_csv(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.open(str(SAMPLES / "renal_pas.ome.tif"), plugin="napari-omniseg")
    masks = viewer.open(str(SAMPLES / "renal_pas_masks.ome.tif"), plugin="napari-omniseg")
    before = np.asarray(masks[5].data[0]).copy()
    w = _open(viewer)
    assert len(w.masks.value) == 6 and w.image.value is not None
    w.run_button.clicked()
    _wait(qtbot, w)
    assert not w.run_failed, w.status.value
    assert w.table.rowCount() == 6
    ptc = next(s for s in w.summaries if s.cls.name == "PTC")
    assert ptc.count > 100 and ptc.density > 0 and ptc.tissue_mm2 > 0.1
    assert w.bars.figure.axes[0].get_ylabel() == "area (mm²)"
    assert w.sizes.figure.axes[0].get_xlabel() == "object area (µm²)"
    w.save_csv(tmp_path / "q.csv")
    rows = _csv_rows(tmp_path / "q.csv")
    assert [r["class"] for r in rows] == ["DT", "PT", "CAP", "TUFT", "VES", "PTC"]
    np.testing.assert_array_equal(np.asarray(masks[5].data[0]), before)


def test_a_region_measures_only_inside_it(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    mask = np.zeros((400, 400), np.uint8)
    mask[50:150, 50:150] = 1
    mask[250:350, 250:350] = 1
    viewer.add_labels(mask, name="PTC 40x", scale=(0.25, 0.25), units=("µm", "µm"),
                      metadata={"tissue": "ptc"})
    # a rectangle around the first square only, in µm
    viewer.add_shapes([np.array([[0, 0], [0, 50], [50, 50], [50, 0]])], shape_type="polygon",
                      name="region")
    w = _open(viewer)
    w.region.value = viewer.layers["region"]
    w.run_button.clicked()
    _wait(qtbot, w)
    (s,) = w.summaries
    assert s.count == 1 and s.area_mm2 == pytest.approx(100 * 100 * 0.0625 / 1e6)
    assert s.density is None  # no slide: no densities, and the status says so
    assert "no densities" in w.status.value


def test_spots_become_a_points_layer_coloured_by_a_tissue(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.open(str(SAMPLES / "renal_pas_masks.ome.tif"), plugin="napari-omniseg")
    w = _open(viewer)
    w.colour_by.value = "PT"
    w.spots_button.clicked()
    _wait(qtbot, w)
    layer = viewer.layers["Visium spots"]
    assert len(layer.data) > 50
    assert layer.size[0] == pytest.approx(220)  # 55 µm at 0.25 µm/px
    assert "PT %" in layer.features
    assert layer.features["PT %"].max() > 10
    rng = np.random.default_rng(0)
    table = tmp_path / "deconv.csv"
    pt = {r["barcode"]: r["PT %"] for r in w.spot_rows}
    table.write_text("barcode,pt\n" + "".join(
        f"{b},{v + rng.normal(0, 15)}\n" for b, v in pt.items()))
    w.compare_table.value = table
    w.compare_column.value = "pt"
    w.compare_button.clicked()
    import re

    r = float(re.search(r"Pearson (-?[0-9.]+)", w.correlation.value).group(1))
    assert 0.3 < r < 0.99 and "Spearman" in w.correlation.value


def test_spots_on_a_mask_without_pixel_size_get_one_sentence(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_labels(np.zeros((100, 100), np.uint8), name="mask")
    w = _open(viewer)
    w.spots_button.clicked()
    assert "micrometres" in w.status.value and "Visium spots" not in viewer.layers


def test_stop_leaves_no_table(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open(str(SAMPLES / "renal_pas_masks.ome.tif"), plugin="napari-omniseg")
    w = _open(viewer)
    w.run_button.clicked()
    w.stop_button.clicked()
    _wait(qtbot, w)
    assert w.run_stopped and w.summaries == [] and w.table.rowCount() == 0
