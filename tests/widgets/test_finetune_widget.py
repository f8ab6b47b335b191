"""The Fine-tune dock widget: paint, retrain, the model changes, the layers do not."""

import numpy as np
import pytest
import torch
from conftest import tiny_renal_checkpoint

from napari_omniseg.checkpoints import load_model, read_metadata
from napari_omniseg.widgets.finetune import WHOLE_LAYER
from napari_omniseg.widgets.model_in_use import MODELS_IN_USE

pytestmark = pytest.mark.gui


def discs(n=384, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((n, n, 3), np.uint8) + np.array([235, 190, 215], np.uint8)
    mask = np.zeros((n, n), np.uint8)
    yy, xx = np.mgrid[:n, :n]
    for _ in range(8):
        cy, cx = rng.integers(30, n - 30, 2)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 < 18 ** 2] = 1
    img[mask > 0] = (90, 40, 120)
    return img, mask


def _open(viewer, name):
    """Plugins > napari-omniseg > ``name``."""
    return viewer.window.add_plugin_dock_widget("napari-omniseg", name)[1]


def _shown(widget) -> bool:
    """Set visible (the test viewer's window itself is not shown)."""
    return not widget.native.isHidden()


def _setup(viewer, tmp_path, minutes=0.25):
    img, mask = discs()
    image = viewer.add_image(img, rgb=True, name="patch", metadata={"mpp": 0.25})
    strokes = np.zeros_like(mask)
    strokes[:, :200] = mask[:, :200]  # the user painted the discs of the left part
    labels = viewer.add_labels(strokes, name="my PTC")
    w = _open(viewer, "Fine-tune")
    row = w.rows[0]
    row.image.value, row.labels_layer.value, row.tissue.value = image, labels, "ptc"
    row.complete.value = WHOLE_LAYER
    w.start_from.value = "file"
    w.model_file.value = tiny_renal_checkpoint(tmp_path / "base.pt")
    w.minutes.value = minutes
    w.semi.value = False
    w.save_to.value = tmp_path / "ft.pt"
    return w, image, labels


def test_retrain_changes_the_model_not_the_layers(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    w, image, labels = _setup(viewer, tmp_path)
    before = labels.data.copy()
    base = load_model(tmp_path / "base.pt", device="cpu")
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=180_000)
    assert w.use_button.enabled, w.status.value
    np.testing.assert_array_equal(labels.data, before)  # byte for byte
    assert labels.data.dtype == before.dtype
    x = torch.from_numpy(image.data[:256, :256]).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        old = base(x, torch.tensor([5]), torch.tensor([3]))
        new = w.trained[1].cpu()(x, torch.tensor([5]), torch.tensor([3]))
    assert not torch.allclose(old, new)
    assert len(w.plot.history) >= 1  # the live plot got points
    meta = read_metadata(tmp_path / "ft.pt")
    assert meta["tissues_trained"] == ["ptc"] and meta["base_model"].endswith("base.pt")
    seg = _open(viewer, "Segment (kidney)")
    w.use_button.clicked()
    assert MODELS_IN_USE.model("renal") is w.trained[1] and seg.model_source.value == "in use"


def test_stop_keeps_the_model_in_use_and_a_checkpoint(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    w, _, _ = _setup(viewer, tmp_path, minutes=10)
    in_use = MODELS_IN_USE.model("renal")
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.progress.value > 0 or w.worker is None, timeout=120_000)
    w.stop_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.status.value.startswith("stopped"), w.status.value
    assert MODELS_IN_USE.model("renal") is in_use  # nothing changes until "Use this model"
    assert load_model(tmp_path / "ft.pt", device="cpu") is not None


