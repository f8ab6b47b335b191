"""The task registry: one object per modality (kidney slides, fetal MRI) with what the CLI, the
widgets and the checkpoints need to know, so that none of them branches on the modality. Its
functions are named ``"module:function"`` and imported when called (a lookup loads nothing).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import vocab
from .errors import OmnisegInputError


@dataclass(frozen=True)
class Task:
    """One modality: ``name`` (``"renal"``, ``"fetal"``, also its bundled model's),
    ``description`` (how a user knows its models), ``bundled_file`` (in the package's
    ``weights/``), the method every model of it ``answers``, the ``conditions`` a user can ask
    for (label, code), how the Fine-tune widget names its data (``data_label``) and what
    annotations are painted on (``image``: ``"rgb"`` or ``"volume"``), fine-tuning's default
    ``lr``, whether it offers ``semi_supervision`` and its default ``finetuned_file``.
    ``functions`` maps a role to ``"module:function"``, called as ``task.<role>(...)``:
    ``read_manifest(path, split_column)``, ``annotation_from_layers``, ``make_batches``,
    ``finetune(model, train, val, **engine)``, ``save(result, path, base, train, val, **kw)``
    and ``evaluate(model, annotations)`` (the scorer)."""

    name: str
    description: str
    bundled_file: str
    answers: str
    conditions: tuple[tuple[str, str], ...]
    data_label: str
    image: str
    lr: float
    semi_supervision: bool
    finetuned_file: str
    functions: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, role: str) -> Callable:
        functions = self.__dict__.get("functions", {})
        if role not in functions:
            raise AttributeError(role)
        module, attr = functions[role].split(":")
        return getattr(importlib.import_module(module), attr)


_TRAIN = "napari_omniseg.train."

TASKS: dict[str, Task] = {
    "renal": Task(
        name="renal", description="a renal (kidney) Omni-Seg+ model",
        bundled_file="omniseg_renal.pt",
        answers="forward_conditions",
        conditions=tuple((t.label, t.code) for t in vocab.TISSUES),
        data_label="kidney slides (RGB images)", image="rgb", lr=1e-3,
        semi_supervision=True, finetuned_file="omniseg_finetuned.pt",
        functions={"read_manifest": _TRAIN + "annotations:read_manifest",
                   "annotation_from_layers": _TRAIN + "annotations:annotation_from_layers",
                   "make_batches": _TRAIN + "finetune:make_finetune_batches",
                   "finetune": _TRAIN + "finetune:finetune",
                   "save": _TRAIN + "finetune:save_finetuned",
                   "evaluate": _TRAIN + "finetune:evaluate_annotations"}),
    "fetal": Task(
        name="fetal", description="a fetal MRI (CoNeMOS) model",
        bundled_file="conemos_fetal.pt", answers="forward_regions",
        conditions=tuple((r.name, r.code) for r in vocab.FETAL_REGIONS),
        data_label="fetal MRI (3D volumes)", image="volume",
        lr=2e-4, semi_supervision=False, finetuned_file="omniseg_fetal_finetuned.pt",
        functions={"read_manifest": _TRAIN + "finetune_fetal:read_volume_manifest",
                   "annotation_from_layers": _TRAIN
                   + "finetune_fetal:volume_annotation_from_layers",
                   "make_batches": _TRAIN + "finetune_fetal:make_volume_batches",
                   "finetune": _TRAIN + "finetune_fetal:finetune_fetal",
                   "save": _TRAIN + "finetune_fetal:save_finetuned_fetal",
                   "evaluate": _TRAIN + "finetune_fetal:evaluate_volume_annotations"}),
}


def task(name: str) -> Task:
    """The task called ``name``."""
    if name not in TASKS:
        raise OmnisegInputError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def task_of_model(model: Any) -> Task | None:
    """The task a loaded model answers (None for a network of no task)."""
    return next((t for t in TASKS.values() if hasattr(model, t.answers)), None)


def task_of_manifest(path: str | os.PathLike) -> Task:
    """The task of a manifest: fetal volumes have a ``region`` column, kidney patches not."""
    from .io.manifest import columns

    path = Path(path)
    if not path.is_file():
        raise OmnisegInputError(f"{path} does not exist")
    return TASKS["fetal"] if "region" in columns(path) else TASKS["renal"]
