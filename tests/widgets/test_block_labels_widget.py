"""The Block labels dock widget: make a block layer, paint classes, edit the table, train
briefly; the model changes, the layers do not."""

import numpy as np
import pytest
import torch
from conftest import tiny_renal_checkpoint

from napari_omniseg.checkpoints import load_model, read_metadata
from napari_omniseg.widgets.block_labels import block_layer_geometry

pytestmark = pytest.mark.gui


def _open(viewer):
    return viewer.window.add_plugin_dock_widget("napari-omniseg", "Block labels")[1]


def speckled(n=256, block=32, seed=0):
    rng = np.random.default_rng(seed)
    density = rng.choice([0.0, 0.15, 0.5], (n // block, n // block))
    mask = rng.random((n, n)) < np.kron(density, np.ones((block, block)))
    img = np.zeros((n, n, 3), np.uint8) + np.array([235, 190, 215], np.uint8)
    img[mask] = (90, 40, 120)
    return img, mask


def test_block_layer_overlays_the_image_exactly(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((128, 192, 3), np.uint8), rgb=True, scale=(0.5, 0.5),
                             translate=(10, 20), metadata={"mpp": 0.5})
    w = _open(viewer)
    w.image.value, w.block_size.value = image, 32
    layer = w.make_block_layer()
    assert layer.data.shape == (4, 6)
    assert tuple(layer.scale) == (16, 16)
    # block (1, 2) covers image pixels 32..63 x 64..95: its corners in the world agree
    lo = layer.data_to_world((1 - 0.5, 2 - 0.5))
    hi = layer.data_to_world((1 + 0.5, 2 + 0.5))
    np.testing.assert_allclose(lo, image.data_to_world((32 - 0.5, 64 - 0.5)))
    np.testing.assert_allclose(hi, image.data_to_world((63 + 0.5, 95 + 0.5)))
    assert block_layer_geometry(image, 1) == ((0.5, 0.5), (10.0, 20.0))


def test_a_block_size_that_does_not_divide_the_image_is_one_sentence(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((100, 96, 3), np.uint8), rgb=True, name="odd")
    w = _open(viewer)
    w.image.value, w.block_size.value = image, 32
    w.make_button.clicked()
    assert "block size 32 does not divide odd" in w.status.value
    assert len(viewer.layers) == 1


def test_paint_blocks_edit_table_train(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    img, mask = speckled()
    image = viewer.add_image(img, rgb=True, name="patch", metadata={"mpp": 0.25})
    w = _open(viewer)
    w.image.value, w.block_size.value, w.tissue.value = image, 32, "ptc"
    blocks = w.make_block_layer()
    frac = mask.reshape(8, 32, 8, 32).mean(axis=(1, 3))
    blocks.data = np.where(frac == 0, 1, np.where(frac < 0.3, 2, 3)).astype(blocks.data.dtype)
    # fully painted examples in the top row of blocks give the table
    painted = np.zeros(mask.shape, np.uint8)
    painted[:32][mask[:32]] = 1
    painted[:32, :][~mask[:32]] = 0
    painted_layer = viewer.add_labels(painted, name="examples")
    w.blocks.value, w.painted.value = blocks, painted_layer
    w.estimate_button.clicked()
    assert "estimated from" in w.status.value, w.status.value
    table = w.block_table()
    # a typed edit: the none class made explicit
    data = w.table.value["data"]
    for row in data:
        if int(float(row[1])) == 1:
            row[2], row[3] = 0.0, 0.02
    w.set_table({(r[0], int(float(r[1]))): (float(r[2]), float(r[3])) for r in data})
    w.save_table.value = tmp_path / "table.csv"
    w.save_table_button.clicked()
    assert (tmp_path / "table.csv").exists()
    assert set(table.rows) >= {("ptc", 2), ("ptc", 3)}
    w.model_source.value = "file"
    w.model_file.value = tiny_renal_checkpoint(tmp_path / "base.pt")
    w.minutes.value = 0.2
    w.save_to.value = tmp_path / "blocks.pt"
    before_blocks, before_image = blocks.data.copy(), image.data.copy()
    w.run_button.clicked()
    qtbot.waitUntil(lambda: w.worker is None, timeout=180_000)
    assert w.use_button.enabled, w.status.value
    np.testing.assert_array_equal(blocks.data, before_blocks)
    np.testing.assert_array_equal(image.data, before_image)
    assert "ptc class 3" in w.report.value and len(w.fit) >= 2
    base = load_model(tmp_path / "base.pt", device="cpu")
    trained = w.trained[1]
    assert any(not torch.equal(a, b.to(a.dtype)) for a, b in
               zip(base.state_dict().values(), trained.state_dict().values()))
    meta = read_metadata(tmp_path / "blocks.pt")
    assert meta["block_labels"]["labelled_blocks"] == 64


def test_a_table_without_a_painted_class_is_refused(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    img, _ = speckled()
    image = viewer.add_image(img, rgb=True, name="patch", metadata={"mpp": 0.25})
    w = _open(viewer)
    w.image.value, w.block_size.value = image, 32
    blocks = w.make_block_layer()
    blocks.data = np.full(blocks.data.shape, 5, blocks.data.dtype)
    w.save_to.value = tmp_path / "x.pt"
    w.run_button.clicked()
    assert "block class 5 of ptc is not in the block table" in w.status.value
    assert w.worker is None
    w.set_table({("ptc", 5): (1.5, 0.1)})
    w.run_button.clicked()
    assert "means are fractions" in w.status.value