def test_a_failing_run_reports_and_leaves_the_model_in_use(make_napari_viewer, qtbot, tmp_path,
                                                           monkeypatch):
    import dataclasses

    from napari_omniseg.train.task_functions import FUNCTIONS

    def broken(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setitem(FUNCTIONS, "renal", dataclasses.replace(FUNCTIONS["renal"],
                                                                finetune=broken))
    viewer = make_napari_viewer()
    w, _, _ = _setup(viewer, tmp_path)
    in_use = MODELS_IN_USE.model("renal")
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    assert w.status.value == "training failed: out of memory"
    assert MODELS_IN_USE.model("renal") is in_use and not w.use_button.enabled
    assert w.run_button.enabled and not (tmp_path / "ft.pt").exists()


def test_bad_rows_are_explained(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    w, _image, labels = _setup(viewer, tmp_path)
    w.rows[0].complete.value = "painted pixels only"
    labels.data = np.zeros_like(labels.data)
    w.run_button.clicked()
    assert "nothing painted" in w.status.value and w.worker is None
    viewer.add_labels(np.ones((10, 10), np.uint8), name="small")
    w.rows[0].labels_layer.value = viewer.layers["small"]
    w.run_button.clicked()
    assert "is not drawn on" in w.status.value


def test_fetal_volumes_retrain_the_fetal_model(make_napari_viewer, qtbot, tmp_path):
    from napari_omniseg.checkpoints import save_checkpoint
    from napari_omniseg.nets.conemos import CoNeMOS
    from napari_omniseg.simulate.fetal import simulate_fetal

    viewer = make_napari_viewer()
    f = simulate_fetal(5, size=32)
    volume = viewer.add_image(f.volume, name="mri", scale=f.spacing)
    viewer.add_image(discs()[0], rgb=True, name="slide patch")  # not offered for volumes
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="2D labels")  # neither is this
    strokes = f.masks["brain"].copy()
    xs = np.nonzero(strokes)[2]
    strokes[:, :, int(np.median(xs)):] = 0  # the user painted part of the brain
    assert strokes.any()
    labels = viewer.add_labels(strokes, name="my brain", metadata={"region": "brain"})
    before = labels.data.copy()
    torch.manual_seed(0)
    save_checkpoint(CoNeMOS(), tmp_path / "base.pt")
    w = _open(viewer, "Fine-tune")
    w.kind.value = "fetal"
    row = w.rows[0]
    assert [lyr.name for lyr in row.image.choices] == ["mri"]
    assert [lyr.name for lyr in row.labels_layer.choices] == ["my brain"]  # 3D labels only
    assert str(w.save_to.value).endswith("omniseg_fetal_finetuned.pt")
    assert not w.magnification.visible and not w.semi.visible
    row.image.value, row.labels_layer.value = volume, labels
    assert row.tissue.value == "brain"  # guessed from the layer's metadata
    w.start_from.value = "file"
    w.model_file.value = tmp_path / "base.pt"
    w.minutes.value = 0.15
    w.save_to.value = tmp_path / "ft.pt"
    fetal_widget = _open(viewer, "Segment (fetal MRI)")
    w.run_button.clicked()
    # strokes only: the person is told that no background is known (a 3D layer has no
    # Shapes advice), and trains as it is by clicking again
    assert "'whole layer'" in w.status.value and "Shapes" not in w.status.value
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=180_000)
    assert w.use_button.enabled, w.status.value
    np.testing.assert_array_equal(labels.data, before)
    base = load_model(tmp_path / "base.pt", device="cpu")
    x = torch.from_numpy(f.volume)[None, None]
    with torch.no_grad():
        assert not torch.allclose(base.forward_regions(x, [2]),
                                  w.trained[1].cpu().forward_regions(x, [2]))
    assert read_metadata(tmp_path / "ft.pt")["regions_trained"] == ["brain"]
    w.use_button.clicked()
    assert MODELS_IN_USE.model("fetal") is w.trained[1]
    assert fetal_widget.model_source.value == "in use"


def tiny_generator(path):
    from napari_omniseg.checkpoints import save_checkpoint
    from napari_omniseg.nets.pyramid_gan import PyramidGenerator

    torch.manual_seed(0)
    save_checkpoint(PyramidGenerator(levels=3, width=8), path)
    return path


def test_the_rows_train_a_generator_the_synthesize_widget_then_uses(make_napari_viewer, qtbot,
                                                                    tmp_path):
    viewer = make_napari_viewer()
    w, _image, labels = _setup(viewer, tmp_path, minutes=0.1)
    before = labels.data.copy()
    w.train_what.value = "generator"
    assert w.semi.native.isHidden() and w.synthetic.native.isHidden()
    assert not w.stain.native.isHidden()
    w.model_file.value = tiny_generator(tmp_path / "g0.pt")
    w.save_to.value = tmp_path / "g.pt"
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=180_000)
    assert w.use_button.enabled, w.status.value
    meta = read_metadata(tmp_path / "g.pt")
    assert meta["architecture"] == "pyramid_cgan" and meta["steps"] >= 1
    assert "napari" in meta["trained_on"] and meta["init"] == "g0.pt"
    np.testing.assert_array_equal(labels.data, before)
    synth = _open(viewer, "Synthesize")
    w.use_button.clicked()
    assert MODELS_IN_USE.model("synthesis") is w.trained[1]
    assert synth.model_source.value == "in use"


