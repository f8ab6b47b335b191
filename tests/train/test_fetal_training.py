import numpy as np
import torch

from napari_omniseg.nets.conemos import CoNeMOS
from napari_omniseg.predict.volume import normalize_intensity
from napari_omniseg.train.augment3d import intensity3d, spatial3d
from napari_omniseg.train.engine import SegmentationStep, run_training
from napari_omniseg.train.fetal import LOSSES, FetalRecipe, build_fetal_set, make_fetal_batches
from napari_omniseg.train.losses import VOLUME_LOSSES, soft_dice_bce_loss, soft_dice_loss


def test_region_draws_balanced_or_inverse_to_label_counts():
    data = build_fetal_set([1, 2, 3, 4, 5, 6], size=32)
    data.labelled[:] = False
    data.labelled[:, 4] = True  # placenta everywhere
    data.labelled[0, 0] = True  # uterus once
    p = data.region_probabilities("inverse")
    assert p[1] == p[2] == p[3] == 0
    assert np.isclose(p[0] / p[4], 6.0)
    np.testing.assert_allclose(data.region_probabilities("balanced"), [0.5, 0, 0, 0, 0.5])
    nb = make_fetal_batches(data, batch=64, crop=16, seed=0, augment=False)
    drawn = nb()["conditions"][0].numpy()
    assert set(drawn) == {0, 4} and 16 < (drawn == 0).sum() < 48
    import pytest

    with pytest.raises(ValueError, match="sampling"):
        data.region_probabilities("uniform")


def test_soft_dice_ignores_unknown_channels():
    t = torch.zeros(1, 2, 8, 8, 8)
    t[:, 0, 2:6, 2:6, 2:6] = 1
    good = torch.where(t > 0, 10.0, -10.0)
    valid = torch.zeros_like(t)
    valid[:, 0] = 1
    assert soft_dice_loss(good, t, valid) < 0.01
    bad_unknown = good.clone()
    bad_unknown[:, 1] = 10.0  # wrong in the unlabelled channel only
    assert torch.isclose(soft_dice_loss(bad_unknown, t, valid), soft_dice_loss(good, t, valid))


def test_dice_bce_adds_cross_entropy_on_known_voxels_only():
    t = torch.zeros(1, 2, 8, 8, 8)
    t[:, 0, 2:6, 2:6, 2:6] = 1
    valid = torch.zeros_like(t)
    valid[:, 0] = 1
    sure = torch.where(t > 0, 20.0, -20.0)
    unsure = torch.where(t > 0, 1.0, -1.0)  # thresholds right, so soft Dice alone is lenient
    assert soft_dice_bce_loss(sure, t, valid) < 0.01
    gap = soft_dice_bce_loss(unsure, t, valid) - soft_dice_loss(unsure, t, valid)
    assert torch.isclose(gap, torch.nn.functional.softplus(torch.tensor(-1.0)), atol=1e-4)
    wrong_unknown = sure.clone()
    wrong_unknown[:, 1] = 20.0
    assert torch.isclose(soft_dice_bce_loss(wrong_unknown, t, valid),
                         soft_dice_bce_loss(sure, t, valid))


def test_training_rejects_an_unknown_loss(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="loss must be one of"):
        FetalRecipe(loss="focal")
    assert set(LOSSES) == set(VOLUME_LOSSES)  # the command line's names are the losses


def test_spatial3d_moves_volume_and_mask_together():
    g = torch.Generator().manual_seed(0)
    m = torch.zeros(2, 1, 32, 32, 32)
    m[:, :, 8:20, 10:24, 6:26] = 1
    v, k = spatial3d(m.clone(), m, g)
    assert ((v > 0.5) == (k > 0.5)).float().mean() > 0.97
    assert not torch.equal(k, m)
    assert intensity3d(v, g).max() <= 1


