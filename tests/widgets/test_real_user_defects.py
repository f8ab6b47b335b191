"""The defects a new user hit on real tissue in napari, each driven the way they met it: widgets
from the Plugins menu, files through ``viewer.open``, saving through napari's save action."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import tiny_renal_checkpoint
from test_finetune_widget import discs

pytestmark = pytest.mark.gui
PLUGIN = "napari-omniseg"


def _open(viewer, name):
    """Plugins > napari-omniseg > ``name``."""
    return viewer.window.add_plugin_dock_widget(PLUGIN, name)[1]


def _wait(qtbot, widget, seconds: float = 120) -> None:
    qtbot.waitUntil(lambda: widget.worker is None, timeout=int(seconds * 1000))


def _patch(viewer, mpp=None):
    img, mask = discs()
    meta = {"mpp": mpp} if mpp else {}
    return viewer.add_image(img, rgb=True, name="patch", metadata=meta), mask


def test_saving_a_multiscale_segment_layer_writes_every_format(make_napari_viewer, qtbot,
                                                               tmp_path):
    """Item 1: napari hands writers a MultiScaleData, which once raised and wrote nothing."""
    import json

    from napari.layers import Labels

    viewer = make_napari_viewer()
    levels = [np.zeros((1024, 1024), np.uint8), np.zeros((512, 512), np.uint8)]
    levels[0][100:300, 200:400] = 1
    levels[1][50:150, 100:200] = 1
    layer = Labels(levels, multiscale=True, name="CAP @ 5x", scale=(2.0, 2.0),
                   units=("µm", "µm"), metadata={"tissue": "cap", "mpp": 2.0})
    viewer.add_layer(layer)
    viewer.layers.selection.active = layer
    for name in ("cap.geojson", "cap.ome.tif", "cap.csv"):
        written = viewer.layers.save(str(tmp_path / name), selected=True, plugin=PLUGIN)
        assert written and (tmp_path / name).is_file(), name
    fc = json.loads((tmp_path / "cap.geojson").read_text())
    (f,) = fc["features"]
    assert f["properties"]["measurements"]["Area µm^2"] == pytest.approx(200 * 200 * 4.0)


def test_a_writer_failure_is_one_sentence_and_no_file(make_napari_viewer, tmp_path):
    from unittest import mock

    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.zeros((4, 5, 6), np.uint8), name="stack")  # 3D: refused
    with mock.patch("napari.utils.notifications.show_error") as told:
        written = viewer.layers.save(str(tmp_path / "s.geojson"), selected=False,
                                     plugin=PLUGIN)
    assert not written and not (tmp_path / "s.geojson").exists()
    (sentence,), _ = told.call_args
    assert "stack has 3 dimensions" in sentence and layer.name in sentence


def test_the_typed_pixel_size_is_the_layers_and_fine_tune_finds_it(make_napari_viewer, qtbot,
                                                                   tmp_path):
    """Items 2 and 3: the µm/px given to Segment becomes the image layer's; Fine-tune with
    "from image" then trains without asking, and without it says one sentence."""
    viewer = make_napari_viewer()
    image, mask = _patch(viewer)
    labels = viewer.add_labels(mask, name="my CAP")  # painted in pixels, before the µm/px
    finetune = _open(viewer, "Fine-tune")
    row = finetune.rows[0]
    row.image.value, row.labels_layer.value, row.tissue.value = image, labels, "cap"
    row.complete.value = "whole layer (unpainted = background)"
    finetune.start_from.value = "file"
    finetune.model_file.value = tiny_renal_checkpoint(tmp_path / "base.pt")
    finetune.run_button.clicked()  # no pixel size and magnification "from image"
    assert finetune.worker is None
    assert finetune.status.value == ("patch has no pixel size; choose its magnification "
                                     "above")

    segment = _open(viewer, "Segment (kidney)")
    segment.model_source.value = "file"
    segment.model_file.value = tmp_path / "base.pt"
    segment.tissue.value, segment.where.value = "cap", "whole slide"
    segment.mpp.value = 2.0  # 5x
    assert segment.mpp.value == 2.0
    segment.run_button.clicked()
    _wait(qtbot, segment)
    assert segment.status.value == "done", segment.status.value
    np.testing.assert_allclose(image.scale, (2.0, 2.0))
    np.testing.assert_allclose(labels.scale, (2.0, 2.0))  # the painted layer follows
    assert viewer.layers["CAP @ 5x"].metadata["mpp"] == 2.0
    train, _ = finetune.annotations()
    assert train[0].magnification == 5


def test_the_pixel_size_field_keeps_four_decimals(make_napari_viewer):
    viewer = make_napari_viewer()
    segment = _open(viewer, "Segment (kidney)")
    segment.mpp.value = 0.337  # a mouse scanner's pixel size
    assert segment.mpp.value == pytest.approx(0.337)
    synth = _open(viewer, "Synthesize")
    synth.mpp.value = 0.2525
    assert synth.mpp.value == pytest.approx(0.2525)


def test_a_tissue_with_strokes_only_is_warned_before_training(make_napari_viewer, qtbot,
                                                              tmp_path):
    """Item 4: positives only once spread PT over most of a tile, silently."""
    viewer = make_napari_viewer()
    image, mask = _patch(viewer, mpp=0.25)
    labels = viewer.add_labels(mask, name="my PTC")
    w = _open(viewer, "Fine-tune")
    row = w.rows[0]
    row.image.value, row.labels_layer.value, row.tissue.value = image, labels, "ptc"
    assert row.complete.value == "painted pixels only"
    w.start_from.value = "file"
    w.model_file.value = tiny_renal_checkpoint(tmp_path / "base.pt")
    w.minutes.value = 0.1
    w.save_to.value = tmp_path / "ft.pt"
    w.run_button.clicked()
    assert w.worker is None and "PTC has only painted pixels" in w.status.value
    assert "inside shapes of" in w.status.value and "whole layer" in w.status.value
    # a complete row and a validation row: trained at once, Dice before and after told
    row.complete.value = "whole layer (unpainted = background)"
    val = w.add_row()
    val.image.value, val.labels_layer.value, val.tissue.value = image, labels, "ptc"
    val.complete.value, val.use.value = "whole layer (unpainted = background)", "validation"
    w.run_button.clicked()
    assert w.worker is not None
    _wait(qtbot, w)
    assert "before" in w.status.value and "after" in w.status.value, w.status.value


def test_a_long_status_wraps_instead_of_widening_the_dock(make_napari_viewer, qtbot):
    """Item 5: µm/px 0 gave a long sentence that squeezed the canvas for good."""
    viewer = make_napari_viewer(show=True)
    _image, _ = _patch(viewer)
    w = _open(viewer, "Segment (kidney)")
    qtbot.wait(50)
    before = w.native.minimumSizeHint().width(), w.native.sizeHint().width()
    w.run_button.clicked()  # no pixel size: the long sentence
    assert "has no pixel size" in w.status.value and len(w.status.value) > 80
    qtbot.wait(50)
    after = w.native.minimumSizeHint().width(), w.native.sizeHint().width()
    assert after[0] <= before[0] + 5 and after[1] <= before[1] + 5, (before, after)
    assert w.status.native.wordWrap()


def test_a_grayscale_png_is_told_not_opened_as_labels(make_napari_viewer, tmp_path):
    """Item 6: a grayscale picture once opened as a black Labels layer with 256 labels."""
    from unittest import mock

    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((200, 300)) * 255).astype(np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.tile(np.arange(4, dtype=np.uint8), (20, 5))).save(tmp_path / "m.png")
    viewer = make_napari_viewer()
    with mock.patch("napari.utils.notifications.show_error") as told:
        layers = viewer.open(str(tmp_path / "g.png"), plugin=PLUGIN)
    assert not layers
    (sentence,), _ = told.call_args
    assert "single-channel (grayscale) image" in sentence and "RGB" in sentence
    (mask,) = viewer.open(str(tmp_path / "m.png"), plugin=PLUGIN)  # a painted label image
    assert mask._type_string == "labels"


def test_models_load_in_the_worker_not_the_gui_thread(make_napari_viewer, qtbot, tmp_path,
                                                      monkeypatch):
    """Item 7: the first click froze the GUI while the model loaded on its thread."""
    import napari_omniseg.checkpoints as checkpoints

    loaded_in: list[str] = []
    real = checkpoints.load_model

    def spy(*a, **k):
        loaded_in.append(threading.current_thread().name)
        return real(*a, **k)

    monkeypatch.setattr(checkpoints, "load_model", spy)
    viewer = make_napari_viewer()
    image, mask = _patch(viewer, mpp=2.0)
    segment = _open(viewer, "Segment (kidney)")
    segment.model_source.value = "file"
    segment.model_file.value = tiny_renal_checkpoint(tmp_path / "m.pt")
    segment.tissue.value, segment.where.value = "cap", "whole slide"
    segment.run_button.clicked()  # the worker may load the model before the click returns
    _wait(qtbot, segment)
    assert segment.status.value == "done", segment.status.value
    assert loaded_in and threading.main_thread().name not in loaded_in
    finetune = _open(viewer, "Fine-tune")
    row = finetune.rows[0]
    painted = viewer.add_labels(mask, name="my CAP", scale=image.scale, units=image.units)
    row.image.value, row.labels_layer.value, row.tissue.value = image, painted, "cap"
    row.complete.value = "whole layer (unpainted = background)"
    finetune.start_from.value = "file"
    finetune.model_file.value = tmp_path / "m.pt"
    finetune.minutes.value = 0.1
    finetune.save_to.value = tmp_path / "ft.pt"
    loaded_in.clear()
    finetune.run_button.clicked()
    _wait(qtbot, finetune)
    assert finetune.use_button.enabled, finetune.status.value
    assert loaded_in and threading.main_thread().name not in loaded_in


def test_label_layers_name_their_tissues(make_napari_viewer, qtbot, tmp_path):
    """Item 8: the painted value under the cursor, and the label being painted, by name."""
    import tifffile

    viewer = make_napari_viewer()
    labels = np.zeros((64, 64), np.uint8)
    labels[10:20, 10:20] = 2
    tifffile.imwrite(tmp_path / "painted.tif", labels)
    (layer,) = viewer.open(str(tmp_path / "painted.tif"), plugin=PLUGIN)
    status = layer.get_status((15, 15), world=False)
    assert "PT" in str(status), status
    synth = _open(viewer, "Synthesize")
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name="field")
    mask = synth.new_mask_layer()
    mask.selected_label = 3
    assert "painting 3 = CAP" in synth.status.value
    # a mask in pixels: its µm/px is given in the widget and the magnification follows it
    mask.scale, mask.units = (1, 1), ("pixel", "pixel")
    mask.data[20:40, 20:40] = 3
    synth.mask.value = mask
    synth.run_button.clicked()
    assert "is in pixels: give the mask's µm/px" in synth.status.value
    synth.mpp.value = 1.0  # 10x
    synth.run_button.clicked()
    _wait(qtbot, synth)
    out = viewer.layers["synthetic PAS (seed 0)"]
    np.testing.assert_allclose(out.scale, (1.0, 1.0))
    assert out.metadata["mpp"] == 1.0 and mask.metadata["magnification"] == 10


def test_fine_tune_rows_explain_their_columns_and_choices(make_napari_viewer):
    """Item 9: the rows had no headers and "where the annotation is complete" no word."""
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer()
    viewer.add_shapes([[[0, 0], [0, 10], [10, 10], [10, 0]]], name="boxes")
    w = _open(viewer, "Fine-tune")
    assert "tissue" in w.row_header.value and "complete" in w.row_header.value
    box = w.rows[0].complete.native
    tips = [box.itemData(i, Qt.ToolTipRole) for i in range(box.count())]
    assert len(tips) == 3 and all(tips) and len(set(tips)) == 3
    assert "unknown" in tips[0] and "background" in tips[1] and "Shapes" in tips[2]
