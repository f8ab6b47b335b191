"""The models the dock widgets use in this napari session: one evented state for all tasks.
Fine-tune sets a task's model when the user accepts a trained one; that task's segmenting
widget switches to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psygnal import Signal

from ..choices import GENERATOR, ModelSource
from ..errors import OmnisegInputError


class ModelsInUse:
    """The accepted model of each task; ``changed(task, name)`` tells listeners."""

    changed = Signal(str, str)

    def __init__(self) -> None:
        self._models: dict[str, tuple[Any, str]] = {}

    def model(self, task: str) -> Any:
        """The task's model in use, or None."""
        return self._models.get(task, (None, ""))[0]

    def name(self, task: str) -> str:
        """How the user knows the task's model in use ("" when none)."""
        return self._models.get(task, (None, ""))[1]

    def set(self, task: str, model: Any, name: str) -> None:
        """Make ``model`` the task's model in use; ``name`` is shown to the user."""
        self._models[task] = (model, name)
        self.changed.emit(task, name)

    def check_choice(self, task: str, source: str, path: Any = None) -> None:
        """Say (raise) what is missing for a widget's model choice, without loading anything:
        no model in use yet, or no checkpoint file chosen."""
        if source == ModelSource.IN_USE and self.model(task) is None:
            raise OmnisegInputError(
                "no generator of yours in use yet: train one in the Fine-tune widget "
                "(train: histology generator) and click 'Use this model'"
                if task == GENERATOR else
                "no fine-tuned model yet: train one in the Fine-tune widget and click "
                "'Use this model'")
        if source == ModelSource.FILE and (not path or not Path(str(path)).is_file()):
            raise OmnisegInputError("choose a checkpoint file, or use the bundled model")

    def chosen(self, task: str, source: str, path: Any = None) -> tuple[Any, str]:
        """The model (and its name) a widget's choice names: ``source`` is a
        :class:`~napari_omniseg.choices.ModelSource` (a file: ``path``). Loading a file or the
        bundled model takes up to seconds: call it from a worker thread."""
        from ..checkpoints import load_model

        self.check_choice(task, source, path)
        if source == ModelSource.IN_USE:
            return self.model(task), self.name(task)
        if source == ModelSource.FILE:
            return load_model(path), str(path)
        return load_model(task), f"bundled {task} model"


#: The session's models in use, by task name.
MODELS_IN_USE = ModelsInUse()
