"""Decision thresholds per tissue, chosen on annotated rows."""

import numpy as np
import pytest
import torch
from conftest import tiny_renal_checkpoint

from napari_omniseg.checkpoints import load_model, read_metadata
from napari_omniseg.errors import OmnisegInputError
from napari_omniseg.nets.omniseg import OmniSegPlus
from napari_omniseg.train.annotations import annotation_from_layers
from napari_omniseg.train.calibrate import calibrate_checkpoint, choose_thresholds


def _rows():
    """A vessel row and a tubule row, each a disc in the middle of a 64 px patch."""
    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 12 ** 2).astype(np.uint8)
    image = np.full((64, 64, 3), 200, np.uint8)
    return [annotation_from_layers(image, disc, code, mag, annotated=True)
            for code, mag in (("ves", 10), ("dt", 10))], disc.astype(bool)


def _probabilities(disc, inside):
    """A stand-in for the network: each tissue's probability, ``inside[tissue_id]`` on the
    disc and 0.05 off it."""
    def predict(model, image, conditions, **kwargs):
        return np.stack([np.where(disc, inside[t], 0.05) for t, _ in conditions])
    return predict


def test_an_unsure_tissue_gets_a_lower_threshold_and_a_sure_one_keeps_half(monkeypatch):
    rows, disc = _rows()
    # vessels found at 0.35 (below 0.5: Dice 0 at 0.5), tubules at 0.9
    monkeypatch.setattr("napari_omniseg.predict.tiling.predict_array",
                        _probabilities(disc, {4: 0.35, 0: 0.9}))
    model = OmniSegPlus(width=0.25).eval()
    model.set_thresholds({"pt": 0.4})
    table = choose_thresholds(model, rows)
    assert table["ves"]["threshold"] == 0.3 and table["ves"]["dice"]["0.5"] == 0
    assert table["ves"]["dice"]["0.3"] == 1 and table["ves"]["patches"] == 1
    assert table["dt"]["threshold"] == 0.5  # every threshold up to 0.7 ties: 0.5 kept
    assert model.thresholds() == {"pt": 0.4}  # the model handed in is left as it was
    # a gain smaller than the margin is not taken
    assert choose_thresholds(model, rows, min_gain=1.01)["ves"]["threshold"] == 0.5
    with pytest.raises(OmnisegInputError, match="strictly between"):
        choose_thresholds(model, rows, grid=(0.0, 0.5))
    with pytest.raises(OmnisegInputError, match="empty"):
        choose_thresholds(model, [])


def test_calibrated_checkpoint_keeps_weights_and_cuts_where_chosen(tmp_path, monkeypatch):
    from test_cli_finetune import write_manifest

    manifest = write_manifest(tmp_path, n_train=2, n_val=1)  # ptc rows
    base = tiny_renal_checkpoint(tmp_path / "base.pt")
    table = calibrate_checkpoint(base, manifest, tmp_path / "cal.pt")
    assert set(table) == {"ptc"} and table["ptc"]["patches"] == 2
    meta = read_metadata(tmp_path / "cal.pt")
    assert "'train' rows of manifest.csv (2 patches)" in meta["calibration"]["rows"]
    assert meta["thresholds"] == ({"ptc": table["ptc"]["threshold"]}
                                  if table["ptc"]["threshold"] != 0.5 else {})
    a, b = load_model(base, device="cpu"), load_model(tmp_path / "cal.pt", device="cpu")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    # a tissue's threshold moved by hand is folded into the file's logits
    b.set_thresholds({"ptc": 0.3})
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        raw = a(x, torch.tensor([5]), torch.tensor([3])).softmax(1)[:, 1]
        cut = b(x, torch.tensor([5]), torch.tensor([3])).softmax(1)[:, 1]
    assert torch.equal(cut > 0.5, raw > 0.3)
    with pytest.raises(OmnisegInputError, match="no 'test' rows"):
        calibrate_checkpoint(base, manifest, tmp_path / "x.pt", split="test")
    assert not (tmp_path / "x.pt").exists()


def test_averaging_keeps_shared_thresholds_and_resets_differing_ones(tmp_path):
    from napari_omniseg.checkpoints import save_checkpoint
    from napari_omniseg.train.average import average_checkpoints

    nets = [OmniSegPlus(width=0.25, thresholds={"ves": 0.3}) for _ in range(3)]
    nets[2].set_thresholds({"ves": 0.4})
    paths = [save_checkpoint(n, tmp_path / f"{i}.pt") for i, n in enumerate(nets)]
    average_checkpoints(paths[:2], tmp_path / "same.pt")
    average_checkpoints(paths[1:], tmp_path / "differ.pt")
    assert read_metadata(tmp_path / "same.pt")["thresholds"] == {"ves": 0.3}
    assert read_metadata(tmp_path / "differ.pt")["thresholds"] == {}
