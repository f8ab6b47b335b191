import dask.array as da
import numpy as np
import torch

from napari_omniseg import vocab
from napari_omniseg.checkpoints import load_model, save_checkpoint
from napari_omniseg.io.volumes import Volume
from napari_omniseg.nets.conemos import CoNeMOS
from napari_omniseg.predict.volume import predict_regions, segment_volume


class FakeRegionNet(torch.nn.Module):
    """A stand-in for CoNeMOS: subclasses write ``forward_regions``; the parameter only gives
    the model a device and dtype."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))


class PointwiseRegions(torch.nn.Module):
    """Answers from each voxel alone, so tiling must not change anything."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(4.0))

    def forward_regions(self, v, ids):
        return torch.cat([(v - 0.5) * self.w * (i + 1) for i in ids], 0)


def test_tiled_equals_whole_for_a_pointwise_model():
    rng = np.random.default_rng(0)
    vol = rng.random((40, 50, 36)).astype(np.float32)
    whole = predict_regions(PointwiseRegions(), vol, [0, 3], window=64)
    tiled = predict_regions(PointwiseRegions(), vol, [0, 3], window=32, overlap=8)
    assert whole.shape == (2, 40, 50, 36)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_thick_slice_stacks_tile_along_their_long_axes_only():
    """512 x 512 x 8 is a common clinical stack: one short axis, shorter than the overlap."""
    rng = np.random.default_rng(1)
    vol = rng.random((8, 150, 140)).astype(np.float32)
    whole = predict_regions(PointwiseRegions(), vol, [2], window=160)
    tiled = predict_regions(PointwiseRegions(), vol, [2], window=64, overlap=32)
    assert tiled.shape == (1, 8, 150, 140)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_segment_volume_is_lazy_and_shaped_like_the_volume(tmp_path):
    torch.manual_seed(0)
    path = save_checkpoint(CoNeMOS(), tmp_path / "c.pt")
    model = load_model(path, device="cpu")
    assert read_arch(path) == "conemos"
    vol = Volume(da.from_array(np.random.default_rng(1).random((20, 33, 28))), (3.0, 3.0, 3.0))
    masks = segment_volume(vol, ("all",), model, bf16=False)
    assert list(masks) == ["uterus", "body", "brain", "eyes", "placenta"]
    brain = masks["brain"].compute()
    assert brain.shape == (20, 33, 28) and brain.dtype == np.uint8
    assert set(np.unique(brain)) <= {0, 1}


def read_arch(path):
    from napari_omniseg.checkpoints import read_metadata

    return read_metadata(path)["architecture"]


def test_each_region_runs_once_however_the_masks_are_computed():
    calls = []

    class Counting(FakeRegionNet):
        def forward_regions(self, x, region_ids):
            calls.append(list(region_ids))
            return torch.zeros(len(region_ids), *x.shape[1:]) + self.dummy

    vol = Volume(data=da.from_array(np.random.rand(32, 32, 32).astype(np.float32)),
                 spacing=(1.0, 1.0, 1.0))
    masks = segment_volume(vol, ("all",), model=Counting(), bf16=False, flips=False)
    for m in masks.values():  # one compute per region, as the CLI writes them
        m.compute()
    assert sorted(r for c in calls for r in c) == [0, 1, 2, 3, 4]


class FirstHalfOfZ(FakeRegionNet):
    """Sure of the region in the first half of the z axis of its input, leaning against it
    elsewhere: not mirror-symmetric, so flip averaging changes its answer."""

    def forward_regions(self, x, region_ids):
        z = torch.arange(x.shape[2], dtype=torch.float32)[:, None, None]
        logit = torch.where(z < x.shape[2] / 2, 20.0, -0.5).expand(x.shape[2:])
        return logit[None, None].repeat(len(region_ids), 1, 1, 1, 1) + self.dummy


def test_flip_averaging_is_on_by_default_and_mirrors_the_answer_back():
    vol = Volume(da.zeros((16, 16, 16), np.float32), (1.0, 1.0, 1.0))
    raw = segment_volume(vol, ("brain",), FirstHalfOfZ(), bf16=False, flips=False)["brain"]
    assert raw[:8].compute().all() and not raw[8:].compute().any()
    # mean of 4 passes; only the z-mirrored one, turned back, is sure of the second half
    lean = 1 / (1 + np.exp(0.5))
    prob = predict_regions(FirstHalfOfZ(), np.zeros((16, 16, 16), np.float32), [2], flips=True)
    np.testing.assert_allclose(prob[0, :8], (3 + lean) / 4, atol=1e-5)
    np.testing.assert_allclose(prob[0, 8:], (1 + 3 * lean) / 4, atol=1e-5)
    default = segment_volume(vol, ("brain",), FirstHalfOfZ(), bf16=False)["brain"].compute()
    assert default.all()  # (1 + 3 * lean) / 4 = 0.53 is above the threshold


