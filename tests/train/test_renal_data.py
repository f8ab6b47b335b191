import numpy as np

from napari_omniseg import vocab
from napari_omniseg.train.renal_data import (
    ConditionSampler,
    build_patch_bank,
    neighbouring_magnifications,
    pack_masks,
)


def test_pack_masks_keeps_overlaps():
    cap = np.zeros((4, 4), np.uint8)
    cap[1:3, 1:3] = 1
    tuft = np.zeros((4, 4), np.uint8)
    tuft[1, 1] = 1
    packed = pack_masks({"cap": cap, "tuft": tuft})
    assert (packed >> 2 & 1).sum() == 4 and (packed >> 3 & 1).sum() == 1


def test_neighbouring_magnifications():
    assert neighbouring_magnifications(5) == (5, 10)
    assert neighbouring_magnifications(10) == (5, 10, 20)
    assert neighbouring_magnifications(40) == (20, 40)


def test_bank_and_sampler(tmp_path):
    bank = build_patch_bank([3, 4], size=1024, patch=128, crops={40: 3, 20: 2, 10: 2, 5: 1})
    assert bank.images.shape[1:] == (128, 128, 3) and len(bank) == 2 * 8
    assert set(bank.magnifications.tolist()) == {40, 20, 10, 5}
    bank.save(tmp_path / "b.npz")
    again = type(bank).load(tmp_path / "b.npz")
    np.testing.assert_array_equal(again.masks, bank.masks)
    sampler = ConditionSampler(bank, seed=0)
    seen = {}
    for _ in range(600):
        i, t, m = sampler.draw()
        assert bank.magnifications[i] == m
        code = vocab.TISSUES[t].code
        assert m in neighbouring_magnifications(vocab.tissue(code).optimal_magnification)
        seen.setdefault(code, []).append(m)
    ptc = seen["ptc"]
    assert 0.55 < np.mean(np.array(ptc) == 40) < 0.85  # optimal 70% of the time


def test_mixed_batches_join_real_rows_with_their_unknown_pixels(tmp_path):
    import dataclasses

    import torch

    from napari_omniseg.train.annotations import annotation_from_layers
    from napari_omniseg.train.renal import RenalRecipe, mixed_batches

    bank = build_patch_bank([3], size=1024, patch=128, crops={40: 2, 20: 1, 10: 1, 5: 1})
    img = np.full((128, 128, 3), 200, np.uint8)
    painted = np.zeros((128, 128), np.uint8)
    painted[40:60, 40:60] = 1
    real = [annotation_from_layers(img, painted, "ptc", 40, annotated=False)]
    recipe = RenalRecipe(batch=4, real_fraction=0.5, stain_p=1.0, jpeg_p=1.0, edge_p=1.0,
                         real_manifest="somewhere/rows.csv")
    b = mixed_batches(bank, real, recipe)()
    assert b["images"].shape[0] == b["valid"].shape[0] == b["targets"].shape[0] == 4
    assert torch.all(b["valid"][:2] == 1)  # simulated: every pixel known
    assert b["valid"][2:].mean() < 0.2  # real, painted only: the rest unknown
    meta = recipe.metadata()
    assert "its 'val' rows never" in meta["trained_on"] and "JPEG" in meta["augmentation"]
    assert "edge bands mirrored" in meta["augmentation"]
    assert meta["real_manifest"] == "rows.csv"  # a shared checkpoint names no local folders
    assert "disjoint" not in meta["trained_on"]
    # a real artery row asked, every time, for a tissue it excludes: known negatives only
    real = [annotation_from_layers(img, painted, "ves", 10, annotated=False)]
    recipe = dataclasses.replace(recipe, disjoint_p=1.0)
    b = mixed_batches(bank, real, recipe)()
    assert (b["conditions"][0][2:] != 4).all() and b["targets"][2:].sum() == 0
    assert b["valid"][2:].sum() > 0
    assert "disjoint from the painted one" in recipe.metadata()["trained_on"]
    # a recipe's seed changes the draws (runs to average), the same seed repeats them
    again, other = (mixed_batches(bank, real, recipe, seed=s)()["images"] for s in (0, 1))
    assert torch.equal(again, b["images"]) and not torch.equal(other, b["images"])


def test_the_training_record_holds_simulated_and_real_patches_by_their_slide():
    import torch

    from napari_omniseg.nets.omniseg import OmniSegPlus
    from napari_omniseg.predict.familiarity import Familiarity
    from napari_omniseg.train.annotations import annotation_from_layers
    from napari_omniseg.train.renal import training_familiarity

    bank = build_patch_bank([3, 4, 5, 6, 7, 8], size=1024, patch=128,
                            crops={40: 6, 20: 4, 10: 2, 5: 1})
    rng = np.random.default_rng(0)
    real = [annotation_from_layers(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8),
                                   np.zeros((200, 200), np.uint8), "ptc", 40, annotated=True)
            for _ in range(5)]
    torch.manual_seed(0)
    model = OmniSegPlus(width=0.25).train()
    meta = training_familiarity(model, bank, real, patches=78)
    assert model.training  # left as it was
    fam = Familiarity.from_dict(meta["familiarity"])
    assert fam.patches == 78
    # held out whole: the real images are groups below zero, the slides their seeds
    assert set(fam.held_groups) <= {3, 4, 5, 6, 7, 8, -1, -2, -3, -4, -5}
    assert len(set(fam.held_groups)) >= 2
