"""The base of every dock widget: how it receives the viewer from napari.

napari builds a dock widget from the Plugins menu with one keyword argument at most: the viewer,
passed only to a parameter named ``napari_viewer`` (or annotated with the ``Viewer`` class
itself; the string annotation that ``from __future__ import annotations`` makes is not
recognised, which once left every widget of this plugin unable to open from the menu). Every
widget subclasses :class:`DockWidget`, so the parameter is spelled once, here.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from magicgui.widgets import ComboBox, Container, FileEdit, Label, ProgressBar, PushButton

from ..choices import ModelSource
from ..errors import OmnisegInputError
from ._worker_controls import WorkerControls
from .model_in_use import MODELS_IN_USE


def wrapping_label(value: str = "") -> Label:
    """A label whose long text wraps onto more lines instead of widening the dock (a long
    status sentence once squeezed the canvas for good)."""
    from qtpy.QtCore import QEvent, QObject, Qt
    from qtpy.QtWidgets import QSizePolicy

    label = Label(value=value)
    native = label.native
    native.setWordWrap(True)
    native.setMinimumWidth(40)  # a wrapped label still asks for a long line's width
    native.setAlignment(Qt.AlignLeft | Qt.AlignVCenter)
    native.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)  # the whole row

    def fit(*_: Any) -> None:
        # magicgui's labelled rows do not pass Qt's height-for-width on: the row would keep
        # one line's height and cut the rest off
        native.setMinimumHeight(native.heightForWidth(max(native.width(), 40)))

    class _OnResize(QObject):
        def eventFilter(self, obj: Any, event: Any) -> bool:
            if event.type() == QEvent.Resize:
                fit()
            return False

    native._fit_filter = _OnResize(native)  # kept alive by the label
    native.installEventFilter(native._fit_filter)
    label.changed.connect(fit)
    return label


class DockWidget(WorkerControls, Container):
    """A labelled magicgui container bound to one viewer, with run controls.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer the widget acts on; napari fills it in when the widget is opened from the
        Plugins menu.
    """

    #: The task whose model in use the widget's model choice follows ("" for none).
    task_name = ""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer

    def _run_controls(self, run_text: str) -> list:
        """Run (calls ``start``) and Stop buttons, the progress bar and the status line."""
        self.run_button = PushButton(text=run_text)
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, max=0, visible=False)
        self.status = wrapping_label()
        self.run_button.changed.connect(self._start_told)
        self.stop_button.changed.connect(self.stop)
        return [self.run_button, self.stop_button, self.progress, self.status]

    def _start_told(self, *_: Any) -> None:
        """Run ``start``; whatever it raises reaches the person as one sentence (a widget's
        own checks report their sentences themselves; this catches what they did not foresee)."""
        from ..errors import OmnisegInputError, short_reason

        try:
            self.start()
        except OmnisegInputError as e:
            self._report(str(e))
        except Exception as e:
            import logging

            logging.getLogger(__name__).exception("starting %s failed", type(self).__name__)
            self._report(f"could not start: {short_reason(e)}")

    def _told(self, action: Callable[[], Any]) -> Callable[..., None]:
        """``action`` for a button: its input errors reach the person as one sentence."""
        from ..errors import OmnisegInputError

        def run(*_: Any) -> None:
            try:
                action()
            except OmnisegInputError as e:
                self._report(str(e))

        return run

    def _visible_world_corners(self) -> Any:
        """The view's top-left and bottom-right corners in world coordinates, ``(2, 2)``
        (y, x): what the canvas shows at the camera's centre and zoom."""
        import numpy as np

        v = self.viewer
        # napari >= 0.9 keeps the camera and canvas on the scene/canvas models
        cam = v.scene.camera if hasattr(v, "scene") else v.camera
        size = v.canvas.size if hasattr(v, "canvas") else v._canvas_size
        half = np.asarray(size, float) / cam.zoom / 2  # canvas size is (height, width) px
        cy, cx = cam.center[-2:]
        return np.array([[cy - half[0], cx - half[1]], [cy + half[0], cx + half[1]]])

    @staticmethod
    def _data_box(layer: Any, world: Any, shape: tuple[int, int], empty: str
                  ) -> tuple[int, int, int, int]:
        """The ``(y0, y1, x0, x1)`` pixel box of ``layer`` (``shape`` its level-0 size) that
        holds the world points ``world`` (the view's corners, a shape's vertices), clipped to
        the image; ``empty`` is the sentence when the box misses the image."""
        import numpy as np

        data = np.asarray([layer.world_to_data(p) for p in world])[:, -2:]
        h, w = shape
        y0, x0 = np.floor(data.min(0)).astype(int)
        y1, x1 = np.ceil(data.max(0)).astype(int)
        y0, x0, y1, x1 = max(0, y0), max(0, x0), min(h, y1), min(w, x1)
        if y1 <= y0 or x1 <= x0:
            raise OmnisegInputError(empty)
        return int(y0), int(y1), int(x0), int(x1)

    def _model_choice(self, task: str, bundled: str, file: str = "checkpoint file",
                      in_use: str = "fine-tuned model in use") -> list:
        """The model choice of a widget that runs ``task``'s model: bundled, a checkpoint file
        or the model in use, which it switches to when the user accepts a fine-tuned model."""
        self.task_name = task
        self.model_source = ComboBox(label="model", value=ModelSource.BUNDLED, choices=[
            (bundled, ModelSource.BUNDLED), (file, ModelSource.FILE),
            (in_use, ModelSource.IN_USE)])
        self.model_file = FileEdit(label="checkpoint", filter="*.pt *.pth *.tar", visible=False)
        self.model_source.changed.connect(
            lambda v: setattr(self.model_file, "visible", v == ModelSource.FILE))
        self.follow(MODELS_IN_USE.changed, self._use_fine_tuned)
        return [self.model_source, self.model_file]

    def _use_fine_tuned(self, task: str, name: str) -> None:
        if task == self.task_name:
            self.model_source.value = ModelSource.IN_USE
            self.status.value = f"model in use: {name}"

    def _on_layers_changed(self, slot: Callable) -> None:
        """Call ``slot`` whenever a layer is added to or removed from the viewer."""
        self.viewer.layers.events.inserted.connect(slot)
        self.viewer.layers.events.removed.connect(slot)

    def follow(self, signal: Any, slot: Callable) -> None:
        """Connect ``slot`` to a session-wide psygnal ``signal`` for as long as the widget lives.

        Session-wide signals (the model in use) outlive a closed dock widget or viewer; a
        slot left connected would then touch deleted Qt widgets on the next emission.
        """
        signal.connect(slot)  # psygnal holds a bound method weakly
        # weakly here too: a strong reference would tie the widget into a cycle that only the
        # garbage collector frees, possibly from a worker thread, where deleting Qt widgets aborts
        method = weakref.WeakMethod(slot)

        def drop(*_: Any) -> None:
            alive = method()
            if alive is not None:
                signal.disconnect(alive, missing_ok=True)

        self.native.destroyed.connect(drop)
