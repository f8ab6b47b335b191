"""What each task does in training, as direct references (an IDE follows them and the layering
test sees the imports): reading a manifest, annotations from napari layers, batches,
fine-tuning, saving and scoring. The task registry (:mod:`napari_omniseg.tasks`) stays below the
networks and loads none of this; callers above ``train`` look a task's functions up here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..tasks import Task
from . import finetune_fetal, finetune_renal
from .annotations import annotation_from_layers, read_manifest


@dataclass(frozen=True)
class TaskFunctions:
    """One task's training functions.

    Attributes
    ----------
    read_manifest : callable
        ``(path, split_column) -> {split: [annotation, ...]}``.
    annotation_from_layers : callable
        An annotation from an image and a painted Labels layer (the Fine-tune widget's rows).
    make_batches : callable
        ``(annotations, batch, crop, seed) -> iterator`` of training batches.
    finetune : callable
        ``(model, train, val, **engine) -> TrainResult`` on a copy of ``model``.
    save : callable
        ``(result, path, base, train, val, **metadata)``: the fine-tuned checkpoint.
    evaluate : callable
        ``(model, annotations) -> dict``: per-target Dice and 95% Hausdorff.
    """

    read_manifest: Callable
    annotation_from_layers: Callable
    make_batches: Callable
    finetune: Callable
    save: Callable
    evaluate: Callable


FUNCTIONS: dict[str, TaskFunctions] = {
    "renal": TaskFunctions(
        read_manifest=read_manifest,
        annotation_from_layers=annotation_from_layers,
        make_batches=finetune_renal.make_finetune_batches,
        finetune=finetune_renal.finetune,
        save=finetune_renal.save_finetuned,
        evaluate=finetune_renal.evaluate_annotations),
    "fetal": TaskFunctions(
        read_manifest=finetune_fetal.read_volume_manifest,
        annotation_from_layers=finetune_fetal.volume_annotation_from_layers,
        make_batches=finetune_fetal.make_volume_batches,
        finetune=finetune_fetal.finetune_fetal,
        save=finetune_fetal.save_finetuned_fetal,
        evaluate=finetune_fetal.evaluate_volume_annotations),
}


def functions_of(task: Task) -> TaskFunctions:
    """The training functions of ``task``."""
    return FUNCTIONS[task.name]
