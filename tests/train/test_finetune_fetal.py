import numpy as np
import pytest
import torch

from napari_omniseg.checkpoints import load_model, read_metadata
from napari_omniseg.errors import OmnisegInputError
from napari_omniseg.nets.conemos import CoNeMOS
from napari_omniseg.train.finetune_fetal import (
    evaluate_volume_annotations,
    finetune_fetal,
    make_volume_batches,
    save_finetuned_fetal,
    volume_annotation_from_layers,
)


def ball_volume(n=40, seed=0):
    """Grey noise with a bright ball: the ball is the 'brain'."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:n, :n, :n]
    ball = (zz - n / 2) ** 2 + (yy - n / 2) ** 2 + (xx - n / 2) ** 2 < (n / 4) ** 2
    vol = (rng.normal(0.3, 0.05, (n, n, n)) + 0.5 * ball).astype(np.float32)
    return vol, ball


def painted(ball):
    strokes = np.zeros(ball.shape, np.uint8)
    strokes[:, :, : ball.shape[2] // 2][ball[:, :, : ball.shape[2] // 2]] = 3  # left half only
    return strokes


def test_unpainted_voxels_are_unknown_not_background():
    vol, ball = ball_volume()
    a = volume_annotation_from_layers(vol, painted(ball), "brain")
    assert not (a.known & ~a.mask).any()
    nb = make_volume_batches([a], batch=3, crop=32, seed=1)
    for _ in range(3):
        b = nb()
        # every voxel that counts in the loss is labelled "brain": nothing teaches background
        assert b["valid"].sum() > 0
        assert torch.all(b["targets"][b["valid"] > 0] == 1)
    whole = volume_annotation_from_layers(vol, painted(ball), "brain", annotated=True)
    assert whole.known.all() and (~whole.mask).any()


def test_labels_of_unknown_voxels_change_nothing():
    vol, ball = ball_volume()
    strokes = painted(ball)
    a = volume_annotation_from_layers(vol, strokes, "brain")
    b = volume_annotation_from_layers(vol, strokes, "brain")
    b.mask[~b.known] = True  # what the unknown voxels "are" must not matter
    ba, bb = make_volume_batches([a], 2, 32, seed=3)(), make_volume_batches([b], 2, 32, seed=3)()
    assert torch.equal(ba["valid"], bb["valid"])
    assert torch.equal(ba["targets"] * ba["valid"], bb["targets"] * bb["valid"])


def test_bad_inputs_are_refused():
    vol, ball = ball_volume()
    with pytest.raises(OmnisegInputError, match="differ in shape"):
        volume_annotation_from_layers(vol, painted(ball)[:-1], "brain")
    with pytest.raises(OmnisegInputError, match="nothing painted"):
        volume_annotation_from_layers(vol, np.zeros_like(ball, np.uint8), "brain")
    with pytest.raises(OmnisegInputError, match="not a 3D volume"):
        volume_annotation_from_layers(vol[0], painted(ball)[0], "brain")
    a = volume_annotation_from_layers(vol, painted(ball), "brain")
    with pytest.raises(OmnisegInputError, match="region-conditioned"):
        finetune_fetal(CoNeMOS(conditioned=False), [a], max_steps=1, minutes=None)


class _Thresholder(torch.nn.Module):
    """Says 'region' where the (normalised) intensity is above one half."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward_regions(self, x, region_ids):
        return ((x > 0.5).float() * 20 - 10).expand(len(region_ids), *x.shape[1:]) + self.dummy


def test_evaluation_scores_known_voxels():
    vol, ball = ball_volume()
    a = volume_annotation_from_layers(vol, ball.astype(np.uint8), "brain", annotated=True)
    perfect = evaluate_volume_annotations(_Thresholder(), [a], bf16=False)
    assert perfect["regions"]["brain"]["dice"] > 0.95
    inverted = volume_annotation_from_layers(vol, (~ball).astype(np.uint8), "eyes",
                                             annotated=True)
    assert evaluate_volume_annotations(_Thresholder(), [inverted], bf16=False)["mean_dice"] < 0.1


def test_finetune_changes_a_copy_and_saves_it(tmp_path):
    vol, ball = ball_volume()
    strokes = painted(ball)
    vol0, strokes0 = vol.copy(), strokes.copy()
    train = [volume_annotation_from_layers(vol, strokes, "brain")]
    val = [volume_annotation_from_layers(vol, ball.astype(np.uint8), "brain", annotated=True)]
    torch.manual_seed(0)
    base = CoNeMOS().eval()
    x = torch.from_numpy(val[0].volume[:32, :32, :32].copy())[None, None]
    with torch.no_grad():
        before = base.forward_regions(x, [2])
    result = finetune_fetal(base, train, minutes=None, max_steps=3, crop=32)
    with torch.no_grad():
        assert torch.equal(base.forward_regions(x, [2]), before)  # the base is untouched
        assert not torch.allclose(result.model.forward_regions(x, [2]), before)
    np.testing.assert_array_equal(vol, vol0)
    np.testing.assert_array_equal(strokes, strokes0)
    assert result.steps == 3
    # with validation volumes the returned weights are the best scored ones
    result = finetune_fetal(base, train, val, minutes=None, max_steps=3, crop=32)
    scores = [h["val_dice"] for h in result.history]
    assert result.history[0]["step"] == 0 and result.best_score == max(scores)
    path = save_finetuned_fetal(result, tmp_path / "ft.pt", "bundled fetal model", train, val)
    meta = read_metadata(path)
    assert meta["regions_trained"] == ["brain"] and meta["architecture"] == "conemos"
    assert isinstance(load_model(path, device="cpu"), CoNeMOS)
