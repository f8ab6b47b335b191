"""The pyramid generator and its discriminators: shapes, levels, registry."""

import torch

from napari_omniseg.checkpoints import load_model, save_checkpoint
from napari_omniseg.nets.pyramid_gan import (
    PyramidDiscriminators,
    PyramidGenerator,
    condition_pyramid,
    fused_for_inference,
)


def test_generator_makes_every_level_coarsest_first():
    g = PyramidGenerator(levels=4, width=8)
    cond = torch.rand(2, 20, 64, 64)
    conds = condition_pyramid(cond, 4)
    assert [c.shape[-1] for c in conds] == [8, 16, 32, 64]
    out = g(conds, [torch.randn(2, 3, *c.shape[-2:]) for c in conds])
    assert [o.shape for o in out] == [(2, 3, s, s) for s in (8, 16, 32, 64)]
    assert all(o.abs().max() <= 1 for o in out)


def test_discriminators_score_patches_with_features():
    d = PyramidDiscriminators(levels=4, finest=128, width=8)
    out = d.per_level[-1](torch.rand(1, 3, 128, 128), torch.rand(1, 20, 128, 128))
    assert len(out) == 3  # x1, x1/2, x1/4
    assert all(len(feats) == 4 and feats[-1].shape[1] == 1 for feats in out)


def test_generator_checkpoint_saves_and_loads_weights_only(tmp_path):
    g = PyramidGenerator(levels=3, width=8)
    save_checkpoint(g, tmp_path / "g.pt", trained_on="nothing")
    blob = torch.load(tmp_path / "g.pt", weights_only=True)  # data, never code
    assert "state_dict" in blob
    back = load_model(tmp_path / "g.pt", device="cpu")
    assert isinstance(back, PyramidGenerator) and back.levels == 3 and back.width == 8
    for a, b in zip(g.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)


def test_the_fused_inference_copy_makes_the_same_images_and_leaves_the_original():
    torch.manual_seed(0)
    g = PyramidGenerator(levels=3, width=8, prior=True)
    g.train()
    conds = condition_pyramid(torch.rand(1, 23, 64, 64), 3)
    noise = [torch.randn(1, 3, *c.shape[-2:]) for c in conds]
    for _ in range(3):  # batch statistics that are not the defaults
        g(conds, noise)
    g.eval()
    fused = fused_for_inference(g)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules())  # untouched
    assert fused.prior and fused.levels == 3
    with torch.no_grad():
        a, b = g(conds, noise)[-1], fused(conds, noise)[-1]
    assert (a - b).abs().max() < 1e-4  # dropping the norms instead: 0.07
