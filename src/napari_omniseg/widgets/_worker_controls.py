"""What every dock widget does around its long work: one run at a time, the Run and Stop
buttons, the progress bar and status line, and errors shown to the user instead of lost.

The work is a core function keeping the run contract (:mod:`napari_omniseg.run`): the widget
hands it a ``progress`` that moves the bar and a ``should_stop`` that the Stop button sets.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import OmnisegInputError
from ..run import Progress, ShouldStop, Stopped

_log = logging.getLogger(__name__)

#: ``job(progress, should_stop, emit)``: the work; ``emit(event)`` sends anything else
#: (a validation entry, say) to the widget's ``on_event`` in the GUI thread.
Job = Callable[[Progress, ShouldStop, Callable[[Any], None]], Any]


@dataclass
class _Failure:
    error: Exception


class _Stopped:
    """The job stopped when asked (an exception instance may not be returned: see below)."""


def _forwarding(job: Job, should_stop: ShouldStop) -> Callable[[], Any]:
    """A generator function for napari's ``thread_worker``: ``job`` runs in a thread of its
    own and its progress and events are yielded (so they reach the GUI thread) as they come.
    It returns what ``job`` returns, a :class:`_Failure` or :class:`_Stopped`.

    Errors must not leave the worker as exceptions, nor be returned (superqt raises a returned
    exception instance): superqt takes a ``RuntimeError`` (how
    torch reports most failures, running out of memory among them) for a deleted Qt object,
    drops it and never signals that the run ended, so the widget would wait forever; and
    napari 0.9's task-status hook on the ``errored`` signal raises a TypeError of its own.
    """
    def work():
        events: queue.Queue = queue.Queue()
        box: dict = {}

        def run() -> None:
            try:
                box["result"] = job(lambda d, t, m: events.put(("progress", d, t, m)),
                                    should_stop, lambda e: events.put(("event", e)))
            except Stopped:
                box["result"] = _Stopped()
            except Exception as e:
                if not isinstance(e, OmnisegInputError):
                    _log.exception("%s failed", getattr(job, "__qualname__", "run"))
                box["result"] = _Failure(e)
            finally:
                events.put(None)

        threading.Thread(target=run, daemon=True, name="omniseg-run").start()
        while (ev := events.get()) is not None:
            yield ev
        return box["result"]

    return work


class WorkerControls:
    """Mixin for a dock widget with ``run_button``, ``stop_button``, ``progress`` and ``status``.

    ``worker`` is the running napari worker, or None when idle (so Run is ignored while a run
    is going on); ``run_failed`` and ``run_stopped`` say how the last run ended.
    """

    # the widget that mixes this in makes these controls
    run_button: Any
    stop_button: Any
    progress: Any
    status: Any
    worker: Any = None
    run_failed: bool = False
    run_stopped: bool = False
    _stop_requested: bool = False

    def _launch(self, job: Job, *, status: str, failure: str,
                on_progress: Callable[[int, int, str], None] | None = None,
                on_event: Callable[[Any], None] | None = None,
                on_returned: Callable[[Any], None] | None = None,
                on_finished: Callable[[], None] | None = None,
                hide_progress: bool = True) -> None:
        """Run ``job(progress, should_stop, emit)`` (:data:`Job`; Stop makes ``should_stop()``
        true) in a worker thread, the controls showing it: ``status`` while it runs; a
        failure other than an :class:`~napari_omniseg.errors.OmnisegInputError` is shown
        after the ``failure`` prefix. In the GUI thread, ``on_progress`` gets each report
        (after the bar moved), ``on_event`` each emitted event, ``on_returned`` what the job
        returned (unless it failed or stopped) and ``on_finished`` the end, whatever it was
        (``run_failed``, ``run_stopped``), before the controls go idle and the bar hides
        (unless ``hide_progress`` is False)."""
        def yielded(ev: tuple) -> None:
            if ev[0] == "progress":
                _, done, total, message = ev
                self.progress.max, self.progress.value = total, done
                if message:
                    self.status.value = message
                if on_progress is not None:
                    on_progress(done, total, message)
            elif on_event is not None:
                on_event(ev[1])

        def returned(value: Any) -> None:
            if isinstance(value, _Failure):
                self.run_failed = True
                e = value.error
                self._report(str(e) if isinstance(e, OmnisegInputError) else f"{failure}: {e}")
            elif isinstance(value, _Stopped):
                self.run_stopped = True
            elif on_returned is not None:
                on_returned(value)

        def finished() -> None:
            if on_finished is not None:
                on_finished()
            self.worker = None
            if hide_progress:
                self.progress.visible = False
            self.run_button.enabled, self.stop_button.enabled = True, False

        from napari.qt.threading import thread_worker

        self._stop_requested = False
        worker = thread_worker(_forwarding(job, lambda: self._stop_requested),
                               start_thread=False)()
        self.worker, self.run_failed, self.run_stopped = worker, False, False
        worker.yielded.connect(yielded)
        worker.returned.connect(returned)
        worker.finished.connect(finished)
        self.progress.visible = True
        self.progress.value, self.progress.max = 0, 0  # busy until the first report
        self.run_button.enabled, self.stop_button.enabled = False, True
        self.status.value = status
        worker.start()

    def stop(self) -> None:
        """Ask the running job to stop at its next check (what it keeps is its own rule)."""
        if self.worker is not None:
            self._stop_requested = True
            self.status.value = "stopping..."

    def _report(self, msg: str) -> None:
        """Show ``msg`` in the status line and as a napari error notification."""
        from napari.utils.notifications import show_error

        self.status.value = msg
        show_error(msg)
