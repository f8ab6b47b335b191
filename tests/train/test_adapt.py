"""Adaptation: a toy two-domain problem only the adversarial terms solve, the schedule, the
model in use left alone, Stop keeping the best weights, the checkpoint's record."""

import time

import numpy as np
import pytest
import torch
from torch import nn

from napari_omniseg.checkpoints import read_metadata
from napari_omniseg.choices import AdaptLevel
from napari_omniseg.errors import OmnisegInputError
from napari_omniseg.nets.domain_discriminators import MirrorDiscriminator
from napari_omniseg.nets.omniseg import OmniSegPlus
from napari_omniseg.train.adapt import AdaptOptions, AdversarialStep, Phases, run_adapt
from napari_omniseg.train.adapt_targets import targets_from_arrays
from napari_omniseg.train.annotations import annotation_from_layers
from napari_omniseg.train.engine import run_training
from napari_omniseg.train.metrics import dice


class PixelSegmenter(nn.Module):
    """Per-pixel linear features and head, with the feature-map interface of Omni-Seg+."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(4, 2, 1)

    def feature_maps(self, image):
        f = self.features(image)
        return self.head(f), f.mean((2, 3)), [f], [f]

    def head_params(self, context, tissue_id, scale_id):
        return context

    def dynamic_head(self, head, params):
        return head

    def predict(self, image):
        return self.head(self.features(image)).argmax(1)


def discs(rng, n, target: bool):
    """Grey images with discs that are a little redder and much bluer; the target's blue
    channel is brighter everywhere (its stain), so a model leaning on blue fails there and
    one leaning on red does not."""
    x = rng.normal(0.3, 0.05, (n, 3, 32, 32)).astype(np.float32)
    masks = np.zeros((n, 32, 32), np.float32)
    yy, xx = np.mgrid[:32, :32]
    for i in range(n):
        for _ in range(2):
            cy, cx = rng.integers(6, 26, 2)
            masks[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= int(rng.integers(3, 6)) ** 2] = 1
        x[i, 0][masks[i] > 0] += 0.25
        x[i, 2][masks[i] > 0] += 0.6
    if target:
        x[:, 2] += 0.6
    return torch.from_numpy(x), torch.from_numpy(masks)


def adapt_toy(levels, alpha=0.1, steps=600, seed=0):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = PixelSegmenter()
    cond = (torch.zeros(8, dtype=torch.long), torch.zeros(8, dtype=torch.long))

    def source():
        x, m = discs(rng, 8, False)
        return {"images": x, "targets": m, "conditions": cond}

    def target():
        return {"images": discs(rng, 8, True)[0], "conditions": cond}

    options = AdaptOptions(levels=levels, segmenter_warmup=0.3, discriminator_warmup=0.1)
    ds = {AdaptLevel.ENCODER: MirrorDiscriminator((4,), width=8)} if levels else {}
    phases = Phases(options, started=time.perf_counter(), minutes=None, max_steps=steps)
    step = AdversarialStep(model, ds, source, target, phases, lr=5e-2, lr_d=2e-3, bf16=False,
                           alphas={AdaptLevel.ENCODER: alpha})
    run_training(step, max_steps=steps)
    x, m = discs(np.random.default_rng(99), 16, True)
    with torch.no_grad():
        p = model.predict(x).numpy()
    return float(np.mean([dice(p[i] > 0, m[i].numpy() > 0) for i in range(16)]))


def test_adaptation_solves_a_stain_shift_that_the_source_alone_does_not():
    # the encoder term at 0.1 (ten times the paper's, for a 600-step toy); at weight 0 the
    # adapted arm is the source-only one, so this fails when the adversarial terms are off
    source_only = adapt_toy(())
    assert source_only < 0.4
    assert adapt_toy((AdaptLevel.ENCODER,)) > source_only + 0.4
    assert adapt_toy((AdaptLevel.ENCODER,), alpha=0.0) < 0.4


def test_the_phases_follow_the_budget():
    options = AdaptOptions(segmenter_warmup=0.2, discriminator_warmup=0.3)
    phases = Phases(options, started=time.perf_counter(), minutes=None, max_steps=10)
    assert [phases() for _ in range(10)] == ["segmenter"] * 2 + ["discriminators"] * 3 + [
        "adversarial"] * 5
    alone = Phases(AdaptOptions(levels=()), started=time.perf_counter(), minutes=None,
                   max_steps=4)
    assert {alone() for _ in range(4)} == {"segmenter"}


def test_options_refuse_repeated_levels_and_a_budget_of_warm_ups():
    with pytest.raises(OmnisegInputError, match="once"):
        AdaptOptions(levels=("shape", "shape"))
    with pytest.raises(OmnisegInputError, match="warm-ups"):
        AdaptOptions(segmenter_warmup=0.5, discriminator_warmup=0.5)
    with pytest.raises(ValueError, match="'encoder'"):
        AdaptOptions(levels=("colour",))
    assert AdaptOptions(levels=("shape",)).metadata()["alphas"] == {"shape": 0.1}


def _patches(n=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = np.full((96, 96, 3), (230, 180, 210), np.uint8)
        mask = np.zeros((96, 96), bool)
        y, x = rng.integers(20, 60, 2)
        mask[y:y + 24, x:x + 24] = True
        img[mask] = (120, 40, 140)
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        out.append(annotation_from_layers(img, mask.astype(np.uint8), "dt", 10,
                                          annotated=True, name=f"p{i}"))
    return out


def test_run_adapt_leaves_the_model_in_use_and_records_what_it_did(tmp_path):
    torch.manual_seed(0)
    base = OmniSegPlus(width=0.25).eval()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    source = _patches()
    targets = targets_from_arrays([np.ascontiguousarray(a.image[..., ::-1]) for a in source],
                                  [10] * 3, ["t0", "t1", "t2"], crop=64)
    out = tmp_path / "adapted.pt"
    r = run_adapt(base, "toy", targets, out, AdaptOptions(minutes=5, crop=64, batch=2,
                                                           segmenter_warmup=0.2,
                                                           discriminator_warmup=0.2),
                  source=source, max_steps=6)
    assert r.steps == 6 and not r.stopped
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in r.model.state_dict().items())
    meta = read_metadata(out)
    assert meta["base_model"] == "toy"
    assert meta["adaptation"]["options"]["levels"] == ["encoder", "decoder", "shape"]
    assert meta["adaptation"]["targets"]["images"] == 3
    assert "3 annotated patches of dt" in meta["trained_on"]
    assert set(meta["stain_reference"]) == {"reinhard", "macenko"}
    # Segment judges slides against what it was adapted to: source and target crops
    assert meta["familiarity"]["patches"] >= 48


def test_normalised_targets_take_the_source_stain_and_the_checkpoint_says_so(tmp_path):
    """Macenko before adapting: the targets' colours move to the source's; the adapted
    checkpoint records the method its inputs need."""
    from napari_omniseg.predict.stain_norm import references_of_images
    from napari_omniseg.train.adapt import _normalised_targets

    source = _patches()
    shifted = [np.ascontiguousarray(a.image[..., [2, 0, 1]]) for a in source]  # another dye
    targets = targets_from_arrays(shifted, [10] * 3, ["t0", "t1", "t2"], crop=64)
    reference = references_of_images([a.image for a in source])
    same = _normalised_targets(targets, "none", reference)
    assert same is targets
    mapped = _normalised_targets(targets, "macenko", reference)
    tissue = [a.mask > 0 for a in source]
    before = np.mean([np.abs(t[m].mean(0) - a.image[m].mean(0)).mean()
                      for t, a, m in zip(targets.images, source, tissue)])
    after = np.mean([np.abs(t[m].mean(0) - a.image[m].mean(0)).mean()
                     for t, a, m in zip(mapped.images, source, tissue)])
    assert after < 0.5 * before
    torch.manual_seed(0)
    out = tmp_path / "adapted.pt"
    run_adapt(OmniSegPlus(width=0.25).eval(), "toy", targets, out,
              AdaptOptions(minutes=5, crop=64, batch=2, normalise_stain="macenko"),
              source=source, max_steps=2)
    meta = read_metadata(out)
    assert meta["normalise_stain"] == "macenko"
    assert meta["adaptation"]["options"]["normalise_stain"] == "macenko"


def test_the_final_checkpoint_is_written_once(tmp_path, monkeypatch):
    import napari_omniseg.checkpoints as checkpoints

    writes = []
    real_save = checkpoints.save_checkpoint
    monkeypatch.setattr(checkpoints, "save_checkpoint",
                        lambda *a, **k: writes.append(k.get("steps")) or real_save(*a, **k))
    torch.manual_seed(0)
    source = _patches()
    targets = targets_from_arrays([a.image for a in source], [10] * 3, ["t0", "t1", "t2"],
                                  crop=64)
    run_adapt(OmniSegPlus(width=0.25).eval(), "toy", targets, tmp_path / "a.pt",
              AdaptOptions(minutes=5, crop=64, batch=2), source=source, max_steps=3)
    assert writes == [3]  # the end only (a 5-minute run checkpoints once, at its end)


def test_stop_keeps_the_best_validated_weights(tmp_path):
    torch.manual_seed(0)
    base = OmniSegPlus(width=0.25).eval()
    source = _patches()
    targets = targets_from_arrays([a.image for a in source], [10] * 3, ["a", "b", "c"],
                                  crop=64)
    calls = {"n": 0}

    def stop_after_four() -> bool:
        calls["n"] += 1
        return calls["n"] > 4

    r = run_adapt(base, "toy", targets, tmp_path / "m.pt",
                  AdaptOptions(minutes=5, crop=64, batch=2, validate_every=0.0),
                  source=source, val=source[:1], max_steps=50, should_stop=stop_after_four)
    assert r.stopped and r.steps == 4
    scores = [h["val_dice"] for h in r.history]
    assert r.best_score == max(scores)
    from napari_omniseg.train.finetune_renal import evaluate_annotations

    assert evaluate_annotations(r.model, source[:1])["mean_dice"] == pytest.approx(
        r.best_score, abs=1e-6)


def test_run_adapt_refuses_a_model_without_feature_maps(tmp_path):
    targets = targets_from_arrays([_patches(1)[0].image] * 2, [10, 10], ["a", "b"], crop=64)
    with pytest.raises(OmnisegInputError, match="Omni-Seg"):
        run_adapt(nn.Conv2d(3, 2, 1), "conv", targets, tmp_path / "x.pt", AdaptOptions(),
                  source=_patches(1), max_steps=1)
