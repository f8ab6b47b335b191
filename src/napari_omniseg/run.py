"""The contract every long piece of work keeps: it reports progress and obeys Stop.

A long function takes ``progress(done, total, message)``, called as work advances, and
``should_stop()``, polled between units of work (a band, a chunk, a step). Asked to stop, it
raises :class:`Stopped` (after removing a partial file, say) or returns what it has with a
``stopped`` flag (training keeps its best model). Widgets bridge the pair to napari's progress
bar and Stop button, the CLI to tqdm and Ctrl-C. Nothing here imports the package.
"""

from __future__ import annotations

from collections.abc import Callable

#: ``progress(done, total, message)``.
Progress = Callable[[int, int, str], None]
#: ``should_stop() -> bool``.
ShouldStop = Callable[[], bool]


class Stopped(InterruptedError):
    """Work ended because ``should_stop()`` said so (nothing went wrong)."""

    def __init__(self, message: str = "stopped") -> None:
        super().__init__(message)


def check_stop(should_stop: ShouldStop | None) -> None:
    """Raise :class:`Stopped` when ``should_stop`` is given and answers True."""
    if should_stop is not None and should_stop():
        raise Stopped()


def report(progress: Progress | None, done: int, total: int, message: str = "") -> None:
    """Call ``progress`` when one was given."""
    if progress is not None:
        progress(done, total, message)


def scaled(progress: Progress | None, offset: int, span: int, total: int, prefix: str = ""
           ) -> Progress | None:
    """A ``progress`` for one part of a larger job: the part's own ``done / total`` is mapped
    onto ``[offset, offset + span]`` of the job's ``total`` (e.g. slide 3 of 5, 1000 steps
    each); messages get ``prefix``."""
    if progress is None:
        return None

    def part(done: int, part_total: int, message: str) -> None:
        progress(offset + int(span * done / max(part_total, 1)), total, prefix + message)

    return part
