import json

import pytest
import tifffile

from conftest import tiny_renal_checkpoint
from napari_omniseg import open_slide
from napari_omniseg.cli import main
from napari_omniseg.predict.batch import segment_slides
from napari_omniseg.simulate.renal import write_renal_slide


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch")
    ckpt = tiny_renal_checkpoint(d / "tiny.pt")
    slide, _ = write_renal_slide(d / "a.ome.tif", 1024, 1024, seed=2)
    bad = d / "broken.svs"
    bad.write_text("not a slide")
    return d, ckpt, slide, bad


def test_cli_segment_writes_aligned_masks_and_summary(inputs, capsys):
    d, ckpt, slide, bad = inputs
    out = d / "out"
    code = main(["segment", str(slide), str(bad), "--tissue", "ptc", "--model", str(ckpt),
                 "-o", str(out)])
    assert code == 2  # one slide failed; the other was still done
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["failed"]) == [str(bad)] and "not a TIFF" in summary["failed"][str(bad)]
    res = summary["slides"][str(slide)]["ptc"]
    with tifffile.TiffFile(res["mask"]) as tif:
        levels = [lv.asarray() for lv in tif.series[0].levels]
    s = open_slide(slide)
    assert [lv.shape for lv in levels] == [lv.shape[:2] for lv in s.levels]
    assert res["area_mm2"] == pytest.approx(levels[0].sum() * 0.25 ** 2 / 1e6)


def test_local_cluster_runs_slides_as_tasks(inputs):
    from distributed import Client, LocalCluster

    d, ckpt, slide, bad = inputs
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        summary = segment_slides([slide, bad], ["cap"], None, ckpt, d / "cluster",
                                 scheduler=client)
    assert str(slide) in summary["slides"] and str(bad) in summary["failed"]
    mask = summary["slides"][str(slide)]["cap"]["mask"]
    assert tifffile.imread(mask).shape == (1024, 1024)


def test_files_written_side_by_side_hold_each_tissues_mask(inputs):
    import numpy as np

    from napari_omniseg.models import load_model
    from napari_omniseg.predict.batch import segment_slide_to_files
    from napari_omniseg.predict.slide import segment_slide

    d, ckpt, slide, bad = inputs
    model = load_model(ckpt)
    seen = []
    res = segment_slide_to_files(slide, ["all"], None, model, d / "all",
                                 progress=lambda done, total, msg: seen.append((done, total)))
    want = segment_slide(open_slide(slide), ["all"], None, model)
    assert set(res) == set(want) and len(res) == 6
    for code, levels in want.items():
        with tifffile.TiffFile(res[code]["mask"]) as tif:
            np.testing.assert_array_equal(tif.series[0].levels[0].asarray(),
                                          levels[0].compute())
    # one bar for all files: it never runs backwards and ends full
    assert all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))
    assert seen[-1][0] == seen[-1][1]