def test_a_segmenter_start_is_refused_when_training_a_generator(make_napari_viewer, qtbot,
                                                                tmp_path):
    viewer = make_napari_viewer()
    w, _, _ = _setup(viewer, tmp_path)
    w.train_what.value = "generator"  # the start-from file is still the tiny segmenter
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)  # loaded in the worker
    assert "not a histology generator" in w.status.value and not w.use_button.enabled


def test_synthetic_pairs_join_the_fine_tuning(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    w, _, _ = _setup(viewer, tmp_path, minutes=0.1)
    w.synthetic.value = 1
    assert not w.generator_file.native.isHidden()
    w.generator_file.value = tiny_generator(tmp_path / "g.pt")
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=180_000)
    assert w.use_button.enabled, w.status.value
    meta = read_metadata(tmp_path / "ft.pt")
    assert meta["synthetic_pairs"] == 1 and meta["generator"].endswith("g.pt")


def test_keep_of_start_blends_the_start_back_into_the_saved_model(make_napari_viewer, qtbot,
                                                                 tmp_path):
    viewer = make_napari_viewer()
    w, _, _ = _setup(viewer, tmp_path, minutes=0.1)
    assert _shown(w.keep_start)
    w.keep_start.value = 0.5
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=180_000)
    assert w.use_button.enabled, w.status.value
    assert read_metadata(tmp_path / "ft.pt")["options"]["keep_start"] == 0.5
    base = load_model(tmp_path / "base.pt", device="cpu").state_dict()
    saved = load_model(tmp_path / "ft.pt", device="cpu").state_dict()
    # the blend still moved from the start (tests/train/test_run_finetune.py checks its
    # arithmetic)
    k = next(k for k, v in saved.items() if v.is_floating_point() and v.numel() > 100)
    assert not torch.equal(saved[k], base[k])
    for what in ("generator", "average"):  # it applies to fine-tuning the segmenter only
        w.train_what.value = what
        assert not _shown(w.keep_start)
    w.train_what.value = "segmenter"
    assert _shown(w.keep_start)


def test_adapt_to_unlabelled_layers_only(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """Plugins menu, two unlabelled image layers chosen, no labels painted: the model adapts
    (the source is the simulator, made small here), the layers and the model in use stay."""
    from napari_omniseg.train import adapt

    monkeypatch.setattr(adapt, "SOURCE_SLIDES", 1)
    monkeypatch.setattr(adapt, "SOURCE_SLIDE_SIZE", 1024)
    viewer = make_napari_viewer()
    layers = []
    for seed in (0, 1):
        img, _ = discs(seed=seed)
        layers.append(viewer.add_image(img, rgb=True, name=f"slide {seed}",
                                       metadata={"mpp": 1.0}))
    before = [lyr.data.copy() for lyr in layers]
    in_use = MODELS_IN_USE.model("renal")
    w = _open(viewer, "Fine-tune")
    assert not w.adapt_to.native.isHidden()
    w.adapt_to.value = layers
    w.start_from.value = "file"
    w.model_file.value = tiny_renal_checkpoint(tmp_path / "base.pt")
    w.minutes.value = 0.2
    w.save_to.value = tmp_path / "adapted.pt"
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=180_000)
    assert w.use_button.enabled, w.status.value
    assert w.status.value.startswith("done"), w.status.value
    for lyr, b in zip(layers, before):
        np.testing.assert_array_equal(lyr.data, b)
    meta = read_metadata(tmp_path / "adapted.pt")
    assert "slide 0, slide 1" in meta["adaptation"]["targets"]["description"]
    assert "simulated slides" in meta["adaptation"]["source"]
    assert MODELS_IN_USE.model("renal") is in_use
    base = load_model(tmp_path / "base.pt", device="cpu")
    x = torch.from_numpy(layers[0].data[:256, :256]).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        assert not torch.allclose(base(x, torch.tensor([0]), torch.tensor([1])),
                                  w.trained[1].cpu()(x, torch.tensor([0]), torch.tensor([1])))
    assert any(k.startswith("d_") for e in w.plot.history for k in e)
    w.use_button.clicked()
    assert MODELS_IN_USE.model("renal") is w.trained[1]