def test_batches_and_a_few_training_steps():
    data = build_fetal_set([1, 2, 3], size=32)
    assert data.volumes.min() >= 0 and data.volumes.max() <= 1
    nb = make_fetal_batches(data, batch=2, crop=24, seed=0)
    b = nb()
    assert b["images"].shape == (2, 1, 24, 24, 24) and b["targets"].shape == (2, 1, 24, 24, 24)
    for r, _t in zip(b["conditions"][0].tolist(), b["targets"]):
        assert data.labelled[:, r].any()
    res = run_training(SegmentationStep(CoNeMOS(), nb, soft_dice_loss, bf16=False), max_steps=3)
    assert res.steps == 3 and all(np.isfinite(res.losses))
    base = make_fetal_batches(data, batch=2, crop=24, seed=0, baseline=True)()
    assert base["targets"].shape == (2, 5, 24, 24, 24) and base["valid"].shape == (2, 5, 24, 24, 24)
    assert normalize_intensity(np.arange(1000.0)).max() == 1


def test_train_and_evaluate_fetal_end_to_end(tmp_path, monkeypatch):
    import napari_omniseg.train.fetal as fetal
    from napari_omniseg.checkpoints import load_model, read_metadata

    real_build = fetal.build_fetal_set
    monkeypatch.setattr(fetal, "build_fetal_set",
                        lambda seeds, progress=None: real_build(seeds[:2], size=32))
    chosen = FetalRecipe(volumes=2, batch=1, crop=24)
    recipe = fetal.train_fetal(tmp_path / "f.pt", chosen, minutes=0.05).recipe
    assert recipe["steps"] >= 1 and read_metadata(tmp_path / "f.pt")["architecture"] == "conemos"
    meta = read_metadata(tmp_path / "f.pt")
    # the recipe's fields are what the checkpoint records
    assert {k: meta[k] for k in ("volumes", "batch", "crop", "lr")} == {
        "volumes": 2, "batch": 1, "crop": 24, "lr": chosen.lr}
    scores = fetal.evaluate_fetal(load_model(tmp_path / "f.pt"), [1], size=32, bf16=False)
    assert set(scores) == {"uterus", "body", "brain", "eyes", "placenta"}
    assert all(0 <= v <= 1 for v in scores.values())


def test_eye_crops_always_hold_eyes():
    data = build_fetal_set([1, 2], size=64)
    assert data.masks[:, 3].reshape(2, -1).any(1).all()
    data.labelled[:] = False
    data.labelled[:, 3] = True  # eyes only
    nb = make_fetal_batches(data, batch=4, crop=24, seed=0, augment=False)
    for _ in range(5):
        assert all(t.sum() > 0 for t in nb()["targets"])
    uniform = make_fetal_batches(data, batch=4, crop=24, seed=0, augment=False,
                                 foreground_fraction=0.0)
    assert any(t.sum() == 0 for _ in range(5) for t in uniform()["targets"])


def test_a_crop_also_trains_its_volumes_other_labelled_regions():
    data = build_fetal_set([1, 2], size=32)
    data.labelled[:] = False
    data.labelled[0, [2, 4]] = True  # brain and placenta in volume 0
    data.labelled[1, 2] = True  # brain only in volume 1
    nb = make_fetal_batches(data, batch=3, crop=24, seed=0, augment=False, regions_per_crop=3)
    pairs = 0
    for _ in range(5):
        b = nb()
        regions = b["conditions"][0].tolist()
        assert set(regions) <= {2, 4} and 3 <= len(regions) <= 6
        # a companion is the previous crop under the other region, with that region's mask
        for k in range(1, len(regions)):
            if regions[k - 1] != regions[k] and torch.equal(b["images"][k], b["images"][k - 1]):
                assert not torch.equal(b["targets"][k], b["targets"][k - 1])
                pairs += 1
    assert pairs >= 5  # every placenta draw (volume 0) brings its brain along
    single = make_fetal_batches(data, batch=3, crop=24, seed=0, augment=False)
    assert len(single()["conditions"][0]) == 3
