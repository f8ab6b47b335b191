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

from magicgui.widgets import Container

from ._worker_controls import WorkerControls


class DockWidget(WorkerControls, Container):
    """A labelled magicgui container bound to one viewer, with run controls.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer the widget acts on; napari fills it in when the widget is opened from the
        Plugins menu.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer

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
