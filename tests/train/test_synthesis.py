"""Training the generator on the engine: pairs from both sources, a few steps, a checkpoint."""

import numpy as np
import pytest
import torch

from napari_omniseg.checkpoints import load_model, read_metadata
from napari_omniseg.train.synthesis import (
    PairSampler,
    SynthesisPairs,
    pairs_from_manifest,
    train_generator,
)


def toy_pairs(n=6, side=64):
    rng = np.random.default_rng(0)
    masks = np.zeros((n, 6, side, side), np.uint8)
    images = np.full((n, side, side, 3), 230, np.uint8)
    for i in range(n):
        y, x = rng.integers(8, side - 24, 2)
        masks[i, 1, y:y + 16, x:x + 16] = 1
        images[i, y:y + 16, x:x + 16] = (150, 60, 140)
    known = np.ones((n, 6), bool)
    return SynthesisPairs(images, masks, known, ["pas"] * n, [10] * n, ["toy"] * n)


def test_sampler_gives_images_in_range_and_conditions():
    images, cond = PairSampler(toy_pairs(), batch=3, crop=32)()
    assert images.shape == (3, 3, 32, 32) and cond.shape == (3, 20, 32, 32)
    assert images.min() >= -1 and images.max() <= 1


@pytest.mark.parametrize("perceptual", ["none", "segmenter"])
def test_a_few_steps_train_and_save_a_loadable_generator(tmp_path, perceptual):
    recipe = train_generator(tmp_path / "g.pt", toy_pairs(), max_steps=3, levels=3, width=8,
                             crop=64, batch=2, perceptual=perceptual, trained_on="toy pairs"
                             ).recipe
    assert recipe["steps"] == 3
    g = load_model(tmp_path / "g.pt", device="cpu")
    assert g.levels == 3
    meta = read_metadata(tmp_path / "g.pt")
    assert meta["trained_on"] == "toy pairs" and meta["perceptual"] == perceptual
    assert all(torch.isfinite(p).all() for p in g.parameters())


def test_a_prior_generator_trains_on_pairs_with_their_priors(tmp_path):
    from napari_omniseg.checkpoints import load_generator
    from napari_omniseg.train.synthesis import with_priors

    pairs = with_priors(toy_pairs(3))
    assert pairs.priors.shape == pairs.images.shape
    # inside the painted tubule the prior is not flat: epithelium, nuclei, a lumen
    inside = pairs.priors[0][pairs.masks[0, 1] > 0]
    assert inside.std(0).min() > 5
    # the sampler turns the prior with its image
    same = SynthesisPairs(pairs.images, pairs.masks, pairs.known, pairs.stains,
                          pairs.magnifications, pairs.sources, priors=pairs.images.copy())
    images, _cond, prior = PairSampler(same, batch=4, crop=32, seed=3)()
    assert torch.equal(images, prior)
    recipe = train_generator(tmp_path / "p.pt", toy_pairs(3), max_steps=2, levels=3, width=8,
                             crop=64, batch=2, perceptual="none", prior=True).recipe
    assert recipe["anatomy_prior"] is True
    assert load_generator(tmp_path / "p.pt").prior
    with pytest.raises(ValueError, match="with priors"):
        _ = pairs + toy_pairs(1)
    from napari_omniseg.errors import OmnisegInputError

    with pytest.raises(OmnisegInputError, match="pyramid generator only"):
        train_generator(tmp_path / "x.pt", toy_pairs(2), max_steps=1, architecture="single",
                        prior=True)


def test_manifest_pairs_know_only_their_tissue(tmp_path):
    from PIL import Image

    img = np.full((80, 90, 3), 200, np.uint8)
    mask = np.zeros((80, 90), np.uint8)
    mask[10:30, 10:30] = 255
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(mask).save(tmp_path / "a_mask.png")
    (tmp_path / "m.csv").write_text("image,mask,tissue,stain,magnification,split\n"
                                    "a.png,a_mask.png,tuft,pas,5,train\n"
                                    "a.png,a_mask.png,ptc,pas,40,val\n")
    pairs = pairs_from_manifest(tmp_path / "m.csv", size=64)
    assert len(pairs) == 4  # 80 x 90 in 64-px windows; the val row is not trained on
    assert pairs.magnifications == [5] * 4
    known = pairs.known[0]
    assert known[3].all() and not known[[0, 1, 4, 5]].any()  # the tuft, nothing else...
    assert known[2].sum() == 400  # ...but the capsule where the tuft is: a tuft is in a cap
    assert pairs.masks[0, 3].sum() == 400 and pairs.masks[0, 2].sum() == 400