def test_adapt_to_a_layer_without_pixel_size_is_one_sentence(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    img, _ = discs()
    layer = viewer.add_image(img, rgb=True, name="no size")
    w = _open(viewer, "Fine-tune")
    w.adapt_to.value = [layer]
    w.save_to.value = tmp_path / "a.pt"
    w.run_button.clicked()
    assert w.worker is None
    assert "no size has no pixel size" in w.status.value


def test_the_mean_of_two_checkpoints_is_written_and_can_be_used(make_napari_viewer, qtbot,
                                                                 tmp_path):
    from conftest import unfamiliar_renal_checkpoint

    viewer = make_napari_viewer()
    a = unfamiliar_renal_checkpoint(tmp_path / "a.pt", seed=1)
    b = tiny_renal_checkpoint(tmp_path / "b.pt", seed=2)
    w = _open(viewer, "Fine-tune")
    w.train_what.value = "average"
    assert _shown(w.average_of) and not _shown(w.minutes) and not _shown(w.rows)
    assert w.run_button.text == "Average"
    w.save_to.value = tmp_path / "mean.pt"
    # one checkpoint is not a mean: one sentence, nothing written
    w.average_of.value = [a]
    w.run_button.clicked()
    assert w.worker is None and "two or more" in w.status.value
    assert not (tmp_path / "mean.pt").exists()
    # nor is saving the mean over one of its own models
    w.average_of.value = [a, b]
    w.save_to.value = a
    w.run_button.clicked()
    assert w.worker is None and "another file" in w.status.value
    w.save_to.value = tmp_path / "mean.pt"
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    assert w.use_button.enabled, w.status.value
    assert "mean of 2 models" in w.status.value and "out-of-distribution" in w.status.value
    mean = load_model(tmp_path / "mean.pt", device="cpu").state_dict()
    sa = load_model(a, device="cpu").state_dict()
    sb = load_model(b, device="cpu").state_dict()
    k = next(k for k in mean if mean[k].is_floating_point() and mean[k].numel() > 100)
    assert torch.allclose(mean[k], (sa[k] + sb[k]) / 2, atol=1e-6)
    assert not torch.allclose(sa[k], sb[k])
    assert len(read_metadata(tmp_path / "mean.pt")["averaged_from"]) == 2
    w.use_button.clicked()
    assert MODELS_IN_USE.model("renal") is w.trained[1]
    # back to fine-tuning: the rows return
    w.train_what.value = "segmenter"
    assert _shown(w.rows) and _shown(w.minutes) and not _shown(w.average_of)
    assert w.run_button.text == "Train"


def test_thresholds_are_chosen_on_the_train_rows_in_seconds(make_napari_viewer, qtbot,
                                                           tmp_path, monkeypatch):
    """Plugins menu, "thresholds per tissue": a model that finds the discs at probability 0.35
    (a stand-in for the network, which obeys its thresholds) gets PTC cut at 0.3, the val row
    says so, the file and the model in use are as they should be."""
    from napari_omniseg.train.calibrate import GRID

    viewer = make_napari_viewer()
    w, image, labels = _setup(viewer, tmp_path)
    mask = labels.data > 0

    def predict(model, img, conditions, **kwargs):
        p = np.where(mask[:img.shape[0], :img.shape[1]], 0.35, 0.05)
        offset = float(model.foreground_offset[conditions[0][0]])
        return (1 / (1 + np.exp(-(np.log(p / (1 - p)) + offset))))[None]

    monkeypatch.setattr("napari_omniseg.predict.tiling.predict_array", predict)
    val = w.add_row()
    val.image.value, val.labels_layer.value, val.tissue.value = image, labels, "ptc"
    val.complete.value, val.use.value = WHOLE_LAYER, "validation"
    in_use = MODELS_IN_USE.model("renal")
    w.train_what.value = "calibrate"
    assert w.run_button.text == "Calibrate"
    assert not _shown(w.minutes) and not _shown(w.keep_start) and _shown(w.rows)
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    assert w.use_button.enabled, w.status.value
    assert "thresholds PTC 0.3" in w.status.value, w.status.value
    assert "validation Dice 0.000 before, 1.000 after" in w.status.value, w.status.value
    meta = read_metadata(tmp_path / "ft.pt")
    assert meta["thresholds"] == {"ptc": 0.3} and meta["calibration"]["grid"] == list(GRID)
    assert MODELS_IN_USE.model("renal") is in_use  # until "Use this model"
    w.use_button.clicked()
    assert MODELS_IN_USE.model("renal").thresholds() == {"ptc": 0.3}
    # nothing marked train: one sentence, nothing written
    (tmp_path / "ft.pt").unlink()
    w.rows[0].use.value = "validation"
    w.run_button.clicked()
    assert "at least one annotation row used for training" in w.status.value
    assert w.worker is None
    assert not (tmp_path / "ft.pt").exists()
