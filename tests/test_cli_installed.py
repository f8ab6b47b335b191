"""The installed ``omniseg`` command, run as a person runs it from a shell."""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
from pathlib import Path

import pytest

from napari_omniseg.cli import build_parser


def _csv_rows(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list:
    """Every command line that names a (sub-)command, from the parser itself."""
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += _command_paths(sub, (*prefix, name))
    return paths


COMMANDS = _command_paths(build_parser())


def test_every_command_is_listed():
    assert ("segment",) in COMMANDS and ("train", "fetal") in COMMANDS and len(COMMANDS) > 10


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w) or "omniseg")
def test_help_of_the_installed_command(words):
    exe = shutil.which("omniseg")
    assert exe, "the omniseg command is not installed (pip install -e .)"
    out = subprocess.run([exe, *words, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: omniseg" + "".join(f" {w}" for w in words))
    assert out.stderr == ""
    if not words:  # the top level lists every sub-command
        for name in ("simulate", "train", "segment", "segment-volume", "finetune", "evaluate",
                     "info", "export", "quantify"):
            assert f"    {name}" in out.stdout


@pytest.fixture(scope="module")
def slide_and_truth(tmp_path_factory):
    import tifffile

    from napari_omniseg.simulate.renal import write_renal_slide

    d = tmp_path_factory.mktemp("installed")
    slide, masks = write_renal_slide(d / "biopsy.ome.tif", 1024, 1024, seed=3, stain="pas",
                                     masks_path=d / "truth.ome.tif")
    with tifffile.TiffFile(masks) as tif:
        truth = tif.series[0].levels[0].asarray() > 0
    return slide, truth


def _segment_and_check(slide, truth, out, *extra) -> dict:
    import json

    import tifffile

    exe = shutil.which("omniseg")
    run = subprocess.run([exe, "segment", str(slide), "--tissue", "cap", "-o", str(out), *extra],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads(run.stdout) == summary
    res = summary["slides"][str(slide)]["cap"]
    mask = tifffile.imread(res["mask"]) > 0
    cap = truth[2]
    assert 2 * (mask & cap).sum() / (mask.sum() + cap.sum()) > 0.8  # the glomerular capsules
    return summary


def test_installed_command_segments_a_slide(slide_and_truth, tmp_path):
    slide, truth = slide_and_truth
    _segment_and_check(slide, truth, tmp_path / "masks")


def test_installed_command_sends_slides_to_a_scheduler(slide_and_truth, tmp_path):
    from distributed import LocalCluster

    slide, truth = slide_and_truth
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None, protocol="tcp", host="127.0.0.1") as cluster:
        _segment_and_check(slide, truth, tmp_path / "masks", "--scheduler",
                           cluster.scheduler_address)
        assert cluster.scheduler.task_prefixes  # the slide ran as a task of this cluster


def test_a_killed_simulation_leaves_nothing_behind(tmp_path):
    """SIGTERM mid-write: no slide, no temporary file, no scratch folder, no lock."""
    import signal
    import time

    out = tmp_path / "sim"
    proc = subprocess.Popen([shutil.which("omniseg"), "simulate", "renal", "-o", str(out),
                             "--height", "8192", "--width", "4096"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not any(p.name.startswith(".") for p in out.glob("*")) and time.time() < deadline:
        time.sleep(0.2)  # until the temporary files exist
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and b"Traceback" not in err, err.decode()[-1000:]
    assert list(out.iterdir()) == []


def test_a_killed_segmentation_leaves_no_mask_and_releases_the_folder(tmp_path):
    import signal
    import time

    from napari_omniseg.simulate.renal import write_renal_slide

    # big enough that the run is still writing when the signal lands, even on a busy machine
    slide, _ = write_renal_slide(tmp_path / "big.ome.tif", 2048, 3072, seed=4, stain="pas")
    out = tmp_path / "masks"
    proc = subprocess.Popen([shutil.which("omniseg"), "segment", str(slide), "--tissue", "all",
                             "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list(out.glob(".*.partial.*")) and time.time() < deadline:
        time.sleep(0.05)  # until mask files are being written
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and b"Traceback" not in err, err.decode()[-1000:]
    assert list(out.iterdir()) == []  # no mask, no temporary file, no lock


def test_segment_with_geojson_then_export_and_quantify(slide_and_truth, tmp_path):
    """segment --geojson writes a QuPath file beside the masks; export and quantify read the
    masks back, as a person chains them."""
    import json

    from rasterio import features
    from shapely.geometry import shape

    slide, truth = slide_and_truth
    out = tmp_path / "masks"
    summary = _segment_and_check(slide, truth, out, "--geojson")
    geojson = Path(summary["geojson"][str(slide)])
    assert geojson == out / "biopsy.geojson"
    fc = json.loads(geojson.read_text())
    cap_file = summary["slides"][str(slide)]["cap"]["mask"]
    import tifffile

    mask = tifffile.imread(cap_file) > 0
    back = features.rasterize([shape(f["geometry"]) for f in fc["features"]],
                              out_shape=mask.shape) > 0
    assert {f["properties"]["classification"]["name"] for f in fc["features"]} == {"CAP"}
    assert 2 * (mask & back).sum() / (mask.sum() + back.sum()) >= 0.99

    exe = shutil.which("omniseg")
    run = subprocess.run([exe, "export", cap_file, "--format", "csv", "-o", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = _csv_rows(tmp_path / "x" / "biopsy_objects.csv")
    assert len(rows) == len(fc["features"]) and rows[0]["class"] == "CAP"
    run = subprocess.run([exe, "quantify", cap_file, "--slide", str(slide), "-o",
                          str(tmp_path / "q.csv")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    (row,) = _csv_rows(tmp_path / "q.csv")
    assert float(row["area mm2"]) == pytest.approx(mask.sum() * 0.25 ** 2 / 1e6, rel=1e-4)
    assert float(row["objects per mm2 of tissue"]) > 0
