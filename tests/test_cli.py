import json

import numpy as np
import pytest
from conftest import write_ome_subifd

from napari_omniseg.cli import main


def test_simulate_renal_then_info(tmp_path, capsys):
    assert main(["simulate", "renal", "-o", str(tmp_path), "--height", "1024", "--width", "1024",
                 "--stain", "pas", "--seed", "3"]) == 0
    out = capsys.readouterr().out.split()
    image = tmp_path / "renal_pas_seed3.ome.tif"
    assert str(image) in out and str(tmp_path / "renal_pas_seed3_masks.ome.tif") in out
    assert main(["info", str(image)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["levels"] == [[1024, 1024], [512, 512], [256, 256], [128, 128]]
    assert info["mpp"] == pytest.approx(0.25) and info["magnification"] == pytest.approx(40)


def test_simulate_renal_with_slit_capillaries(tmp_path):
    from napari_omniseg.simulate.renal import read_renal_masks

    for share, out in (("0", tmp_path / "round"), ("1", tmp_path / "slits")):
        assert main(["simulate", "renal", "-o", str(out), "--height", "512", "--width", "512",
                     "--stain", "pas", "--seed", "3", "--levels", "1", "--ptc-slits", share]) == 0
    ptc = [read_renal_masks(tmp_path / d / "renal_pas_seed3_masks.ome.tif")["ptc"] > 0
           for d in ("round", "slits")]
    assert ptc[1].sum() > 1.5 * ptc[0].sum()  # long slits between the tubules


def test_simulate_renal_with_veins_and_train_renal_takes_the_shapes(tmp_path, monkeypatch):
    import napari_omniseg.train.renal as renal
    from napari_omniseg.simulate.renal_layout import RenalAnatomy

    assert main(["simulate", "renal", "-o", str(tmp_path), "--height", "512", "--width", "512",
                 "--seed", "3", "--levels", "1", "--veins", "1", "--small-vessels", "0.5"]) == 0
    assert (tmp_path / "renal_he_seed3.ome.tif").exists()
    seen = []

    def train_renal(out, recipe, **kwargs):
        seen.append((recipe.anatomy(), recipe.seed))
        raise RuntimeError("stop here")  # nothing to train: only what the command hands on

    monkeypatch.setattr(renal, "train_renal", train_renal)
    assert main(["train", "renal", "-o", str(tmp_path / "m.pt"), "--veins", "0.3",
                 "--ptc-slits", "0.5", "--seed", "2"]) != 0
    assert seen == [(RenalAnatomy(ptc_slits=0.5, veins=0.3), 2)]


def test_simulate_fetal(tmp_path, capsys):
    assert main(["simulate", "fetal", "-o", str(tmp_path), "--count", "2", "--size", "48",
                 "--seed", "7"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    for line in lines:
        for region in line["labelled"]:
            assert region in line
    assert main(["info", lines[0]["volume"]]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "volume" and info["shape_zyx"] == [48, 48, 48]


def test_bad_input_gives_one_line_and_exit_code_2(tmp_path, capsys, image):
    bad = tmp_path / "bad.svs"
    bad.write_text("not a slide")
    good = write_ome_subifd(tmp_path / "good.ome.tif", image)
    assert main(["info", str(bad), str(good)]) == 2  # the good one is still reported
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "not a TIFF file" in captured.err
    assert json.loads(captured.out)["path"] == str(good)


def test_mpp_flag_for_files_without_pixel_size(tmp_path, capsys, image):
    from conftest import write_png

    p = write_png(tmp_path / "x.png", image, mpp=None)
    assert main(["info", str(p), "--mpp", "0.5"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mpp"] == 0.5 and info["magnification"] == pytest.approx(20)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        main(["simulate", "renal", "-o", str(tmp_path), "--stain", "giemsa"])
    with pytest.raises(SystemExit):
        main(["simulate", "renal", "-o", str(tmp_path), "--height", "-5"])
    with pytest.raises(SystemExit):
        main(["simulate", "renal", "-o", str(tmp_path), "--ptc-slits", "1.5"])
    with pytest.raises(SystemExit):
        main(["simulate", "renal", "-o", str(tmp_path), "--veins", "-0.1"])
    with pytest.raises(SystemExit):  # used to run out of memory
        main(["simulate", "renal", "-o", str(tmp_path), "--height", "1000000000"])


def test_segment_volume_round_trip(tmp_path, capsys):
    """The bundled model on a phantom written with a shifted affine: the mask
    file keeps the affine and lands on the brain (a flipped or transposed mask would not)."""
    import nibabel as nib

    from napari_omniseg.io.export import save_nifti
    from napari_omniseg.simulate.fetal import simulate_fetal

    f = simulate_fetal(seed=3)
    affine = np.array([[3.0, 0, 0, -10], [0, 3.0, 0, 5], [0, 0, 3.0, 1], [0, 0, 0, 1]])
    # NIfTI axes are (i, j, k) = the volume's (Z, Y, X) reversed
    vol = save_nifti(f.volume, affine, tmp_path / "v.nii.gz")
    flat = save_nifti(np.zeros((1, 20, 16)), affine, tmp_path / "flat.nii.gz")
    code = main(["segment-volume", str(vol), str(flat), "--region", "brain", "--no-flips",
                 "-o", str(tmp_path / "out")])
    assert code == 2
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "2D image" in summary["failed"][str(flat)]
    res = summary["volumes"][str(vol)]["brain"]
    img = nib.load(res["mask"])
    np.testing.assert_allclose(img.affine, nib.load(vol).affine)
    assert img.shape == nib.load(vol).shape
    mask = np.asarray(img.dataobj)
    reread = np.asarray(nib.load(vol).dataobj)
    truth = np.zeros(reread.shape, bool)
    truth[...] = (f.masks["brain"] > 0).transpose(2, 1, 0)  # as the volume was written
    np.testing.assert_allclose(reread, f.volume.transpose(2, 1, 0), rtol=1e-3, atol=1e-3)
    assert 2 * (mask.astype(bool) & truth).sum() / (mask.astype(bool).sum() + truth.sum()) > 0.85
    assert res["volume_ml"] == pytest.approx(mask.sum() * 27 / 1000)


def test_segment_volume_cleans_up_and_flips_unless_told_not_to(tmp_path, monkeypatch):
    import napari_omniseg.predict.volume as volume_module
    from napari_omniseg.io.export import save_nifti

    seen = []
    monkeypatch.setattr(volume_module, "segment_volume", lambda vol, regions, model, **kw:
                        seen.append((kw["clean_up"], kw["flips"])) or {})
    monkeypatch.setattr("napari_omniseg.checkpoints.load_model", lambda ref: None)
    vol = save_nifti(np.zeros((8, 8, 8)), np.eye(4), tmp_path / "v.nii.gz")
    for extra in ([], ["--all-pieces"], ["--no-flips"], ["--flips"], ["--no-clean-up"]):
        assert main(["segment-volume", str(vol), "-o", str(tmp_path / "o"), *extra]) == 0
    assert seen == [(True, True), (False, True), (True, False), (True, True), (False, True)]


def test_a_checkpoint_of_the_other_kind_is_explained(tmp_path, capsys):
    """A fetal checkpoint given to the kidney tools, and a renal one to the fetal tools."""
    from conftest import tiny_renal_checkpoint

    from napari_omniseg.checkpoints import save_checkpoint
    from napari_omniseg.io.export import save_nifti
    from napari_omniseg.nets.conemos import CoNeMOS

    fetal = save_checkpoint(CoNeMOS(), tmp_path / "fetal.pt")
    renal = tiny_renal_checkpoint(tmp_path / "renal.pt")
    slide = write_ome_subifd(tmp_path / "s.ome.tif", np.full((256, 256, 3), 200, np.uint8))
    vol = save_nifti(np.random.default_rng(0).random((16, 16, 16)), np.eye(4),
                     tmp_path / "v.nii.gz")
    assert main(["segment", str(slide), "--model", str(fetal), "-o", str(tmp_path / "a")]) == 2
    assert main(["segment-volume", str(vol), "--model", str(renal), "-o",
                 str(tmp_path / "b")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert errors == [
        "omniseg: error: fetal.pt is a fetal MRI (CoNeMOS) model; this needs a renal (kidney) "
        "Omni-Seg+ model",
        "omniseg: error: renal.pt is a renal (kidney) Omni-Seg+ model; this needs a fetal MRI "
        "(CoNeMOS) model"]


def test_bad_places_and_files_are_one_sentence(tmp_path, capsys):
    """-o naming a file or an unwritable place, --model naming a folder or a text file, a
    scheduler that does not answer: one sentence each, exit 2, no traceback."""
    import os

    taken = tmp_path / "taken"
    taken.write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n" * 5)
    slide = write_ome_subifd(tmp_path / "s.ome.tif", np.full((256, 256, 3), 200, np.uint8))
    calls = [
        (["simulate", "fetal", "-o", str(taken)], "is a file, not a folder"),
        (["segment", str(slide), "-o", str(taken)], "is a file, not a folder"),
        (["segment-volume", str(slide), "-o", str(taken)], "is a file, not a folder"),
        (["segment", str(slide), "--model", str(tmp_path), "-o", str(tmp_path / "a")],
         "is a folder; choose the checkpoint file"),
        (["segment", str(slide), "--model", str(text), "-o", str(tmp_path / "b")],
         "notes.pt is not a PyTorch checkpoint"),
        (["segment", str(slide), "--scheduler", "tcp://127.0.0.1:9", "-o",
          str(tmp_path / "c")], "cannot reach the dask scheduler at tcp://127.0.0.1:9"),
    ]
    if os.geteuid() != 0:  # root writes anywhere
        calls.append((["simulate", "fetal", "-o", str(locked / "x")],
                       "cannot create the output folder"))
    for argv, message in calls:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error" in line]
        assert len(errors) == 1 and message in errors[0], (argv, err)
        assert "Traceback" not in err
