"""Omni-Seg+ against the published description, with an authors'-layout checkpoint."""

import pytest
import torch
import torch.nn.functional as F

from napari_omniseg import OmnisegInputError
from napari_omniseg.checkpoints import load_model, read_metadata, save_checkpoint
from napari_omniseg.nets.omniseg import OmniSegPlus

BLOCKS = {  # prefix: (in, out, stride)
    "layer0.0": (32, 32, 1),
    "layer1.0": (32, 64, 2), "layer1.1": (64, 64, 1),
    "layer2.0": (64, 128, 2), "layer2.1": (128, 128, 1),
    "layer3.0": (128, 256, 2), "layer3.1": (256, 256, 1),
    "layer4.0": (256, 256, 2), "layer4.1": (256, 256, 1),
    "x8_resb.0": (256, 128, 1), "x4_resb.0": (128, 64, 1),
    "x2_resb.0": (64, 32, 1), "x1_resb.0": (32, 32, 1),
}


def author_state_dict(seed=0):
    """Random tensors under the keys and shapes of the authors' scale-aware checkpoint."""
    g = torch.Generator().manual_seed(seed)

    def w(*shape, scale=None):
        fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
        return torch.randn(*shape, generator=g) * (scale or (2.0 / fan_in) ** 0.5)

    def gn(prefix, c, sd):
        sd[f"{prefix}.weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        sd[f"{prefix}.bias"] = 0.1 * torch.randn(c, generator=g)

    sd = {"conv1.weight": w(32, 3, 3, 3)}
    for p, (cin, cout, stride) in BLOCKS.items():
        gn(f"{p}.gn1", cin, sd)
        sd[f"{p}.conv1.weight"] = w(cout, cin, 3, 3)
        gn(f"{p}.gn2", cout, sd)
        sd[f"{p}.conv2.weight"] = w(cout, cout, 3, 3) * 0.5
        if stride != 1 or cin != cout:
            gn(f"{p}.downsample.0", cin, sd)
            sd[f"{p}.downsample.2.weight"] = w(cout, cin, 1, 1)
    gn("fusionConv.0", 256, sd)
    sd["fusionConv.2.weight"] = w(256, 256, 1, 1)
    gn("precls_conv.0", 32, sd)
    sd["precls_conv.2.weight"] = w(8, 32, 1, 1)
    sd["precls_conv.2.bias"] = 0.1 * torch.randn(8, generator=g)
    gn("GAP.0", 256, sd)
    sd["controller_trilinear.weight"] = w(162, 6144, 1, 1, scale=0.02)
    sd["controller_trilinear.bias"] = 0.1 * torch.randn(162, generator=g)
    # modules the authors' files carry but never use
    for k in ("add_0.weight", "add_1.weight", "x1_resb_add0.conv1.weight",
              "x1_resb_add1.gn1.weight"):
        sd[k] = torch.randn(4, generator=g)
    return sd


def reference_forward(sd, image, tissue, scale):
    """The description, written out literally with torch.nn.functional."""

    def gn(x, p):
        return F.group_norm(x, 16, sd[f"{p}.weight"], sd[f"{p}.bias"])

    def block(x, p, stride):
        y = F.conv2d(F.relu(gn(x, f"{p}.gn1")), sd[f"{p}.conv1.weight"], stride=stride, padding=1)
        y = F.conv2d(F.relu(gn(y, f"{p}.gn2")), sd[f"{p}.conv2.weight"], padding=1)
        if f"{p}.downsample.2.weight" in sd:
            x = F.conv2d(F.relu(gn(x, f"{p}.downsample.0")), sd[f"{p}.downsample.2.weight"],
                         stride=stride)
        return y + x

    x = F.conv2d(image, sd["conv1.weight"], padding=1)
    skips = []
    for layer in range(5):
        for p, (_, _, stride) in BLOCKS.items():
            if p.startswith(f"layer{layer}."):
                x = block(x, p, stride)
        skips.append(x)
    fused = F.conv2d(F.relu(gn(skips[4], "fusionConv.0")), sd["fusionConv.2.weight"])
    f = F.relu(gn(fused, "GAP.0")).mean((2, 3))  # (N, 256)
    x = fused
    for p, skip in zip(("x8_resb.0", "x4_resb.0", "x2_resb.0", "x1_resb.0"), skips[3::-1]):
        x = block(F.interpolate(x, scale_factor=2, mode="nearest") + skip, p, 1)
    feats = F.conv2d(F.relu(gn(x, "precls_conv.0")), sd["precls_conv.2.weight"],
                     sd["precls_conv.2.bias"])
    out = []
    for n in range(image.shape[0]):
        t = F.one_hot(torch.tensor(tissue[n]), 6).float()
        s = F.one_hot(torch.tensor(scale[n]), 4).float()
        cond = torch.outer(torch.outer(f[n], t).flatten(), s).flatten()  # index c*24 + t*4 + s
        params = sd["controller_trilinear.weight"][:, :, 0, 0] @ cond + sd[
            "controller_trilinear.bias"]
        w1, w2, w3 = params[:64].view(8, 8), params[64:128].view(8, 8), params[128:144].view(2, 8)
        b1, b2, b3 = params[144:152], params[152:160], params[160:162]
        h = feats[n].flatten(1)
        h = F.relu(w1 @ h + b1[:, None])
        h = F.relu(w2 @ h + b2[:, None])
        out.append((w3 @ h + b3[:, None]).view(2, *image.shape[2:]))
    return torch.stack(out)


class Payload:
    """Stands for arbitrary code inside a pickle."""


@pytest.fixture
def author_checkpoint(tmp_path):
    sd = author_state_dict()
    path = tmp_path / "MOTS_scale_aware.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)  # DataParallel prefix
    return path, sd


def test_authors_checkpoint_matches_the_description(author_checkpoint):
    path, sd = author_checkpoint
    model = load_model(path, device="cpu")
    image = torch.rand(3, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    tissue, scale = [5, 0, 3], [3, 1, 0]
    with torch.no_grad():
        got = model(image, torch.tensor(tissue), torch.tensor(scale))
        want = reference_forward(sd, image, tissue, scale)
    assert got.shape == (3, 2, 64, 48)
    assert 0.5 < want.abs().max() < 1e3  # logits of a realistic size, not two zero maps
    assert (got - want).abs().max() <= 1e-4
    assert model.omniseg_metadata["source"] == "authors' checkpoint"


def test_condition_changes_the_output_and_batch_conditions_match(author_checkpoint):
    model = load_model(author_checkpoint[0], device="cpu")
    image = torch.rand(2, 3, 32, 32)
    conds = [(5, 3), (0, 1), (2, 0)]
    with torch.no_grad():
        many = model.forward_conditions(image, conds)
        for i, (t, s) in enumerate(conds):
            one = model(image, torch.full((2,), t), torch.full((2,), s))
            assert (many[:, i] - one).abs().max() < 1e-5
    assert (many[:, 0] - many[:, 1]).abs().max() > 1e-3


def test_inputs_must_be_multiples_of_16():
    with pytest.raises(ValueError, match="multiples of 16"):
        OmniSegPlus()(torch.rand(1, 3, 40, 32), torch.tensor([0]), torch.tensor([0]))


def test_product_checkpoint_round_trip(tmp_path):
    model = OmniSegPlus()
    path = save_checkpoint(model, tmp_path / "m.pt", trained_on="unit test")
    meta = read_metadata(path)
    assert meta["architecture"] == "omniseg_plus" and meta["trained_on"] == "unit test"
    assert meta["vocabulary"]["tissues"]["ptc"] == 5
    loaded = load_model(path, device="cpu")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a = model.eval()(x, torch.tensor([1]), torch.tensor([1]))
        b = loaded(x, torch.tensor([1]), torch.tensor([1]))
    assert torch.equal(a, b)


def test_checkpoints_with_code_or_wrong_weights_are_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "hook": Payload()}, evil)  # unpickling it would run code
    with pytest.raises(OmnisegInputError, match="could run code when loaded"):
        load_model(evil)
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(OmnisegInputError, match="does not fit"):
        load_model(wrong)
    with pytest.raises(OmnisegInputError, match="bundled"):
        load_model(tmp_path / "missing.pt")


