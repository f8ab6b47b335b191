"""omniseg export and omniseg quantify, in process: outputs, grouping, one-sentence failures."""

import csv
import json

import numpy as np
import pytest
import tifffile

from napari_omniseg.cli import main
from napari_omniseg.io.labels import open_labels


def _csv_rows(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _mask(path, data, mpp=None):
    kw = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"} if mpp else {}
    tifffile.imwrite(path, data, **kw)
    return path


def test_export_every_format_groups_a_slides_masks(tmp_path, capsys):
    a = np.zeros((300, 300), np.uint8)
    a[10:50, 10:50] = 1
    b = np.zeros((300, 300), np.uint8)
    b[100:120, 100:200] = 1
    files = [_mask(tmp_path / "s1_ptc.tif", a, 0.25), _mask(tmp_path / "s1_dt.tif", b, 0.25)]
    for fmt in ("geojson", "csv", "ome-tiff"):
        assert main(["export", *map(str, files), "--format", fmt, "-o", str(tmp_path / fmt)]) == 0
    fc = json.loads((tmp_path / "geojson" / "s1.geojson").read_text())
    assert sorted(f["properties"]["classification"]["name"] for f in fc["features"]) == [
        "DT", "PTC"]
    rows = _csv_rows(tmp_path / "csv" / "s1_objects.csv")
    assert sorted(float(r["Area µm^2"]) for r in rows) == [1600 * 0.0625, 2000 * 0.0625]
    (ptc,) = open_labels(tmp_path / "ome-tiff" / "s1_ptc.ome.tif")
    assert ptc.tissue == "ptc" and ptc.mpp == pytest.approx(0.25)
    np.testing.assert_array_equal(np.asarray(ptc.level0), a)


def test_a_bad_file_is_one_sentence_and_the_batch_goes_on(tmp_path, capsys):
    good = _mask(tmp_path / "s2_cap.tif", np.ones((64, 64), np.uint8), 0.5)
    bad = tmp_path / "s3_cap.tif"
    bad.write_bytes(b"not a tiff")
    code = main(["export", str(bad), str(good), "--format", "geojson", "-o", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("omniseg: error:")]
    assert len(lines) == 1 and "s3_cap.tif" in lines[0] and "Traceback" not in err
    assert (tmp_path / "o" / "s2.geojson").is_file()


def test_export_refuses_to_overwrite_its_input(tmp_path, capsys):
    src = _mask(tmp_path / "s4_ptc.ome.tif", np.ones((32, 32), np.uint8), 0.25)
    assert main(["export", str(src), "--format", "ome-tiff", "-o", str(tmp_path)]) == 2
    assert "overwrite an input" in capsys.readouterr().err
    assert tifffile.imread(src).sum() == 32 * 32


def test_quantify_spots_need_micrometres(tmp_path, capsys):
    src = _mask(tmp_path / "s5_ptc.tif", np.ones((64, 64), np.uint8))
    assert main(["quantify", str(src), "--spots", "hex", "-o", str(tmp_path / "q.csv")]) == 2
    assert "micrometres" in capsys.readouterr().err
    assert not (tmp_path / "q.csv").exists()


def test_quantify_spots_from_space_ranger_and_correlation(tmp_path, capsys):
    mask = np.zeros((2000, 2000), np.uint8)
    mask[:, :1000] = 1  # left half
    src = _mask(tmp_path / "s6_pt.tif", mask, 0.25)
    lines = ["barcode,in_tissue,array_row,array_col,pxl_row_in_fullres,pxl_col_in_fullres"]
    spots = [(f"B{i}", 1, 0, i, 1000, 150 + 100 * i) for i in range(18)] + [
        ("FAR", 1, 9, 9, 5000, 5000)]
    lines += [",".join(map(str, s)) for s in spots]
    (tmp_path / "tissue_positions.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "scalefactors_json.json").write_text('{"spot_diameter_fullres": 260}')
    (tmp_path / "deconv.csv").write_text("barcode,pt\n" + "".join(
        f"B{i},{1.0 if 150 + 100 * i < 1000 else 0.1 * (i % 3)}\n" for i in range(18)))
    code = main(["quantify", str(src), "--spots", str(tmp_path / "tissue_positions.csv"),
                 "--table", str(tmp_path / "deconv.csv"), "--column", "pt",
                 "-o", str(tmp_path / "spots.csv")])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "1 spots lie outside the slide" in out.err
    rows = _csv_rows(tmp_path / "spots.csv")
    assert len(rows) == 18
    pct = [float(r["PT %"]) for r in rows]
    assert pct[0] == 100 and pct[-1] == 0 and 0 < pct[8] < 100  # B8 straddles the edge
    summary = json.loads(out.out)
    assert summary["correlation"]["pearson"] > 0.8


def test_quantify_table_needs_column_and_spots(tmp_path, capsys):
    src = _mask(tmp_path / "s7_pt.tif", np.ones((64, 64), np.uint8), 0.25)
    assert main(["quantify", str(src), "--table", "x.csv", "-o", str(tmp_path / "q.csv")]) == 2
    assert "go together" in capsys.readouterr().err
