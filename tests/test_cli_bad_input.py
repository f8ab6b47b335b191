"""Bad input and faults in the newer commands (synthesize, train synthesis, finetune --synthetic,
export, quantify, segment --geojson): each case a run of the command it broke, told in one
sentence with exit code 2 and nothing replaced or half-written."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_omniseg.cli import main

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "napari_omniseg" / "sample_data"
HE_SLIDE = SAMPLES / "renal_he.ome.tif"


def painted(path: Path, values=None, dtype=np.uint8, mpp: float = 0.25) -> Path:
    lab = np.zeros((256, 320), dtype)
    lab[40:120, 40:200] = 2 if values is None else values
    tifffile.imwrite(path, lab, resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    return path


def run(args: list, capsys) -> tuple[int, str]:
    """The command's exit code and its error output (argparse's usage error counts as 2)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def told(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("omniseg")]
    assert lines and "Traceback" not in err, err
    for w in words:
        assert w in err, err


# -- silently wrong or destructive ---------------------------------------------------------------

@pytest.mark.parametrize("command", ["synthesize", "export", "quantify"])
def test_an_rgb_scan_given_as_a_mask_is_refused(tmp_path, capsys, command):
    args = {"synthesize": ["synthesize", HE_SLIDE, "--stain", "pas", "-o", tmp_path / "s.ome.tif"],
            "export": ["export", HE_SLIDE, "--format", "geojson", "-o", tmp_path / "ex"],
            "quantify": ["quantify", HE_SLIDE, "-o", tmp_path / "q.csv"]}[command]
    code, err = run(args, capsys)
    told(code, err, "renal_he.ome.tif is an RGB image (a scan), not a label image")
    assert not (tmp_path / "s.ome.tif").exists() and not (tmp_path / "q.csv").exists()
    assert not (tmp_path / "ex" / "renal_he.geojson").exists()


def test_a_stack_of_label_planes_is_refused(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "planes.tif", np.ones((5, 64, 64), np.uint8))
    code, err = run(["synthesize", tmp_path / "planes.tif", "--stain", "pas", "--mpp", "0.25",
                     "-o", tmp_path / "s.ome.tif"], capsys)
    told(code, err, "holds 5 planes")


@pytest.mark.parametrize("value, dtype, shown", [
    (258, np.uint16, "258"), (2**40, np.int64, str(2**40)), (-1, np.int16, "-1")])
def test_label_values_are_checked_not_cast(tmp_path, capsys, value, dtype, shown):
    mask = painted(tmp_path / "m.tif", value, dtype)
    code, err = run(["synthesize", mask, "--stain", "pas", "-o", tmp_path / "s.ome.tif"], capsys)
    told(code, err, f"label values {shown}")
    assert not (tmp_path / "s.ome.tif").exists()


def test_export_never_wraps_a_label_into_another(tmp_path, capsys):
    mask = painted(tmp_path / "m.tif", 2**32 + 2, np.int64)
    code, err = run(["export", mask, "--format", "ome-tiff", "-o", tmp_path / "ex"], capsys)
    told(code, err, "label 4294967298", "cannot hold")
    assert not list((tmp_path / "ex").glob("*.ome.tif"))


def test_masks_of_different_grids_are_not_mixed_in_one_geojson(tmp_path, capsys):
    fine = np.zeros((400, 400), np.uint8)
    fine[100:200, 100:200] = 1
    tifffile.imwrite(tmp_path / "s_ptc.tif", fine, resolution=(1e4 / 0.25, 1e4 / 0.25),
                     resolutionunit="CENTIMETER")
    tifffile.imwrite(tmp_path / "s_dt.tif", fine[::4, ::4], resolution=(1e4, 1e4),
                     resolutionunit="CENTIMETER")
    code, err = run(["export", tmp_path / "s_ptc.tif", tmp_path / "s_dt.tif", "--format",
                     "geojson", "-o", tmp_path / "ex"], capsys)
    told(code, err, "different pixel grids")
    assert not (tmp_path / "ex" / "s.geojson").exists()


