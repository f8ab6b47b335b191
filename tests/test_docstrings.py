"""The public API documents every parameter and what it returns (numpydoc's validator): the
names ``napari_omniseg`` exports and the one entry point of each capability, which the widgets
and the commands call."""

from __future__ import annotations

import inspect

import pytest

numpydoc_validate = pytest.importorskip("numpydoc.validate")

import napari_omniseg  # noqa: E402

#: Each capability's entry point (docs/architecture.md, "How to add a capability").
ENTRY_POINTS = (
    "napari_omniseg.predict.batch.segment_slides",
    "napari_omniseg.predict.batch.segment_volumes",
    "napari_omniseg.predict.synthesize_file.synthesize_file",
    "napari_omniseg.quantify.files.export_masks",
    "napari_omniseg.quantify.files.quantify_files",
    "napari_omniseg.train.renal.train_renal",
    "napari_omniseg.train.fetal.train_fetal",
    "napari_omniseg.train.run_finetune.run_finetune",
    "napari_omniseg.train.synthesis.train_generator",
    "napari_omniseg.train.synthesis.training_pairs",
    "napari_omniseg.train.three_player.train_three_player",
)
#: Parameters documented (PR01) and no unknown ones (PR02); a Returns section where something
#: is returned (RT01).
CHECKS = ("PR01", "PR02", "RT01")


def _public_functions() -> list[str]:
    names = []
    for name in napari_omniseg.__all__:
        obj = getattr(napari_omniseg, name)
        if inspect.isfunction(obj):
            names.append(f"{obj.__module__}.{obj.__qualname__}")
    return sorted(names) + list(ENTRY_POINTS)


@pytest.mark.parametrize("name", _public_functions())
def test_public_functions_document_parameters_and_returns(name):
    found = numpydoc_validate.validate(name)
    errors = [f"{code}: {msg}" for code, msg in found["errors"] if code in CHECKS]
    if "RT01" in {code for code, _ in found["errors"]}:
        obj = numpydoc_validate.Validator._load_obj(name)
        if inspect.signature(obj).return_annotation in (None, "None"):
            errors = [e for e in errors if not e.startswith("RT01")]
    assert errors == []
