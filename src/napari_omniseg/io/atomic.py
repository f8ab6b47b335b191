"""Files that appear complete or not at all.

Every file the plugin writes is first written under a unique hidden name in the same folder,
then renamed into place: two runs writing the same output never share a temporary file, and
a full disk, an error or a kill never leaves a file under its final name that looks complete
and is not.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def file_stem(path: str | os.PathLike) -> str:
    """The file name without its extension, double ones included: ``a/x.ome.tif`` -> ``x``,
    ``v.nii.gz`` -> ``v``."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif", ".nii.gz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def partial_path(path: str | os.PathLike) -> Path:
    """A unique temporary name beside ``path``, ending in ``path``'s own name.

    The name keeps the extension (nibabel and tifffile choose the format from it) and the
    folder (so the final rename is atomic).
    """
    path = Path(path)
    return path.with_name(f".{uuid.uuid4().hex[:12]}.partial.{path.name}")


@contextmanager
def written_atomically(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on any error it is
    removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = partial_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file."""
    with written_atomically(path) as tmp:
        tmp.write_text(text)
    return Path(path)


LOCK_NAME = ".omniseg.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def check_output_file(path: str | os.PathLike, inputs: Iterable[Any] = ()) -> Path:
    """Refuse, before any work, an output file that cannot or must not be written: a folder, a
    device or pipe (``/dev/full``, a FIFO), one of the command's ``inputs``, or a place in a
    missing or read-only folder.

    Raises
    ------
    OmnisegInputError
        Saying which, in one sentence.
    """
    from ..errors import OmnisegInputError

    path = Path(path)
    if path.is_dir():
        raise OmnisegInputError(f"{path} is a folder; give the output a file name")
    if path.exists() and not path.is_file():
        raise OmnisegInputError(f"{path} is not a regular file (a device or a pipe); give the "
                                "output a file name")
    for given in inputs:
        if given is not None and _same_file(path, Path(str(given))):
            raise OmnisegInputError(f"{path.name} is also an input of this command; writing "
                                    "there would replace it: choose another output")
    folder = path.parent
    if not folder.is_dir():
        raise OmnisegInputError(f"cannot write {path.name}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OmnisegInputError(f"cannot write in {folder} (permission denied); choose another "
                                "place for the output")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _hold(lock: Path, what: str) -> int:
    """Take ``lock`` (a file created exclusively, holding this process's id) for ``what``;
    a lock left by a killed run is taken over. Returns the open descriptor."""
    from ..errors import OmnisegInputError

    for _ in range(2):
        try:
            return os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except PermissionError:
            raise OmnisegInputError(f"cannot write in {lock.parent} (permission denied); "
                                    "choose another place for the output") from None
        except FileExistsError:
            try:
                owner = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and _alive(owner):
                raise OmnisegInputError(
                    f"another omniseg run (process {owner}) is writing to {what}; wait for "
                    "it or choose another output") from None
            lock.unlink(missing_ok=True)  # left by a run that was killed
    # only when two runs take over the same stale lock at once
    raise OmnisegInputError(f"{what} is being taken by another omniseg run; try again")


@contextmanager
def _held(lock: Path, what: str) -> Iterator[None]:
    fd = _hold(lock, what)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


@contextmanager
def output_file(path: str | os.PathLike, inputs: Iterable[Any] = ()) -> Iterator[Path]:
    """Check an output file (:func:`check_output_file`) and hold it for this run: two runs
    writing one file would both report success while one silently replaced the other.

    Raises
    ------
    OmnisegInputError
        When the output is refused, or another live run holds it.
    """
    path = check_output_file(path, inputs)
    with _held(path.with_name(f".{path.name}{LOCK_NAME}"), str(path)):
        yield path


@contextmanager
def output_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Create ``folder`` and hold it for this run: a second run writing there at the same time
    would replace this run's masks while this run's summary still describes them.

    Raises
    ------
    OmnisegInputError
        When another live run holds the folder. A lock left by a run that was killed is taken
        over.
    """
    from ..errors import OmnisegInputError

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OmnisegInputError(f"{folder} is a file, not a folder; choose an output folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OmnisegInputError(f"cannot create the output folder {folder} "
                                f"({e.strerror or e}); choose another place") from None
    with _held(folder / LOCK_NAME, str(folder)):
        yield folder
