"""The mean of several models' weights (train/average.py) and ``omniseg train average``."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_renal_checkpoint, unfamiliar_renal_checkpoint

from napari_omniseg.checkpoints import (
    load_model,
    read_metadata,
    resave_checkpoint,
    save_checkpoint,
)
from napari_omniseg.cli import main
from napari_omniseg.errors import OmnisegInputError
from napari_omniseg.nets.omniseg import OmniSegPlus
from napari_omniseg.train.average import average_checkpoints


def _state(path):
    return load_model(path, device="cpu").state_dict()


def test_the_average_holds_the_mean_of_every_weight(tmp_path):
    paths = [tiny_renal_checkpoint(tmp_path / f"m{i}.pt", seed=i) for i in range(3)]
    out = average_checkpoints(paths, tmp_path / "mean.pt")
    states = [_state(p) for p in paths]
    mean = _state(out)
    assert mean.keys() == states[0].keys()
    for k, v in mean.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, sum(s[k] for s in states) / 3)
    # the seeds differ, so the mean is none of the models
    k = next(k for k, v in mean.items() if v.is_floating_point() and v.numel() > 100)
    assert all(not torch.equal(mean[k], s[k]) for s in states)


def test_the_metadata_lists_every_source_and_drops_the_run_only_facts(tmp_path):
    a = save_checkpoint(OmniSegPlus(width=0.25), tmp_path / "a.pt", width=0.25,
                        trained_on="slides A; its 'val' rows never", steps=10, lr=1e-3,
                        batch=8)
    b = resave_checkpoint(unfamiliar_renal_checkpoint(tmp_path / "b0.pt"), tmp_path / "b.pt",
                          lr=5e-4, batch=8)
    meta = read_metadata(average_checkpoints([a, b], tmp_path / "mean.pt", half=True))
    assert meta["batch"] == 8 and "lr" not in meta  # shared recipe fields only
    assert [s["model"] for s in meta["averaged_from"]] == ["a.pt", "b.pt"]
    assert meta["averaged_from"][0]["trained_on"] == "slides A; its 'val' rows never"
    assert "slides A; its 'val' rows never" in meta["trained_on"]
    assert "familiarity" not in meta and "steps" not in meta  # they described one run
    assert meta["stored_as"] == "float16" and meta["width"] == 0.25


def test_models_of_different_widths_or_too_few_are_refused(tmp_path):
    a = tiny_renal_checkpoint(tmp_path / "a.pt")
    wide = save_checkpoint(OmniSegPlus(width=0.5), tmp_path / "wide.pt", width=0.5)
    with pytest.raises(OmnisegInputError, match="not the same network"):
        average_checkpoints([a, wide], tmp_path / "mean.pt")
    with pytest.raises(OmnisegInputError, match="at least two"):
        average_checkpoints([a], tmp_path / "mean.pt")
    assert not (tmp_path / "mean.pt").exists()


def test_the_command_writes_the_average_and_says_what_it_lacks(tmp_path, capsys):
    a = unfamiliar_renal_checkpoint(tmp_path / "a.pt")
    b = tiny_renal_checkpoint(tmp_path / "b.pt", seed=1)
    assert main(["train", "average", str(a), str(b), "-o", str(tmp_path / "m.pt")]) == 0
    out, err = capsys.readouterr()
    assert [s["model"] for s in json.loads(out)["averaged_from"]] == ["a.pt", "b.pt"]
    assert "no familiarity record" in err
    # the output may not be one of the inputs
    assert main(["train", "average", str(a), str(b), "-o", str(a)]) == 2
    assert "omniseg: error:" in capsys.readouterr().err


def test_weights_mix_the_models_in_their_shares_and_bad_weights_are_refused(tmp_path, capsys):
    a = tiny_renal_checkpoint(tmp_path / "a.pt", seed=0)
    b = tiny_renal_checkpoint(tmp_path / "b.pt", seed=1)
    out = average_checkpoints([a, b], tmp_path / "mix.pt", weights=[3, 1])
    sa, sb, mix = _state(a), _state(b), _state(out)
    for k, v in mix.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.75 * sa[k] + 0.25 * sb[k])
    meta = read_metadata(out)
    assert [s["weight"] for s in meta["averaged_from"]] == [0.75, 0.25]
    assert meta["trained_on"].startswith("the weighted mean")
    for bad, says in (([1.0], "1 weights for 2 models"), ([1.0, -1.0], "zero or more"),
                      ([0.0, 0.0], "not all zero")):
        with pytest.raises(OmnisegInputError, match=says):
            average_checkpoints([a, b], tmp_path / "bad.pt", weights=bad)
    assert not (tmp_path / "bad.pt").exists()
    assert main(["train", "average", str(a), str(b), "--weights", "1", "0",
                 "-o", str(tmp_path / "m.pt")]) == 0
    torch.testing.assert_close(_state(tmp_path / "m.pt"), sa)
    capsys.readouterr()
