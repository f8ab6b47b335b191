"""CoNeMOS against its published description."""

import torch
import torch.nn.functional as F

from napari_omniseg.nets.conemos import CoNeMOS


def reference_forward(m, volume, region):
    """The description written out with plain functions and the model's own tensors."""
    sd = m.state_dict()
    h = F.one_hot(region, 5).float()
    for i in range(4):  # four Dense(64) + LeakyReLU(0.2)
        h = F.leaky_relu(h @ sd[f"mlp.{2 * i}.weight"].T + sd[f"mlp.{2 * i}.bias"], 0.2)

    def film(x, prefix, relu=True):
        weight = sd[f"{prefix}.conv.weight"]
        x = F.conv3d(x, weight, padding=weight.shape[-1] // 2)
        if relu:
            x = F.relu(x)
        gb = h @ sd[f"{prefix}.film.weight"].T + sd[f"{prefix}.film.bias"]
        g, b = gb[:, : x.shape[1]], gb[:, x.shape[1]:]
        return (1 + g[..., None, None, None]) * x + b[..., None, None, None]

    x, skips = volume, []
    for lvl in range(4):
        x = film(x, f"enc.{lvl}.0")
        skips.append(x)
        x = film(x, f"enc.{lvl}.1")
        if lvl < 3:
            x = F.max_pool3d(x, 2)
    for d in range(3):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = film(torch.cat([x, skips[2 - d]], 1), f"dec.{d}.0")
        x = film(x, f"dec.{d}.1")
    return film(x, "head", relu=False)


def test_matches_the_description_and_size():
    torch.manual_seed(0)
    m = CoNeMOS().eval()
    n = sum(p.numel() for p in m.parameters())
    assert 1.4e6 < n < 1.7e6  # "about 1.5 M parameters"
    assert all(conv.conv.bias is None for conv in m.modules() if hasattr(conv, "film"))
    vol = torch.rand(2, 1, 16, 24, 16)
    region = torch.tensor([2, 4])
    with torch.no_grad():
        got = m(vol, region)
        want = reference_forward(m, vol, region)
    assert got.shape == (2, 1, 16, 24, 16)
    assert (got - want).abs().max() < 1e-5


def test_the_region_changes_the_answer_and_batches_match():
    torch.manual_seed(1)
    m = CoNeMOS().eval()
    vol = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        many = m.forward_regions(vol, [0, 1, 2, 3, 4])
        one = m(vol, torch.tensor([3]))
    assert torch.allclose(many[3:4], one, atol=1e-5)
    assert (many[0] - many[2]).abs().max() > 1e-4
    # with every FiLM head silent the condition has no effect
    for mod in m.modules():
        if hasattr(mod, "film"):
            torch.nn.init.zeros_(mod.film.weight)
            torch.nn.init.zeros_(mod.film.bias)
    with torch.no_grad():
        silent = m.forward_regions(vol, [0, 4])
    assert torch.allclose(silent[0], silent[1])


def test_unconditioned_baseline_has_one_channel_per_region():
    m = CoNeMOS(conditioned=False).eval()
    assert m.mlp is None and all(c.film is None for c in m.modules() if hasattr(c, "film"))
    vol = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        out = m(vol)
        picked = m.forward_regions(vol, [4, 1])
    assert out.shape == (1, 5, 16, 16, 16)
    assert torch.equal(picked[0, 0], out[0, 4]) and torch.equal(picked[1, 0], out[0, 1])
