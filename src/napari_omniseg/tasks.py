"""The task registry: one object per modality (kidney slides, fetal MRI) saying everything the
CLI, the widgets and the checkpoints need to know about it, so that none of them branches on
the modality.

The functions of a task are named as ``"module:function"`` and imported when first called:
looking a task up costs nothing (no torch, no scipy).
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
    """One modality.

    Attributes
    ----------
    name : str
        ``"renal"`` or ``"fetal"``; also the name of its bundled model.
    description : str
        How a user knows a model of this task ("a renal (kidney) Omni-Seg+ model").
    architecture : str
        Network of its models (:mod:`napari_omniseg.nets.registry`).
    bundled_file : str
        The bundled checkpoint, inside the package's ``weights/`` folder.
    answers : str
        The method every model of the task has (how a model's task is recognised).
    conditions : tuple of (label, code)
        What a user can ask for: the tissues, or the regions.
    data_label : str
        How the Fine-tune widget names the task's annotated data.
    image : str
        What an annotation is painted on: ``"rgb"`` (2D slide) or ``"volume"`` (3D MRI).
    lr : float
        Default fine-tuning learning rate.
    semi_supervision : bool
        Whether fine-tuning offers pseudo-labels and the consistency loss.
    finetuned_file : str
        Default file name of a fine-tuned model.
    functions : dict
        Role -> ``"module:function"``: ``read_manifest(path, split_column)``,
        ``annotation_from_layers(...)``, ``make_batches(annotations, ...)``,
        ``finetune(model, train, val, **kw)``, ``save(result, path, base, train, val, **kw)``,
        ``evaluate(model, annotations)`` (the scorer).
    """

    name: str
    description: str
    architecture: str
    bundled_file: str
    answers: str
    conditions: tuple[tuple[str, str], ...]
    data_label: str
    image: str
    lr: float
    semi_supervision: bool
    finetuned_file: str
    functions: dict[str, str] = field(default_factory=dict)

    def function(self, role: str) -> Callable:
        """The task's function for ``role`` (imported now)."""
        module, attr = self.functions[role].split(":")
        return getattr(importlib.import_module(module), attr)

    def read_manifest(self, path: str | os.PathLike, split_column: str | None = "split"
                      ) -> dict[str, list]:
        """Annotations listed in a manifest, grouped by split."""
        return self.function("read_manifest")(path, split_column)

    def finetune(self, model: Any, train: list, val: list | None = None, **kw: Any):
        """Fine-tune a copy of ``model`` (see :mod:`napari_omniseg.train.engine`)."""
        if kw.get("semi_supervised") and not self.semi_supervision:
            raise OmnisegInputError(f"semi-supervision applies to kidney patches, not to "
                                    f"{self.name} annotations")
        if not self.semi_supervision:
            kw.pop("semi_supervised", None)
        return self.function("finetune")(model, train, val, **kw)

    def save(self, result: Any, path: str | os.PathLike, base: str, train: list,
             val: list | None = None, **kw: Any) -> Path:
        """Write a fine-tuned model with what it was trained on."""
        if not self.semi_supervision:
            kw.pop("semi_supervised", None)
        return self.function("save")(result, path, base, train, val, **kw)

    def evaluate(self, model: Any, annotations: list) -> dict:
        """Per-condition Dice of ``model`` on annotated data."""
        return self.function("evaluate")(model, annotations)


_TRAIN = "napari_omniseg.train."

TASKS: dict[str, Task] = {
    "renal": Task(
        name="renal", description="a renal (kidney) Omni-Seg+ model",
        architecture="omniseg_plus", bundled_file="omniseg_renal.pt",
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
        name="fetal", description="a fetal MRI (CoNeMOS) model", architecture="conemos",
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
