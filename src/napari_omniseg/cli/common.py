"""What every ``omniseg`` command shares: progress bars, Ctrl-C and SIGTERM, held outputs,
batches with a summary."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from .. import vocab
from ..errors import OmnisegInputError
from ..io.atomic import output_file, output_folder, write_text_atomically
from . import args as A

#: The per-tissue minimum object sizes, as the help states them.
MIN_SIZES = ", ".join(f"{code.upper()} {v:g}" for code, v in vocab.MIN_OBJECT_UM2.items())


@contextmanager
def progress_bar(desc: str):
    """A tqdm progress bar for the run contract's ``progress(done, total, message)``, drawn
    from the first report on (bad input found before any work shows its sentence alone)."""
    from tqdm import tqdm

    bars: list = []

    def progress(done: int, total: int, message: str) -> None:
        if not bars:
            bars.append(tqdm(desc=desc, unit="step", file=sys.stderr, leave=True))
        bar = bars[0]
        bar.total, bar.n = total, done
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    try:
        yield progress
    finally:
        for bar in bars:
            bar.close()


def slide_side(text: str) -> int:
    """A slide side in pixels for argparse: 256 to 200,000."""
    v = A.positive_int(text)
    if not 256 <= v <= 200_000:  # 200,000 px at 40x is 5 cm, larger than any glass slide
        raise argparse.ArgumentTypeError(f"must be 256 to 200000 pixels, got {text}")
    return v


def add_anatomy_arguments(parser: argparse.ArgumentParser, note: str = "") -> None:
    """The simulator's optional shapes (``RenalAnatomy``) as ``--ptc-slits``,
    ``--small-vessels`` and ``--veins`` shares; ``note`` ends each help text."""
    for flag, text in (("--ptc-slits", "share of neighbouring simulated tubules with a long slit "
                        "capillary between them, as in real cortex"),
                       ("--small-vessels", "share of simulated arteries drawn small and cut "
                        "obliquely, as in real biopsies"),
                       ("--veins", "share of simulated vessels drawn as thin-walled veins, "
                        "empty or packed with red cells")):
        parser.add_argument(flag, type=A.real(0, 1), default=0.0, help=text + note)


def anatomy_of(args: argparse.Namespace):
    """The ``RenalAnatomy`` of :func:`add_anatomy_arguments`' flags."""
    from ..simulate.renal_layout import RenalAnatomy

    return RenalAnatomy(args.ptc_slits, args.small_vessels, args.veins)


@contextmanager
def ctrl_c_stops(what: str):
    """While inside, the first Ctrl-C asks long work to stop at its next step (it then keeps
    what it has, like the widgets' Stop); a second Ctrl-C interrupts at once. Yields the
    ``should_stop`` callable."""
    import signal

    asked = threading.Event()

    def on_ctrl_c(signum, frame):
        if asked.is_set():
            raise KeyboardInterrupt
        asked.set()
        print(f"\nomniseg: stopping {what} after this step and keeping the best model so far "
              "(Ctrl-C again to abort)", file=sys.stderr)

    with handling(signal.SIGINT, on_ctrl_c):
        yield asked.is_set


@contextmanager
def handling(signum: int, handler: Callable):
    """``handler`` answers signal ``signum`` while inside; the previous handler comes back
    after. Only the main thread receives signals, so elsewhere nothing changes."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, previous)


@contextmanager
def terminate_like_ctrl_c():
    """While inside, a kill (SIGTERM, as a job scheduler sends) cleans up like Ctrl-C:
    temporary files go, the output folder is released."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    with handling(signal.SIGTERM, interrupt):
        yield


def holding_output_folder(command: Callable[[argparse.Namespace], int]
                           ) -> Callable[[argparse.Namespace], int]:
    """``command`` run while it holds its output folder (``-o``): one run at a time."""
    def held(args: argparse.Namespace) -> int:
        with output_folder(args.out):
            return command(args)

    return held


def holding_output_file(*inputs: str, also: str | None = None
                         ) -> Callable[[Callable[[argparse.Namespace], int]],
                                       Callable[[argparse.Namespace], int]]:
    """``command`` run once its output file (``-o``; and the file named by the ``also``
    argument, if given) is checked and held: not one of the ``inputs`` (names of arguments
    holding paths), not a folder or device, in a writable folder, one run at a time. All of it
    before any work starts."""
    def wrap(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        def held(args: argparse.Namespace) -> int:
            given = [getattr(args, name, None) for name in inputs]
            # only files that exist can be overwritten ("hex", a bundled model's name: not)
            paths = [Path(str(p)) for g in given for p in (g if isinstance(g, list) else [g])
                     if p is not None and Path(str(p)).exists()]
            second = getattr(args, also, None) if also else None
            if also and second is not None and Path(second).resolve() == Path(
                    args.out).resolve():
                raise OmnisegInputError(f"--{also.replace('_', '-')} and -o are the same file; "
                                        "give each model its own")
            with output_file(args.out, paths), (
                    output_file(second, [*paths, args.out]) if second is not None
                    else contextlib.nullcontext()):
                return command(args)

        return held

    return wrap


def batch(args: argparse.Namespace, name: str, work: Callable[..., dict]) -> int:
    """Run a batch into the output folder it holds (``work(progress)`` returns the summary),
    write summary.json, print it, then each failure as one line; exit 2 if any failed."""
    with output_folder(args.out), progress_bar(name) as bar:
        summary = work(bar)
        write_text_atomically(args.out / "summary.json", json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    for path, warning in summary.get("warnings", {}).items():
        print(f"omniseg: warning: {Path(path).name}: {warning}", file=sys.stderr)
    for err in summary["failed"].values():
        print(f"omniseg: error: {err}", file=sys.stderr)
    return 2 if summary["failed"] else 0


def print_validation(entry: dict) -> None:
    """Print one validation entry of a training run above the progress bar."""
    from tqdm import tqdm

    tqdm.write(f"step {entry['step']}: loss {entry['loss']}, validation Dice {entry['val_dice']}",
               file=sys.stderr)

