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


def test_run_finetune_trains_a_copy_and_saves_it_with_its_options(tmp_path):
    torch.manual_seed(0)
    base = OmniSegPlus(width=0.25)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    img, mask = blobs()
    train = [annotation_from_layers(img, mask, "ptc", 40, annotated=True, name="discs")]
    options = FinetuneOptions(minutes=0.05, seed=3)
    result = run_finetune(TASKS["renal"], base, "tiny", train, None, tmp_path / "ft.pt", options)
    assert result.steps > 0
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # a copy
    meta = read_metadata(tmp_path / "ft.pt")
    assert meta["options"] == {"minutes": 0.05, "lr": None, "semi_supervised": False,
                               "seed": 3, "synthetic": 0, "stains": [],
                               "validate_every": None}
    assert meta["base_model"] == "tiny" and meta["tissues_trained"] == ["ptc"]


def test_options_a_task_does_not_offer_are_refused(tmp_path):
    from napari_omniseg.nets.conemos import CoNeMOS

    torch.manual_seed(0)
    save_checkpoint(CoNeMOS(), tmp_path / "f.pt")
    for options in (FinetuneOptions(semi_supervised=True), FinetuneOptions(synthetic=2)):
        with pytest.raises(OmnisegInputError, match="kidney patches only"):
            run_finetune(TASKS["fetal"], None, "f", [], None, tmp_path / "o.pt", options)
    assert not (tmp_path / "o.pt").exists()