@pytest.mark.parametrize("command", ["synthesize", "quantify"])
def test_the_output_may_not_be_an_input(tmp_path, capsys, command):
    mask = painted(tmp_path / "m.tif")
    before = mask.read_bytes()
    args = (["synthesize", mask, "--stain", "pas", "-o", mask] if command == "synthesize"
            else ["quantify", mask, "-o", mask])
    told(*run(args, capsys), "m.tif is also an input")
    assert mask.read_bytes() == before


def test_train_synthesis_refuses_its_manifest_and_one_file_for_two_models(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,mask,tissue,stain,magnification\n")
    told(*run(["train", "synthesis", "--manifest", manifest, "-o", manifest], capsys),
         "also an input")
    assert manifest.read_text().startswith("image,mask")
    told(*run(["train", "synthesis", "--simulated", "1", "-o", tmp_path / "g.pt",
               "--segmenter-out", tmp_path / "g.pt"], capsys), "the same file")


@pytest.mark.parametrize("target", ["fifo", "/dev/full", "folder", "missing folder",
                                    "read-only folder"])
def test_outputs_are_checked_before_any_work(tmp_path, capsys, target):
    mask = painted(tmp_path / "m.tif")
    if target == "fifo":
        out = tmp_path / "pipe.csv"
        os.mkfifo(out)
        words = "not a regular file"
    elif target == "/dev/full":
        out, words = Path("/dev/full"), "not a regular file"
    elif target == "folder":
        out, words = tmp_path, "is a folder"
    elif target == "missing folder":
        out, words = tmp_path / "nodir" / "q.csv", "does not exist"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        out, words = ro / "q.csv", "permission denied"
    told(*run(["quantify", mask, "-o", out], capsys), words)
    if target == "fifo":
        assert Path(out).is_fifo()


def test_train_synthesis_into_a_missing_folder_fails_before_training(tmp_path, capsys):
    import time

    t0 = time.perf_counter()
    told(*run(["train", "synthesis", "--simulated", "1", "-o", tmp_path / "nodir" / "g.pt"],
              capsys), "does not exist")
    assert time.perf_counter() - t0 < 30  # no slide simulated, no step trained


def test_a_single_file_output_is_held_by_one_run(tmp_path, capsys):
    from napari_omniseg.io.atomic import LOCK_NAME

    mask = painted(tmp_path / "m.tif")
    out = tmp_path / "q.csv"
    lock = tmp_path / f".q.csv{LOCK_NAME}"
    lock.write_text(str(os.getppid()))  # a live process holds it
    told(*run(["quantify", mask, "-o", out], capsys), "another omniseg run")
    assert not out.exists()
    lock.write_text("999999999")  # left by a run that was killed: taken over
    code, err = run(["quantify", mask, "-o", out], capsys)
    assert code == 0, err
    assert out.is_file() and not lock.exists()


def test_synthetic_pairs_are_bounded_and_never_negative(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,mask,tissue,stain,magnification\n")
    for n in ("-1", "1000000000"):
        code, err = run(["finetune", "--manifest", manifest, "--synthetic", n, "-o",
                         tmp_path / "ft.pt"], capsys)
        assert code == 2 and "--synthetic" in err and "100000" in err, err


def test_the_share_of_the_start_kept_is_bounded(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,mask,tissue,stain,magnification\n")
    for k in ("-0.1", "1", "nan"):
        code, err = run(["finetune", "--manifest", manifest, "--keep-start", k, "-o",
                         tmp_path / "ft.pt"], capsys)
        assert code == 2 and "--keep-start" in err and "0.95" in err, err


def test_synthetic_pairs_are_made_within_the_budget(monkeypatch):
    """The pairs are made in the first half of the budget, whatever the count asked."""
    import time

    import torch

    from napari_omniseg.nets.pyramid_gan import PyramidGenerator
    from napari_omniseg.train.synthesis import synthetic_annotations

    torch.manual_seed(0)
    g = PyramidGenerator(levels=2, width=4)
    t0 = time.perf_counter()
    made = synthetic_annotations(g, 10_000, ["ptc"], ["pas"], size=64, seconds=1.0)
    assert 1 <= len(made) < 10_000 and time.perf_counter() - t0 < 20


def test_spot_files_that_cannot_be_right_are_told(tmp_path, capsys):
    mask = painted(tmp_path / "m.tif")
    positions = tmp_path / "tissue_positions.csv"
    header = "barcode,in_tissue,array_row,array_col,pxl_row_in_fullres,pxl_col_in_fullres\n"
    positions.write_text("\ufeff" + header + "".join(
        f"AAA{i}-1,1,0,{i},{60 + 10 * i},{60 + 20 * i}\n" for i in range(5)), encoding="utf-8")
    sf = tmp_path / "scalefactors_json.json"
    sf.write_text(json.dumps({"spot_diameter_fullres": 40.0}))
    code, err = run(["quantify", mask, "--spots", positions, "-o", tmp_path / "s.csv"], capsys)
    assert code == 0, err  # Excel's byte-order mark is read past
    sf.write_text(json.dumps({"spot_diameter_fullres": 0}))
    told(*run(["quantify", mask, "--spots", positions, "-o", tmp_path / "s.csv"], capsys),
         "spot diameter of 0")
    sf.write_text(json.dumps({"spot_diameter_fullres": 40.0}))
    positions.write_text(header + "".join(
        f"AAA{i}-1,1,0,{i},{9000 + i},{9000 + i}\n" for i in range(5)))
    told(*run(["quantify", mask, "--spots", positions, "-o", tmp_path / "s2.csv"], capsys),
         "all 5 spots", "outside the slide")
    assert not (tmp_path / "s2.csv").exists()


def test_correlation_tables_with_nan_missing_or_binary_are_told(tmp_path, capsys):
    from napari_omniseg.quantify.spots import correlate

    values = {f"b{i}": float(i) for i in range(6)}
    table = tmp_path / "t.csv"
    table.write_text("barcode,x\n" + "".join(f"b{i},{i * i}\n" for i in range(5)) + "b5,nan\n")
    r = correlate(values, table, "x")
    assert r["spots"] == 5 and np.isfinite(r["pearson"])  # the nan cell is a missing value
    json.dumps(r, allow_nan=False)
    with pytest.raises(Exception, match="does not exist"):
        correlate(values, tmp_path / "none.csv", "x")
    (tmp_path / "bin.csv").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(Exception, match="not a text"):
        correlate(values, tmp_path / "bin.csv", "x")
    table.write_text("barcode,x\n" + "".join(f"b{i},1\n" for i in range(6)))
    with pytest.raises(Exception, match="the same in every"):
        correlate(values, table, "x")


def test_segment_geojson_failure_of_one_slide_is_told_and_the_batch_goes_on(tmp_path, capsys,
                                                                            monkeypatch):
    from conftest import tiny_renal_checkpoint

    import napari_omniseg.quantify.geojson as geojson
    from napari_omniseg.simulate.renal import write_renal_slide

    a, _ = write_renal_slide(tmp_path / "a.ome.tif", 512, 512, seed=1)
    b, _ = write_renal_slide(tmp_path / "b.ome.tif", 512, 512, seed=2)
    real = geojson.write_geojson

    def failing_for_a(target, *args, **kw):
        if Path(target).name == "a.geojson":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(target, *args, **kw)

    monkeypatch.setattr(geojson, "write_geojson", failing_for_a)
    model = tiny_renal_checkpoint(tmp_path / "m.pt")
    code, err = run(["segment", a, b, "--tissue", "cap", "--model", model, "--geojson", "-o",
                     tmp_path / "out"], capsys)
    told(code, err, "a.geojson failed: [Errno 28] No space left on device")
    assert (tmp_path / "out" / "b.geojson").is_file()
    assert (tmp_path / "out" / "summary.json").is_file()


def test_a_huge_sparse_mask_is_refused_at_once(tmp_path, capsys):
    import time
    import zlib

    size, tile = 100_000, 2048
    blank = zlib.compress(np.zeros((tile, tile), np.uint8).tobytes())
    n = (-(-size // tile)) ** 2
    with tifffile.TiffWriter(tmp_path / "sparse.tif", bigtiff=True) as w:
        w.write((blank for _ in range(n)), shape=(size, size), dtype=np.uint8,
                tile=(tile, tile), compression="zlib")
    t0 = time.perf_counter()
    told(*run(["synthesize", tmp_path / "sparse.tif", "--stain", "pas", "--mpp", "0.25", "-o",
               tmp_path / "s.ome.tif"], capsys), "crop the mask")
    assert time.perf_counter() - t0 < 30


# -- library messages that were not one sentence ---------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["synthesize", "{mask}", "--stain", "pas", "--seed", "-1", "-o", "{out}"], "--seed"),
    (["synthesize", "{mask}", "--stain", "pas", "--mpp", "1e-9", "-o", "{out}"], "--mpp"),
    (["train", "synthesis", "--simulated", "-1", "-o", "{out}"], "--simulated"),
    (["train", "synthesis", "--simulated", "1", "--crop", "100000", "-o", "{out}"], "--crop"),
    (["train", "synthesis", "--simulated", "1", "--width", "100000", "-o", "{out}"], "--width"),
    (["train", "synthesis", "--simulated", "1", "--batch", "100000", "-o", "{out}"], "--batch"),
    (["train", "synthesis", "--simulated", "1", "--segmenter-adversarial", "nan", "-o", "{out}"],
     "--segmenter-adversarial"),
    (["train", "synthesis", "--simulated", "1", "--segmenter-adversarial", "inf", "-o", "{out}"],
     "--segmenter-adversarial"),
    (["train", "synthesis", "--simulated", "1", "--segmenter-adversarial", "-5", "-o", "{out}"],
     "--segmenter-adversarial"),
    (["quantify", "{mask}", "--min-area", "nan", "-o", "{out}"], "--min-area"),
    (["export", "{mask}", "--format", "csv", "--min-area", "-3", "-o", "{out}"], "--min-area"),
])
def test_bad_values_are_refused_where_they_are_parsed(tmp_path, capsys, args, words):
    mask = painted(tmp_path / "m.tif")
    args = [a.format(mask=mask, out=tmp_path / "o.out") for a in args]
    code, err = run(args, capsys)
    assert code == 2 and f"argument {words}" in err and "Traceback" not in err, err
    assert not (tmp_path / "o.out").exists()


def test_a_truncated_mask_is_one_sentence(tmp_path, capsys):
    lab = np.zeros((1024, 1024), np.uint8)
    lab[100:900, 100:900] = 3
    tifffile.imwrite(tmp_path / "full.tif", lab, tile=(256, 256), compression="zlib")
    data = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    told(*run(["synthesize", tmp_path / "cut.tif", "--stain", "pas", "--mpp", "0.25", "-o",
               tmp_path / "s.ome.tif"], capsys), "cut.tif is truncated")


@pytest.mark.parametrize("damage, words", [
    ("negative width", "cannot be built"), ("not JSON", "damaged metadata")])
def test_a_damaged_generator_checkpoint_is_one_sentence(tmp_path, capsys, damage, words):
    import torch

    from napari_omniseg.checkpoints import save_checkpoint
    from napari_omniseg.nets.pyramid_gan import PyramidGenerator

    torch.manual_seed(0)
    save_checkpoint(PyramidGenerator(levels=2, width=4), tmp_path / "g.pt")
    blob = torch.load(tmp_path / "g.pt", weights_only=True)
    meta = json.loads(blob["metadata"])
    blob["metadata"] = (json.dumps(dict(meta, width=-4)) if damage == "negative width"
                        else "{not json")
    torch.save(blob, tmp_path / "bad.pt")
    mask = painted(tmp_path / "m.tif")
    told(*run(["synthesize", mask, "--stain", "pas", "--generator", tmp_path / "bad.pt", "-o",
               tmp_path / "s.ome.tif"], capsys), "bad.pt", words)