def test_largest_piece_drops_specks_of_single_piece_regions_only():
    from napari_omniseg.predict.volume import keep_largest_piece

    m = np.zeros((20, 20, 20), np.uint8)
    m[2:10, 2:10, 2:10] = 1
    m[15, 15, 15] = 1  # a speck
    m[10, 10, 10] = 1  # touches the block only at a corner: 26-connected, so it stays
    kept = keep_largest_piece(m)
    assert kept.dtype == np.uint8 and kept.sum() == m.sum() - 1 and kept[15, 15, 15] == 0
    assert not keep_largest_piece(np.zeros_like(m)).any()

    class Blobs(FakeRegionNet):
        """Every region: a block and a speck."""

        def forward_regions(self, x, region_ids):
            out = torch.full((len(region_ids), *x.shape[1:]), -10.0)
            out[:, :, 2:10, 2:10, 2:10] = 10
            out[:, :, 20, 20, 20] = 10
            return out + self.dummy

    vol = Volume(data=da.from_array(np.random.rand(32, 32, 32).astype(np.float32)),
                 spacing=(1.0, 1.0, 1.0))
    # the stand-ins draw at fixed places, which mirrored passes would smear: no flips
    masks = segment_volume(vol, ("all",), model=Blobs(), bf16=False, flips=False)
    assert masks["placenta"].compute()[20, 20, 20] == 0
    assert masks["eyes"].compute()[20, 20, 20] == 0  # outside the body's mask
    raw = segment_volume(vol, ("placenta",), model=Blobs(), bf16=False, clean_up=False, flips=False)
    assert raw["placenta"].compute()[20, 20, 20] == 1


def test_eyes_keep_only_their_pieces_inside_the_body():
    from napari_omniseg.predict.volume import keep_pieces_inside

    body_id = vocab.fetal_region("body").region_id
    asked = []

    class EyesAndBody(FakeRegionNet):
        """Body: a block. Eyes: two globes inside it, one half-out, one far outside."""

        def forward_regions(self, x, region_ids):
            asked.extend(region_ids)
            out = torch.full((len(region_ids), *x.shape[1:]), -10.0)
            for k, rid in enumerate(region_ids):
                if rid == body_id:
                    out[k, :, 4:20, 4:20, 4:20] = 10
                else:
                    out[k, :, 6:8, 6:8, 6:8] = 10     # inside
                    out[k, :, 10:12, 10:12, 6:8] = 10  # another globe inside: both stay
                    out[k, :, 18:22, 12:14, 12:14] = 10  # half inside: stays
                    out[k, :, 27:29, 27:29, 27:29] = 10  # outside the fetus: dropped
            return out + self.dummy

    vol = Volume(data=da.from_array(np.random.rand(32, 32, 32).astype(np.float32)),
                 spacing=(1.0, 1.0, 1.0))
    masks = segment_volume(vol, ("eyes",), model=EyesAndBody(), bf16=False, flips=False)
    assert list(masks) == ["eyes"]  # the body is predicted for the clean-up, not returned
    eyes = masks["eyes"].compute()
    assert body_id in asked
    assert eyes[6, 6, 6] == eyes[10, 10, 6] == eyes[21, 12, 12] == 1 and eyes[28, 28, 28] == 0
    asked.clear()
    raw = segment_volume(vol, ("eyes",), model=EyesAndBody(), bf16=False, clean_up=False,
                         flips=False)
    assert raw["eyes"].compute()[28, 28, 28] == 1 and body_id not in asked
    container = np.zeros((8, 8, 8), np.uint8)
    container[:4] = 1
    piece = np.zeros_like(container)
    piece[3:6, 0, 0] = 1  # a third inside
    assert not keep_pieces_inside(piece, container).any()
    assert keep_pieces_inside(piece, container, fraction=0.3).sum() == 3


def test_non_finite_voxels_are_background_with_a_warning():
    """A NaN block used to make every region empty and an inf block to shrink the brain."""
    import pytest

    from napari_omniseg.errors import OmnisegInputError

    rng = np.random.default_rng(2)
    vol = rng.random((24, 24, 24)).astype(np.float32)
    clean = predict_regions(PointwiseRegions(), vol, [1])
    for bad in (np.nan, np.inf):
        broken = vol.copy()
        broken[:6, :6, :6] = bad
        with pytest.warns(UserWarning, match="216 voxels .* NaN or infinite"):
            got = predict_regions(PointwiseRegions(), broken, [1])
        assert np.isfinite(got).all()
        outside = np.ones(vol.shape, bool)
        outside[:6, :6, :6] = False
        # the rest of the volume is answered as before (the percentiles barely move)
        assert np.abs(got[0][outside] - clean[0][outside]).max() < 0.05
    with pytest.raises(OmnisegInputError, match="no finite voxel"):
        predict_regions(PointwiseRegions(), np.full((8, 8, 8), np.nan, np.float32), [1])


def test_checkpoints_with_non_finite_weights_are_neither_saved_nor_loaded(tmp_path):
    import pytest

    from napari_omniseg.errors import OmnisegInputError

    model = CoNeMOS()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(OmnisegInputError, match="training diverged"):
        save_checkpoint(model, tmp_path / "nan.pt")
    assert list(tmp_path.iterdir()) == []
    state = {k: v.clone() for k, v in model.state_dict().items()}
    import json

    from napari_omniseg.checkpoints import FORMAT
    torch.save({"state_dict": state, "metadata": json.dumps(
        {"format": FORMAT, "architecture": "conemos"})}, tmp_path / "old.pt")
    with pytest.raises(OmnisegInputError, match="NaN or infinite weights"):
        load_model(tmp_path / "old.pt")
