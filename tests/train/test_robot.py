"""The robot user: where it strokes, and what it reports."""

import numpy as np

from napari_omniseg.train.correct import BACKGROUND, TISSUE
from napari_omniseg.train.robot import next_stroke, robot_evaluate


def test_a_stroke_goes_inside_the_largest_error_with_its_label():
    truth = np.zeros((64, 64), bool)
    truth[10:40, 10:40] = True  # a square the prediction misses
    pred = np.zeros_like(truth)
    pred[50:54, 50:54] = True  # and a small false region
    known = np.ones_like(truth)
    disk, label = next_stroke(pred, truth, known, radius=4)
    assert label == TISSUE
    ys, xs = np.nonzero(disk)
    assert disk.sum() == len(ys) > 40 and (truth[disk]).all()  # a full disk, all tissue
    assert abs(ys.mean() - 24.5) <= 1 and abs(xs.mean() - 24.5) <= 1  # at the interior
    # once the square is found, the false region is next, with a background stroke
    disk, label = next_stroke(truth | pred, truth, known)
    assert label == BACKGROUND and pred[disk].all()
    # unknown pixels are never stroked; nothing wrong: no stroke
    assert next_stroke(pred, truth, np.zeros_like(known)) is None
    assert next_stroke(truth, truth, known) is None


def test_the_robot_reports_dice_per_stroke_count_and_latency(tmp_path):
    from conftest import tiny_renal_checkpoint

    from napari_omniseg.checkpoints import load_model
    from napari_omniseg.train.annotations import Annotation

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    img[:, :32] = (90, 40, 120)
    mask = np.zeros((64, 64), bool)
    mask[:, :32] = True
    a = Annotation(img, mask, np.ones_like(mask), "pt", 10, name="toy")
    model = load_model(tiny_renal_checkpoint(tmp_path / "t.pt"), device="cpu")
    out = robot_evaluate(model, [a, a], 3)
    assert out["strokes"] == [0, 1, 2, 3] and len(out["mean_dice"]) == 4
    assert list(out["per_tissue"]) == ["pt"] and out["patches"] == 2
    assert out["latency_s"]["median"] > 0 and out["latency_s"]["max"] >= out["latency_s"]["median"]
    assert out["mean_dice"][-1] >= out["mean_dice"][0]
