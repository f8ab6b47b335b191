"""The fetal MRI dock widget in a real (headless) napari viewer."""

import numpy as np
import pytest
import torch

from napari_omniseg.checkpoints import save_checkpoint
from napari_omniseg.nets.conemos import CoNeMOS

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(CoNeMOS(), tmp_path_factory.mktemp("f") / "c.pt")


def _widget(viewer, ckpt, region):
    _, w = viewer.window.add_plugin_dock_widget("napari-omniseg", "Segment (fetal MRI)")
    w.region.value = region
    w.model_source.value = "file"
    w.model_file.value = ckpt
    return w


def test_region_becomes_a_3d_labels_layer_with_the_volume_scale(make_napari_viewer, qtbot, ckpt):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-omniseg", "fetal_mri")
    volume_layer = viewer.layers["synthetic fetal MRI"]
    w = _widget(viewer, ckpt, "brain")
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=180_000)
    assert w.status.value == "done"
    layer = viewer.layers["fetal brain"]
    assert layer.ndim == 3 and layer.data.shape == (128, 128, 128)
    np.testing.assert_allclose(layer.scale, (3.0, 3.0, 3.0))
    assert tuple(str(u) for u in layer.units) == tuple(str(u) for u in volume_layer.units)


def test_stop_adds_nothing_and_skips_the_remaining_regions(make_napari_viewer, qtbot, ckpt,
                                                           monkeypatch):
    import napari_omniseg.predict.volume as volume_module

    calls = []
    real = volume_module.predict_regions
    monkeypatch.setattr(volume_module, "predict_regions",
                        lambda *a, **k: calls.append(k["flips"]) or real(*a, **k))
    viewer = make_napari_viewer()
    viewer.open_sample("napari-omniseg", "fetal_mri")
    before = len(viewer.layers)
    w = _widget(viewer, ckpt, "all")
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.progress.value >= 1 or w.worker is None, timeout=180_000)
    w.stop_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=180_000)
    assert w.status.value.startswith("stopped") and len(viewer.layers) == before
    assert w.run_button.enabled
    assert 1 <= len(calls) < 5  # the regions after Stop were not computed
    assert all(calls)  # flip averaging is on by default, as in segment_volume


def test_rgb_layer_is_refused(make_napari_viewer, ckpt):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((8, 8, 3), np.uint8), rgb=True)
    w = _widget(viewer, ckpt, "brain")
    assert w.volume.choices == ()
    w.start()
    assert "open a 3D MRI volume" in w.status.value


def test_a_failing_run_keeps_its_error_and_adds_nothing(make_napari_viewer, qtbot, ckpt,
                                                        monkeypatch):
    import napari_omniseg.predict.volume as volume_module

    def broken(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(volume_module, "predict_regions", broken)
    viewer = make_napari_viewer()
    viewer.open_sample("napari-omniseg", "fetal_mri")
    before = len(viewer.layers)
    w = _widget(viewer, ckpt, "brain")
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    # the message stays (it used to be overwritten by "done" when the worker finished)
    assert w.status.value == "segmentation failed: out of memory"
    assert len(viewer.layers) == before and w.run_button.enabled and not w.stop_button.enabled
