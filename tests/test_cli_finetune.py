"""`omniseg finetune` and `omniseg evaluate` on a manifest like ki-dev's."""

import json

import numpy as np
import skimage.io
from conftest import tiny_renal_checkpoint

from napari_omniseg.checkpoints import read_metadata
from napari_omniseg.cli import main


def write_manifest(folder, n_train=3, n_val=2):
    rows = ["image,mask,tissue,stain,magnification,split"]
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    for i in range(n_train + n_val):
        img = np.zeros((256, 256, 4), np.uint8) + np.array([235, 190, 215, 255], np.uint8)
        mask = np.zeros((256, 256), bool)
        for _ in range(5):
            cy, cx = rng.integers(30, 226, 2)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < 15 ** 2
        img[mask, :3] = (90, 40, 120)
        skimage.io.imsave(folder / f"p{i}.png", img, check_contrast=False)  # RGBA, as ki-dev
        skimage.io.imsave(folder / f"p{i}_mask.png", (mask * 255).astype(np.uint8),
                          check_contrast=False)
        split = "train" if i < n_train else "val"
        rows.append(f"p{i}.png,p{i}_mask.png,ptc,pas,40,{split}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


def test_finetune_then_evaluate(tmp_path, capsys):
    manifest = write_manifest(tmp_path)
    base = tiny_renal_checkpoint(tmp_path / "base.pt")
    out = tmp_path / "ft.pt"
    assert main(["finetune", "--manifest", str(manifest), "--base", str(base), "--minutes",
                 "0.3", "--lr", "3e-3", "-o", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] > 0 and summary["val"]["tissues"]["ptc"]["patches"] == 2
    meta = read_metadata(out)
    assert meta["base_model"] == str(base) and meta["tissues_trained"] == ["ptc"]
    assert main(["evaluate", "--manifest", str(manifest), "--model", str(out),
                 "--split", "val"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores["tissues"]["ptc"]) == {"dice", "hd95_um", "patches"}
    assert scores["tissues"]["ptc"]["dice"] == summary["val"]["tissues"]["ptc"]["dice"]


def test_a_misspelt_split_column_is_refused_not_trained_on(tmp_path, capsys):
    manifest = write_manifest(tmp_path)
    out = tmp_path / "ft.pt"
    for command in (["finetune", "-o", str(out)], ["evaluate", "--split", "val"]):
        assert main([*command, "--manifest", str(manifest), "--split-column", "spilt"]) == 2
        err = capsys.readouterr().err
        assert "has no column 'spilt'" in err and err.count("\n") == 1
    assert not out.exists()


def test_bad_manifest_is_explained(tmp_path, capsys):
    (tmp_path / "m.csv").write_text("image,tissue\nx.png,ptc\n")
    assert main(["evaluate", "--manifest", str(tmp_path / "m.csv")]) == 2
    assert "needs the columns" in capsys.readouterr().err
    manifest = write_manifest(tmp_path, 1, 0)
    (tmp_path / "p0_mask.png").write_text("not a png")
    assert main(["evaluate", "--manifest", str(manifest)]) == 2
    assert "line 2" in capsys.readouterr().err


def write_volume_manifest(folder):
    from napari_omniseg.simulate.fetal import simulate_fetal, write_fetal_nifti

    rows = ["image,mask,region,annotated,split"]
    for seed, split in ((1, "train"), (2, "val")):
        paths = write_fetal_nifti(simulate_fetal(seed, size=32), folder, all_masks=True)
        for region, annotated in (("brain", "yes"), ("eyes", "no")):
            rows.append(f"{paths['volume'].name},{paths[region].name},{region},{annotated},"
                        f"{split}")
    (folder / "volumes.csv").write_text("\n".join(rows) + "\n")
    return folder / "volumes.csv"


def test_finetune_then_evaluate_fetal_volumes(tmp_path, capsys):
    import torch

    from napari_omniseg.checkpoints import save_checkpoint
    from napari_omniseg.nets.conemos import CoNeMOS
    from napari_omniseg.train.finetune_fetal import read_volume_manifest

    manifest = write_volume_manifest(tmp_path)
    splits = read_volume_manifest(manifest)
    brain, eyes = splits["train"]
    assert brain.known.all()  # annotated: unpainted voxels are background
    assert np.array_equal(eyes.known, eyes.mask)  # painted voxels only
    torch.manual_seed(0)
    base = save_checkpoint(CoNeMOS(), tmp_path / "base.pt")
    out = tmp_path / "ft.pt"
    assert main(["finetune", "--manifest", str(manifest), "--base", str(base), "--minutes",
                 "0.1", "-o", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] > 0 and set(summary["val"]["regions"]) == {"brain", "eyes"}
    meta = read_metadata(out)
    assert meta["architecture"] == "conemos" and meta["regions_trained"] == ["brain", "eyes"]
    assert main(["evaluate", "--manifest", str(manifest), "--model", str(out),
                 "--split", "val"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["regions"] == summary["val"]["regions"]


def test_bad_volume_manifest_is_explained(tmp_path, capsys):
    manifest = write_volume_manifest(tmp_path)
    text = manifest.read_text().splitlines()
    manifest.write_text("\n".join([text[0], text[1].replace("brain", "liver")]) + "\n")
    assert main(["evaluate", "--manifest", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "liver" in err
    manifest.write_text("\n".join([text[0], "missing.nii.gz,x.nii.gz,brain,yes,train"]) + "\n")
    assert main(["evaluate", "--manifest", str(manifest)]) == 2
    assert "line 2" in capsys.readouterr().err


def test_semi_supervision_is_refused_for_volumes(tmp_path, capsys):
    manifest = write_volume_manifest(tmp_path)
    assert main(["finetune", "--manifest", str(manifest), "--semi", "--minutes", "0.1",
                 "-o", str(tmp_path / "ft.pt")]) == 2
    assert "--semi" in capsys.readouterr().err
    assert not (tmp_path / "ft.pt").exists()


def test_ctrl_c_keeps_the_model_trained_so_far(tmp_path):
    """The installed command, interrupted once while it trains: the checkpoint is saved."""
    import os
    import re
    import shutil
    import signal
    import subprocess
    import time

    manifest = write_manifest(tmp_path)
    base = tiny_renal_checkpoint(tmp_path / "base.pt")
    out = tmp_path / "ft.pt"
    proc = subprocess.Popen([shutil.which("omniseg"), "finetune", "--manifest", str(manifest),
                             "--base", str(base), "--minutes", "10", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen, deadline = b"", time.time() + 120
    trained = re.compile(rb"\| *[1-9][0-9]*/1000")  # the bar moves once steps are taken
    while not trained.search(seen) and time.time() < deadline:
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (seen + stderr).decode(errors="replace")[-2000:]
    assert b"Traceback" not in seen + stderr
    summary = json.loads(stdout)
    assert summary["stopped"] and summary["steps"] > 0
    assert read_metadata(out)["tissues_trained"] == ["ptc"]


def test_minutes_must_be_finite(tmp_path):
    import pytest

    for bad in ("inf", "nan", "0", "-1"):
        with pytest.raises(SystemExit):
            main(["finetune", "--manifest", str(tmp_path / "m.csv"), "--minutes", bad, "-o",
                  str(tmp_path / "o.pt")])


def test_a_full_disk_when_saving_is_one_sentence_and_leaves_no_file(tmp_path, capsys,
                                                                     monkeypatch):
    import errno
    from pathlib import Path

    manifest = write_manifest(tmp_path)
    base = tiny_renal_checkpoint(tmp_path / "base.pt")

    def full_disk(path, data):
        with open(path, "wb") as fh:  # the disk fills part-way through the checkpoint
            fh.write(b"\0" * 64)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["finetune", "--manifest", str(manifest), "--base", str(base), "--minutes",
                 "0.05", "-o", str(out / "ft.pt")]) == 1
    err = capsys.readouterr().err
    assert err.strip().endswith("omniseg: error: [Errno 28] No space left on device (set "
                                "OMNISEG_DEBUG=1 to see where)")
    assert "Traceback" not in err and list(out.iterdir()) == []


def test_fetal_fine_tuning_on_a_volume_with_nan_voxels_learns_finite_weights(tmp_path, capsys):
    """It used to save an all-NaN checkpoint and exit 0."""
    import pytest
    import torch

    from napari_omniseg.checkpoints import load_model, save_checkpoint
    from napari_omniseg.io.export import save_nifti
    from napari_omniseg.nets.conemos import CoNeMOS
    from napari_omniseg.simulate.fetal import simulate_fetal

    f = simulate_fetal(3, size=32)
    volume = f.volume.copy()
    volume[:8, :8, :8] = np.nan
    save_nifti(volume, f.affine, tmp_path / "v.nii.gz")
    save_nifti(f.masks["brain"], f.affine, tmp_path / "brain.nii.gz", np.uint8)
    (tmp_path / "m.csv").write_text("image,mask,region\nv.nii.gz,brain.nii.gz,brain\n")
    torch.manual_seed(0)
    save_checkpoint(CoNeMOS(), tmp_path / "base.pt")
    with pytest.warns(UserWarning, match="512 voxels .* NaN or infinite"):
        code = main(["finetune", "--manifest", str(tmp_path / "m.csv"), "--base",
                     str(tmp_path / "base.pt"), "--minutes", "0.05", "-o",
                     str(tmp_path / "ft.pt")])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] > 0
    model = load_model(tmp_path / "ft.pt", device="cpu")  # refuses non-finite weights
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_finetune_with_synthetic_pairs_records_them(tmp_path, capsys):
    import torch

    from napari_omniseg.checkpoints import save_checkpoint
    from napari_omniseg.nets.pyramid_gan import PyramidGenerator

    manifest = write_manifest(tmp_path, n_train=2, n_val=1)
    base = tiny_renal_checkpoint(tmp_path / "base.pt")
    torch.manual_seed(0)
    gen = save_checkpoint(PyramidGenerator(levels=3, width=8), tmp_path / "g.pt") or (
        tmp_path / "g.pt")
    out = tmp_path / "ft.pt"
    assert main(["finetune", "--manifest", str(manifest), "--base", str(base), "--minutes",
                 "0.1", "--synthetic", "2", "--generator", str(gen), "-o", str(out)]) == 0
    meta = read_metadata(out)
    assert meta["synthetic_pairs"] == 2 and meta["generator"] == str(gen)
    capsys.readouterr()
    # a segmenter is not a generator: one sentence, nothing written
    assert main(["finetune", "--manifest", str(manifest), "--base", str(base), "--minutes",
                 "0.2", "--synthetic", "2", "--generator", str(base), "-o",
                 str(tmp_path / "no.pt")]) == 2
    assert "not a histology generator" in capsys.readouterr().err
    assert not (tmp_path / "no.pt").exists()


def test_ctrl_c_keeps_the_model_of_every_training_command(tmp_path):
    """``omniseg train fetal`` (as every train command), interrupted once: saved, exit 130."""
    import os
    import re
    import shutil
    import signal
    import subprocess
    import time

    from napari_omniseg.checkpoints import load_model

    out = tmp_path / "fetal.pt"
    proc = subprocess.Popen([shutil.which("omniseg"), "train", "fetal", "--volumes", "2",
                             "--crop", "32", "--batch", "1", "--minutes", "20", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen, deadline = b"", time.time() + 180
    trained = re.compile(rb"step [1-9]")  # the bar says steps are being taken
    while not trained.search(seen) and time.time() < deadline:
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (seen + stderr).decode(errors="replace")[-2000:]
    assert b"Traceback" not in seen + stderr
    recipe = json.loads(stdout)
    assert recipe["stopped"] and recipe["steps"] > 0
    assert read_metadata(out)["stopped"] is True and load_model(out, device="cpu") is not None


def test_evaluate_runs_the_robot_user(tmp_path, capsys):
    manifest = write_manifest(tmp_path, n_train=0, n_val=2)
    base = tiny_renal_checkpoint(tmp_path / "base.pt")
    assert main(["evaluate", "--manifest", str(manifest), "--model", str(base),
                 "--robot-strokes", "3"]) == 0
    robot = json.loads(capsys.readouterr().out)["robot"]
    assert robot["strokes"] == [0, 1, 2, 3] and len(robot["mean_dice"]) == 4
    assert list(robot["per_tissue"]) == ["ptc"] and robot["patches"] == 2
    assert set(robot["latency_s"]) == {"median", "max"}
    # strokes learned on the patch help it: three strokes find more of the blobs
    assert robot["mean_dice"][-1] > robot["mean_dice"][0]


def test_calibrate_writes_thresholds_and_explains_bad_input(tmp_path, capsys):
    manifest = write_manifest(tmp_path)
    base = tiny_renal_checkpoint(tmp_path / "base.pt")
    out = tmp_path / "cal.pt"
    assert main(["train", "calibrate", str(base), "--manifest", str(manifest), "-o",
                 str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tissues"]["ptc"]["patches"] == 3  # the train rows, not val
    assert read_metadata(out)["calibration"]["tissues"] == summary["tissues"]
    assert main(["train", "calibrate", str(base), "--manifest", str(manifest), "--split",
                 "tset", "-o", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "no 'tset' rows" in err and err.count("\n") == 1
    assert main(["train", "calibrate", str(base), "--manifest", str(manifest), "-o",
                 str(base)]) == 2  # never over its own input
    assert "omniseg:" in capsys.readouterr().err
