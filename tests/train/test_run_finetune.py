"""The one fine-tuning entry point that the Fine-tune widget and ``omniseg finetune`` call."""

import pytest
import torch
from test_finetune_renal import blobs

from napari_omniseg.checkpoints import read_metadata, save_checkpoint
from napari_omniseg.errors import OmnisegInputError
from napari_omniseg.nets.omniseg import OmniSegPlus
from napari_omniseg.tasks import TASKS
from napari_omniseg.train.annotations import annotation_from_layers
from napari_omniseg.train.run_finetune import FinetuneOptions, run_finetune


def _tiny_start(name: str = "discs"):
    """A small untrained network, a copy of its weights and one row of painted discs."""
    torch.manual_seed(0)
    base = OmniSegPlus(width=0.25)
    img, mask = blobs()
    rows = [annotation_from_layers(img, mask, "ptc", 40, annotated=True, name=name)]
    return base, {k: v.clone() for k, v in base.state_dict().items()}, rows


def test_run_finetune_trains_a_copy_and_saves_it_with_its_options(tmp_path):
    base, before, train = _tiny_start()
    options = FinetuneOptions(minutes=0.05, seed=3)
    result = run_finetune(TASKS["renal"], base, "tiny", train, None, tmp_path / "ft.pt", options)
    assert result.steps > 0
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # a copy
    meta = read_metadata(tmp_path / "ft.pt")
    assert meta["options"] == {"minutes": 0.05, "lr": None, "semi_supervised": False,
                               "seed": 3, "synthetic": 0, "stains": [],
                               "validate_every": None, "keep_start": 0.0}
    assert meta["base_model"] == "tiny" and meta["tissues_trained"] == ["ptc"]


def test_options_a_task_does_not_offer_are_refused(tmp_path):
    from napari_omniseg.nets.conemos import CoNeMOS

    torch.manual_seed(0)
    save_checkpoint(CoNeMOS(), tmp_path / "f.pt")
    for options in (FinetuneOptions(semi_supervised=True), FinetuneOptions(synthetic=2)):
        with pytest.raises(OmnisegInputError, match="kidney patches only"):
            run_finetune(TASKS["fetal"], None, "f", [], None, tmp_path / "o.pt", options)
    assert not (tmp_path / "o.pt").exists()


def test_keep_start_blends_the_start_back_in_and_scores_the_blend(tmp_path):
    from napari_omniseg.checkpoints import load_model
    from napari_omniseg.train.average import blend_with_start
    from napari_omniseg.train.finetune_renal import evaluate_annotations

    base, start, train = _tiny_start()
    val = _tiny_start("discs val")[2]
    options = FinetuneOptions(minutes=0.05, seed=3, keep_start=0.25)
    run_finetune(TASKS["renal"], base, "tiny", train, None, tmp_path / "ft.pt", options)
    saved = load_model(tmp_path / "ft.pt", device="cpu")
    assert all(torch.equal(start[k], v) for k, v in base.state_dict().items())  # unchanged
    # the saved weights lie a quarter of the way back from the trained ones to the start:
    # undoing the blend gives weights that differ from the start (training moved them)
    moved = 0
    for k, v in saved.state_dict().items():
        if v.is_floating_point():
            trained = (v - 0.25 * start[k]) / 0.75
            moved += int(not torch.allclose(trained, start[k]))
    assert moved > 0
    # with validation rows, the score reported is the blend's (the model saved)
    result = run_finetune(TASKS["renal"], base, "tiny", train, val, tmp_path / "fv.pt",
                          options)
    assert result.best_score == evaluate_annotations(load_model(tmp_path / "fv.pt"),
                                                     val)["mean_dice"]
    assert read_metadata(tmp_path / "ft.pt")["options"]["keep_start"] == 0.25
    # the blend itself, on two known states
    a, b = OmniSegPlus(width=0.25), OmniSegPlus(width=0.25)
    sa, sb = ({k: v.clone() for k, v in m.state_dict().items()} for m in (a, b))
    blend_with_start(a, b, 0.5)
    for k, v in a.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.5 * sa[k] + 0.5 * sb[k])
    for bad in (1.0, -0.1):
        with pytest.raises(OmnisegInputError, match="from 0 to below 1"):
            run_finetune(TASKS["renal"], base, "tiny", train, None, tmp_path / "x.pt",
                         FinetuneOptions(minutes=0.05, keep_start=bad))
    with pytest.raises(OmnisegInputError, match="not the same network"):
        blend_with_start(a, OmniSegPlus(width=0.5), 0.5)
    assert not (tmp_path / "x.pt").exists()
