"""Files appear complete or not at all, and two runs never write into one folder at once."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_omniseg.errors import OmnisegInputError
from napari_omniseg.io.atomic import LOCK_NAME, output_folder, partial_path, written_atomically


def test_temporary_names_are_unique_hidden_and_keep_the_extension(tmp_path):
    a, b = partial_path(tmp_path / "m.nii.gz"), partial_path(tmp_path / "m.nii.gz")
    assert a != b and a.parent == tmp_path
    assert a.name.startswith(".") and a.name.endswith(".nii.gz")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(OSError), written_atomically(target) as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_full_disk_while_saving_a_checkpoint_leaves_nothing(tmp_path, monkeypatch):
    """The checkpoint is serialised in memory and written as bytes, so a full disk is the
    OS's own sentence (torch's writer said "[enforce fail at inline_container.cc]")."""
    from napari_omniseg.checkpoints import save_checkpoint
    from napari_omniseg.nets.conemos import CoNeMOS

    def full_disk(path, data):
        with open(path, "wb") as fh:
            fh.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        save_checkpoint(CoNeMOS(), tmp_path / "c.pt")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_while_writing_nifti_leaves_nothing(tmp_path, monkeypatch):
    import nibabel as nib

    from napari_omniseg.io.export import save_nifti

    real = nib.save

    def full_disk(img, name):
        real(img, name)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nib, "save", full_disk)
    with pytest.raises(OSError):
        save_nifti(np.zeros((4, 4, 4)), np.eye(4), tmp_path / "m.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_held_by_a_live_run_is_refused(tmp_path):
    with output_folder(tmp_path / "out") as out:
        assert (out / LOCK_NAME).is_file()
        with pytest.raises(OmnisegInputError, match="another omniseg run"), output_folder(out):
            pass
    assert not (tmp_path / "out" / LOCK_NAME).exists()  # released


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / LOCK_NAME).write_text(dead)
    with output_folder(tmp_path):
        pass


def test_an_output_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "masks"
    f.write_text("x")
    with pytest.raises(OmnisegInputError, match="is a file, not a folder"), output_folder(f):
        pass


def test_two_segment_runs_into_one_folder(tmp_path, capsys):
    """The second run is told the folder is taken; the first run's files are untouched."""
    from napari_omniseg.cli import main

    out = tmp_path / "out"
    with output_folder(out):  # a first run, still writing
        (out / "summary.json").write_text("first run")
        assert main(["segment", str(tmp_path / "any.tif"), "-o", str(out)]) == 2
        assert main(["segment-volume", str(tmp_path / "v.nii.gz"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("another omniseg run") == 2 and err.count("\n") == 2
    assert (out / "summary.json").read_text() == "first run"
