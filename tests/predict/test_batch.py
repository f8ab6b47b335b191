import itertools
import json

import numpy as np
import pytest
import tifffile

from napari_omniseg import open_slide
from napari_omniseg.cli import main
from napari_omniseg.predict.batch import segment_slides
from napari_omniseg.simulate.renal import write_renal_slide


def dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2 * (a & b).sum() / max(1, a.sum() + b.sum())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A slide with five of the six tissues (no vessel), its true masks, and a broken file."""
    d = tmp_path_factory.mktemp("batch")
    slide, masks = write_renal_slide(d / "a.ome.tif", 1024, 1024, seed=3,
                                     masks_path=d / "a_masks.ome.tif")
    bad = d / "broken.svs"
    bad.write_text("not a slide")
    with tifffile.TiffFile(masks) as tif:
        truth = tif.series[0].levels[0].asarray() > 0
    return d, "renal", slide, bad, truth


def test_cli_segment_writes_aligned_masks_and_summary(inputs, capsys):
    from napari_omniseg import vocab

    d, _model, slide, bad, truth = inputs
    out = d / "out"
    code = main(["segment", str(slide), str(bad), "--tissue", "ptc", "-o", str(out)])
    assert code == 2  # one slide failed; the other was still done
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["failed"]) == [str(bad)] and "not a TIFF" in summary["failed"][str(bad)]
    res = summary["slides"][str(slide)]["ptc"]
    with tifffile.TiffFile(res["mask"]) as tif:
        levels = [lv.asarray() for lv in tif.series[0].levels]
    s = open_slide(slide)
    assert [lv.shape for lv in levels] == [lv.shape[:2] for lv in s.levels]
    assert dice(levels[0], truth[vocab.tissue("ptc").task_id]) > 0.8  # the capillaries
    assert res["area_mm2"] > 0.001
    assert res["area_mm2"] == pytest.approx(levels[0].sum() * 0.25 ** 2 / 1e6)


def test_local_cluster_runs_slides_as_tasks(inputs):
    from distributed import Client, LocalCluster

    d, model, slide, bad, truth = inputs
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        summary = segment_slides([slide, bad], ["cap"], None, model, d / "cluster",
                                 scheduler=client)
    assert str(slide) in summary["slides"] and str(bad) in summary["failed"]
    mask = tifffile.imread(summary["slides"][str(slide)]["cap"]["mask"])
    assert mask.shape == (1024, 1024)
    assert dice(mask, truth[2]) > 0.8  # the glomerular capsules


def test_files_written_side_by_side_hold_each_tissues_mask(inputs):
    from napari_omniseg import vocab
    from napari_omniseg.checkpoints import load_model
    from napari_omniseg.predict.batch import segment_slide_to_files
    from napari_omniseg.predict.slide import segment_slide

    d, model, slide, _bad, truth = inputs
    model = load_model(model)
    seen = []
    res = segment_slide_to_files(slide, ["all"], None, model, d / "all",
                                 progress=lambda done, total, msg: seen.append((done, total)))
    want = segment_slide(open_slide(slide), ["all"], None, model)
    assert set(res) == set(want) and len(res) == 6
    for code, levels in want.items():
        with tifffile.TiffFile(res[code]["mask"]) as tif:
            written = tif.series[0].levels[0].asarray()
        np.testing.assert_array_equal(written, levels[0].compute())
        t = truth[vocab.tissue(code).task_id]
        if t.any():  # each file holds its own tissue, not a neighbour's
            assert dice(written, t) > 0.75, code
            nested = {"cap", "tuft"}  # the tuft lies inside the capsule
            others = [o for o in want if o != code and not {o, code} <= nested]
            assert all(dice(written, truth[vocab.tissue(o).task_id]) < 0.5 for o in others)
        else:
            assert written.mean() < 0.02, code
    # one bar for all files: it never runs backwards and ends full
    assert all(b[0] >= a[0] for a, b in itertools.pairwise(seen))
    assert seen[-1][0] == seen[-1][1]


def test_slides_sharing_a_file_stem_keep_their_own_masks(inputs, tmp_path):
    """x/a.ome.tif and y/a.tif in one call: two sets of files, each slide's own."""
    import shutil

    from napari_omniseg.predict.batch import output_stems

    assert output_stems(["x/a.ome.tif", "y/a.tif", "z/a.svs", "b.tif"]) == [
        "a", "a-2", "a-3", "b"]
    _d, model, slide, _bad, _truth = inputs
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    first = shutil.copy(slide, tmp_path / "x" / "a.ome.tif")
    flipped = tmp_path / "y" / "a.tif"  # the same slide upside down: a different answer
    tifffile.imwrite(flipped, open_slide(slide).levels[0].compute()[::-1], photometric="rgb",
                     resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER")
    summary = segment_slides([first, flipped], ["ptc"], 40, model, tmp_path / "out")
    a, b = (summary["slides"][str(p)]["ptc"]["mask"] for p in (first, flipped))
    assert a != b and not summary["failed"]
    mask_a, mask_b = tifffile.imread(a), tifffile.imread(b)
    assert dice(mask_b[::-1], mask_a) > 0.9  # each file holds its own slide's answer
    assert dice(mask_b, mask_a) < 0.5


def test_a_full_disk_is_reported_for_that_slide_and_the_batch_goes_on(inputs, tmp_path,
                                                                      monkeypatch, capsys):
    """Not "stopped" (exit 130) as if the user pressed Ctrl-C, and no half-written file."""
    import errno

    import napari_omniseg.io.export as export

    _d, _model, slide, _bad, _truth = inputs
    second = tmp_path / "second.ome.tif"
    second.write_bytes(slide.read_bytes())
    real = export._PyramidWriter._level0_tiles

    def disk_full_for_the_first_slide(self):
        if self.path.name.startswith("a_"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self)

    monkeypatch.setattr(export._PyramidWriter, "_level0_tiles", disk_full_for_the_first_slide)
    out = tmp_path / "out"
    code = main(["segment", str(slide), str(second), "--tissue", "all", "-o", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "error" in line] == [
        "omniseg: error: a.ome.tif failed: [Errno 28] No space left on device"]
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["failed"]) == [str(slide)] and str(second) in summary["slides"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["summary.json", *(f"second_{c}.ome.tif" for c in summary["slides"][str(second)])])


def test_progress_moves_inside_each_slide(inputs, tmp_path):
    """The bar used to sit at 0 for the whole of a slide."""
    _d, model, slide, bad, _truth = inputs
    seen = []
    segment_slides([slide, bad], ["ptc"], None, model, tmp_path / "out",
                   progress=lambda done, total, msg: seen.append((done, total, msg)))
    inside_first = [s for s in seen if 0 < s[0] < 1000]
    assert len(inside_first) >= 3 and all(s[1] == 2000 for s in seen)
    assert all(b[0] >= a[0] for a, b in itertools.pairwise(seen)) and seen[-1][0] == 2000
    assert inside_first[0][2].startswith("a.ome.tif: ")


def test_a_corrupt_jpeg_tile_fails_that_slide_only(inputs, tmp_path, capsys):
    """Found only when the tile is decoded, deep inside the computation."""
    _d, _model, slide, _bad, _truth = inputs
    broken = tmp_path / "broken_tile.ome.tif"
    data = bytearray(slide.read_bytes())
    with tifffile.TiffFile(slide) as tif:
        page = tif.pages.first
        offset, count = page.dataoffsets[1], page.databytecounts[1]  # a 512-px tile
    data[offset + 20: offset + count - 20] = bytes(count - 40)  # the tile's entropy data
    broken.write_bytes(bytes(data))
    out = tmp_path / "out"
    code = main(["segment", str(broken), str(slide), "--tissue", "ptc", "-o", str(out)])
    assert code == 2
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["failed"]) == [str(broken)] and str(slide) in summary["slides"]
    assert summary["failed"][str(broken)].startswith("broken_tile.ome.tif failed:")
    assert not list(out.glob("broken_tile*")) and not list(out.glob(".*partial*"))