def test_half_precision_checkpoint_loads_into_float32(tmp_path):
    model = OmniSegPlus(width=0.25).eval()
    path = save_checkpoint(model, tmp_path / "h.pt", half=True, width=0.25)
    loaded = load_model(path, device="cpu")
    assert next(loaded.parameters()).dtype == torch.float32
    assert read_metadata(path)["stored_as"] == "float16"
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a = model(x, torch.tensor([2]), torch.tensor([0]))
        b = loaded(x, torch.tensor([2]), torch.tensor([0]))
    assert (a - b).abs().max() < 0.05 * a.abs().max()


def test_half_copy_keeps_metadata(tmp_path):
    from napari_omniseg.checkpoints import save_half_copy

    src = save_checkpoint(OmniSegPlus(width=0.25), tmp_path / "f.pt", width=0.25,
                          trained_on="x", steps=7)
    dst = save_half_copy(src, tmp_path / "h.pt")
    meta = read_metadata(dst)
    assert meta["steps"] == 7 and meta["trained_on"] == "x" and meta["stored_as"] == "float16"
    assert dst.stat().st_size < 0.6 * src.stat().st_size


def test_thresholds_fold_into_the_foreground_logit_and_travel_in_the_metadata(tmp_path):
    import json

    model = OmniSegPlus(width=0.25).eval()
    x = torch.rand(2, 3, 32, 32)
    tid, sid = torch.tensor([4, 0]), torch.tensor([1, 1])
    with torch.no_grad():
        raw = model(x, tid, sid).softmax(1)[:, 1]
        model.set_thresholds({"ves": 0.2})
        moved = model(x, tid, sid).softmax(1)[:, 1]
    # cutting the moved vessel probability at 0.5 is cutting the raw one at 0.2; dt untouched
    assert torch.equal(moved[0] > 0.5, raw[0] > 0.2) and torch.allclose(moved[1], raw[1])
    assert model.thresholds() == {"ves": 0.2}
    assert set(model.state_dict()) == set(OmniSegPlus(width=0.25).state_dict())  # same layout
    path = save_checkpoint(model, tmp_path / "t.pt")
    assert read_metadata(path)["thresholds"] == {"ves": 0.2}
    assert load_model(path, device="cpu").thresholds() == {"ves": 0.2}
    for bad in ({"ves": 1.0}, {"ves": "low"}, {"kidney": 0.3}):
        with pytest.raises(ValueError):
            model.set_thresholds(bad)
    # a damaged threshold in a file is one sentence, not a traceback
    blob = torch.load(path, weights_only=False)
    blob["metadata"] = json.dumps({**json.loads(blob["metadata"]), "thresholds": {"ves": 7}})
    torch.save(blob, tmp_path / "damaged.pt")
    with pytest.raises(OmnisegInputError, match="metadata is damaged"):
        load_model(tmp_path / "damaged.pt")