def test_painted_annotations_know_only_painted_pixels_and_are_cut_into_windows():
    from napari_omniseg.nets.condition import condition_planes
    from napari_omniseg.train.annotations import Annotation
    from napari_omniseg.train.synthesis import pairs_from_annotations

    mask = np.zeros((100, 150), bool)
    mask[10:30, 10:30] = True
    known = mask.copy()
    known[60:70, 100:140] = True  # painted background
    a = Annotation(np.full((100, 150, 3), 180, np.uint8), mask, known, "pt", 10, stain="pas")
    pairs = pairs_from_annotations([a], size=64)
    # windows at x 0, 64 and a flush 86; rows 0 and a flush 36; (36, 0) knows nothing
    assert len(pairs) == 5 and pairs.images.shape[1:] == (64, 64, 3)
    assert pairs.known.shape == (5, 6, 64, 64)
    assert sum(int(k[1].sum()) for k in pairs.known) >= 400 + 400
    cond = condition_planes(pairs.masks[0], pairs.known[0], "pas", 10)
    assert cond[7].sum() == pairs.known[0][1].sum()  # the known map is per pixel
    with pytest.raises(Exception, match="know no pixel"):
        pairs_from_annotations([Annotation(a.image, mask, np.zeros_like(mask), "pt", 10)])


def test_pairs_known_everywhere_and_per_pixel_join():
    painted = toy_pairs(2)
    painted.known = np.broadcast_to(painted.known[:, :, None, None], (2, 6, 64, 64)).copy()
    joined = toy_pairs(3) + painted
    assert joined.known.shape == (5, 6, 64, 64) and joined.known.all()
    _images, cond = PairSampler(joined, batch=2, crop=32)()
    assert cond.shape == (2, 20, 32, 32)


def test_synthetic_pairs_join_finetuning_after_warm_up_at_weight_003(tmp_path):
    from napari_omniseg.nets.pyramid_gan import PyramidGenerator
    from napari_omniseg.train.annotations import Annotation
    from napari_omniseg.train.finetune_renal import make_finetune_batches
    from napari_omniseg.train.losses import SYNTHETIC_WEIGHT
    from napari_omniseg.train.synthesis import synthetic_annotations

    torch.manual_seed(0)
    g = PyramidGenerator(levels=3, width=8).eval()
    synthetic = synthetic_annotations(g, 2, ["pt", "ptc"], ["pas"], size=64)
    assert len(synthetic) == 4 and all(a.extra["synthetic"] for a in synthetic)
    assert {a.magnification for a in synthetic} == {10, 40}  # each at its optimal power
    assert all(a.image.shape == (64, 64, 3) and a.known.all() for a in synthetic)
    real = [Annotation(np.full((64, 64, 3), 200, np.uint8), np.eye(64, dtype=bool),
                       np.ones((64, 64), bool), "pt", 10)]
    joined = {"now": False}
    batches = make_finetune_batches(real, batch=16, crop=64, synthetic=synthetic,
                                    synthetic_joined=lambda: joined["now"])
    assert set(batches()["sample_weight"].tolist()) == {1.0}  # warm-up: real pairs only
    joined["now"] = True
    weights = torch.cat([batches()["sample_weight"] for _ in range(5)])
    assert (weights == SYNTHETIC_WEIGHT).any() and (weights == 1).any()


def test_the_single_scale_baseline_trains_loads_and_generates(tmp_path):
    from napari_omniseg.checkpoints import load_generator
    from napari_omniseg.predict.synthesize import generate_window

    recipe = train_generator(tmp_path / "p2p.pt", toy_pairs(), max_steps=2, width=8, crop=64,
                             batch=2, perceptual="none", architecture="single").recipe
    assert recipe["generator"] == "single" and recipe["levels"] == 1
    g = load_generator(tmp_path / "p2p.pt", device="cpu")
    assert type(g).__name__ == "UNetGenerator"
    masks = toy_pairs(1).masks[0]
    a = generate_window(g, masks, "pas", 10, seed=1)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, generate_window(g, masks, "pas", 10, seed=1))


def test_an_unknown_generator_architecture_is_refused(tmp_path):
    with pytest.raises(ValueError, match="pyramid"):
        train_generator(tmp_path / "x.pt", toy_pairs(), max_steps=1, architecture="vq")


def test_a_fixed_seed_gives_the_same_losses_step_for_step(tmp_path, monkeypatch):
    """What lets a refactor of the steps be checked (benchmarks/step_losses.py over 20 steps):
    with the schedule on steps (a huge budget), two runs are alike to the bit."""
    import napari_omniseg.train.engine as engine
    from napari_omniseg.train.synthesis import train_generator

    runs = []
    real = engine.run_training

    def recording(step, **kw):
        result = real(step, **kw)
        runs.append(result.losses)
        return result

    monkeypatch.setattr(engine, "run_training", recording)
    for k in range(2):
        torch.manual_seed(0)
        train_generator(tmp_path / f"g{k}.pt", toy_pairs(4), minutes=1e6, max_steps=5, levels=2,
                        crop=32, batch=2, perceptual="none", width=4, seed=1)
    assert len(runs[0]) == 5 and runs[0] == runs[1]
