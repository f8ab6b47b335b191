"""The models the dock widgets use in this napari session, shared between them.

Fine-tune replaces it only when the user accepts a trained model; Segment offers it as a model
choice and switches to it when it changes.
"""

from __future__ import annotations

from typing import Any

from psygnal import Signal


class ModelInUse:
    """Holds one accepted model and tells listeners when it changes."""

    changed = Signal(str)

    def __init__(self) -> None:
        self.model: Any = None
        self.name: str = ""

    def set(self, model: Any, name: str) -> None:
        """Make ``model`` the one in use; ``name`` is shown to the user."""
        self.model, self.name = model, name
        self.changed.emit(name)


#: The session's renal model in use (Segment, Fine-tune).
MODEL_IN_USE = ModelInUse()
#: The session's fetal model in use (Segment (fetal MRI), Fine-tune on volumes).
FETAL_MODEL_IN_USE = ModelInUse()
