"""The task registry: one object per modality (kidney slides, fetal MRI) with what the CLI, the
widgets and the checkpoints need to know, so that none of them branches on the modality. It is
data only and loads nothing; each task's training functions are in
:mod:`napari_omniseg.train.task_functions`, a layer above.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import vocab
from .choices import ImageKind
from .errors import OmnisegInputError


@dataclass(frozen=True)
class Task:
    """One modality: ``name`` (``"renal"``, ``"fetal"``, also its bundled model's),
    ``description`` (how a user knows its models), ``bundled_file`` (in the package's
    ``weights/``), the method every model of it ``answers``, the ``conditions`` a user can ask
    for (label, code), how the Fine-tune widget names its data (``data_label``) and what
    annotations are painted on (``image``), fine-tuning's default
    ``lr``, whether it offers ``semi_supervision`` and its default ``finetuned_file``.
    Its training functions: :func:`napari_omniseg.train.task_functions.functions_of`."""

    name: str
    description: str
    bundled_file: str
    answers: str
    conditions: tuple[tuple[str, str], ...]
    data_label: str
    image: ImageKind
    lr: float
    semi_supervision: bool
    finetuned_file: str


TASKS: dict[str, Task] = {
    "renal": Task(
        name="renal", description="a renal (kidney) Omni-Seg+ model",
        bundled_file="omniseg_renal.pt",
        answers="forward_conditions",
        conditions=tuple((t.label, t.code) for t in vocab.TISSUES),
        data_label="kidney slides (RGB images)", image=ImageKind.RGB, lr=1e-3,
        semi_supervision=True, finetuned_file="omniseg_finetuned.pt"),
    "fetal": Task(
        name="fetal", description="a fetal MRI (CoNeMOS) model",
        bundled_file="conemos_fetal.pt", answers="forward_regions",
        conditions=tuple((r.name, r.code) for r in vocab.FETAL_REGIONS),
        data_label="fetal MRI (3D volumes)", image=ImageKind.VOLUME,
        lr=2e-4, semi_supervision=False, finetuned_file="omniseg_fetal_finetuned.pt"),
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