def test_stop_ends_the_batch_and_leaves_no_file(inputs, tmp_path):
    from napari_omniseg.run import Stopped

    _d, model, slide, _bad, _truth = inputs
    asked = []
    with pytest.raises(Stopped):  # a stop is not one slide's failure: the batch ends
        segment_slides([slide, slide], ["ptc"], None, model, tmp_path,
                       should_stop=lambda: len(asked.append(1) or asked) > 2)
    # the first slide was complete (2 bands); nothing of the second is left, not even a part
    assert [p.name for p in tmp_path.iterdir()] == ["a_ptc.ome.tif"]


def test_volume_batch_reports_progress_goes_on_after_a_failure_and_stops(tmp_path):
    from napari_omniseg.io.export import save_nifti
    from napari_omniseg.predict.batch import segment_volumes
    from napari_omniseg.run import Stopped
    from napari_omniseg.simulate.fetal import simulate_fetal

    f = simulate_fetal(1, size=32)
    vol = save_nifti(f.volume, f.affine, tmp_path / "v.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_text("not a volume")
    reports = []
    summary = segment_volumes([bad, vol], ("all",), "fetal", tmp_path / "o", flips=False,
                              progress=lambda d, t, m: reports.append((d, t)))
    assert list(summary["failed"]) == [str(bad)] and list(summary["volumes"]) == [str(vol)]
    # the bar moves region by region inside the second volume (its share: 1000 to 2000)
    assert reports[-1] == (2000, 2000) and any(1000 < d < 2000 for d, _ in reports)
    with pytest.raises(Stopped):
        segment_volumes([vol], ("brain",), "fetal", tmp_path / "p", flips=False,
                        should_stop=lambda: True)
    assert not (tmp_path / "p").exists() or list((tmp_path / "p").iterdir()) == []


def test_a_slide_unlike_the_training_data_is_warned_about_and_still_segmented(inputs, tmp_path,
                                                                             capsys):
    from conftest import unfamiliar_renal_checkpoint

    _d, _model, slide, _bad, truth = inputs
    model = unfamiliar_renal_checkpoint(tmp_path / "odd.pt")
    code = main(["segment", str(slide), "--tissue", "ptc", "--model", str(model),
                 "-o", str(tmp_path / "out")])
    assert code == 0  # a warning is not a failure
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(summary["warnings"]) == [str(slide)]
    assert summary["warnings"][str(slide)].startswith("this slide looks unlike what odd.pt")
    assert tifffile.imread(summary["slides"][str(slide)]["ptc"]["mask"]).shape == truth.shape[1:]
    err = capsys.readouterr().err
    assert f"omniseg: warning: {slide.name}: this slide looks unlike" in err


def test_the_bundled_model_does_not_warn_on_a_simulated_slide(inputs):
    d, model, slide, _bad, _truth = inputs
    summary = segment_slides([slide], ["cap"], None, model, d / "familiar")
    assert summary["warnings"] == {} and str(slide) in summary["slides"]
