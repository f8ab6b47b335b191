"""Files that appear complete or not at all.

Every file the plugin writes is first written under a unique hidden name in the same folder,
then renamed into place: two runs writing the same output never share a temporary file, and
a full disk, an error or a kill never leaves a file under its final name that looks complete
and is not.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
    lock = folder / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except PermissionError:
            raise OmnisegInputError(f"cannot write in {folder} (permission denied); choose "
                                    "another output folder") from None
        except FileExistsError:
            try:
                owner = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and _alive(owner):
                raise OmnisegInputError(
                    f"another omniseg run (process {owner}) is writing to {folder}; wait for "
                    "it or choose another output folder") from None
            lock.unlink(missing_ok=True)  # left by a run that was killed
    else:  # pragma: no cover (two runs taking over the same stale lock at once)
        raise OmnisegInputError(f"{folder} is being taken by another omniseg run; try again")
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield folder
    finally:
        lock.unlink(missing_ok=True)
