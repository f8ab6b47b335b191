"""What every dock widget does around its worker thread: one run at a time, the Run and Stop
buttons, the progress bar and status line, and errors shown to the user instead of lost."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from ..errors import OmnisegInputError

_log = logging.getLogger(__name__)


@dataclass
class _Failure:
    error: Exception


def _returning_errors(work: Callable[..., Generator]) -> Callable[..., Generator]:
    """``work`` with any exception it raises returned as a :class:`_Failure` instead.

    Errors must not leave the worker as exceptions: superqt takes a ``RuntimeError`` (how
    torch reports most failures, running out of memory among them) for a deleted Qt object,
    drops it and never signals that the run ended, so the widget would wait forever; and
    napari 0.9's task-status hook on the ``errored`` signal raises a TypeError of its own.
    """
    @functools.wraps(work)
    def wrapped(*args, **kwargs):
        try:
            return (yield from work(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 (reported to the user by WorkerControls)
            if not isinstance(e, OmnisegInputError):
                _log.exception("%s failed", getattr(work, "__qualname__", "run"))
            return _Failure(e)

    return wrapped


class WorkerControls:
    """Mixin for a dock widget with ``run_button``, ``stop_button``, ``progress`` and ``status``.

    ``worker`` is the running napari worker, or None when idle (so Run is ignored while a run
    is going on); ``run_failed`` says whether the last run ended with an error.
    """

    worker: Any = None
    run_failed: bool = False

    def _launch(self, work: Callable[[], Generator], *, status: str, failure: str,
                progress_max: int,
                on_yielded: Callable[[Any], None],
                on_returned: Callable[[Any], None] | None = None,
                on_finished: Callable[[], None] | None = None,
                hide_progress: bool = True) -> None:
        """Run the generator function ``work`` in a worker thread, the controls showing it.

        Parameters
        ----------
        work : callable
            A generator function: what it yields goes to ``on_yielded`` and what it returns to
            ``on_returned``, in the GUI thread. Stop (``self.worker.quit()``) takes effect at
            its next ``yield``.
        status : str
            The status line while running.
        failure : str
            Prefix of the message shown when the worker raises anything but an
            :class:`~napari_omniseg.errors.OmnisegInputError` (whose message is shown as is).
        on_finished : callable, optional
            Called when the worker ends for any reason (done, stopped or failed: see
            ``run_failed``), before the controls return to idle.
        hide_progress : bool
            Hide the bar when the worker ends.
        """
        def finished() -> None:
            if on_finished is not None:
                on_finished()
            self.worker = None
            if hide_progress:
                self.progress.visible = False
            self.run_button.enabled, self.stop_button.enabled = True, False

        def returned(value: Any) -> None:
            if isinstance(value, _Failure):
                self.run_failed = True
                e = value.error
                self._report(str(e) if isinstance(e, OmnisegInputError) else f"{failure}: {e}")
            elif on_returned is not None:
                on_returned(value)

        from napari.qt.threading import thread_worker

        worker = thread_worker(_returning_errors(work), start_thread=False)()
        self.worker, self.run_failed = worker, False
        worker.yielded.connect(on_yielded)
        worker.returned.connect(returned)
        worker.finished.connect(finished)
        self.progress.visible = True
        self.progress.value, self.progress.max = 0, progress_max
        self.run_button.enabled, self.stop_button.enabled = False, True
        self.status.value = status
        worker.start()

    def _report(self, msg: str) -> None:
        """Show ``msg`` in the status line and as a napari error notification."""
        from napari.utils.notifications import show_error

        self.status.value = msg
        show_error(msg)
