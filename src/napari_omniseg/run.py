"""The contract every long piece of work keeps: it reports progress and obeys Stop.

A long function takes two optional keywords:

- ``progress(done, total, message)``: called as work advances (``total`` may change between
  calls; a time-budgeted training reports 0-1000);
- ``should_stop()``: polled between units of work (a tile band, a chunk, a training step).

When ``should_stop()`` answers True the function either raises :class:`Stopped` (work whose
partial result is useless, such as a half-written file, which it removes first) or returns
what it has with a ``stopped`` flag (training keeps its best model). Widgets bridge the pair
to napari's progress bar and Stop button, the CLI to tqdm and Ctrl-C.

This module imports nothing from the package: everything may depend on it.
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
