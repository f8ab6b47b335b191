"""Visium spots: grid geometry, Space Ranger files, percentages against brute force."""

import json

import numpy as np
import pytest

from napari_omniseg.errors import OmnisegInputError
from napari_omniseg.io.labels import open_labels
from napari_omniseg.quantify.spots import (
    SPOT_DIAMETER_UM,
    Spots,
    correlate,
    hexagonal_spots,
    read_spaceranger_spots,
    spot_percentages,
)


def test_hexagonal_grid_is_55_um_spots_100_um_apart():
    s = hexagonal_spots((4000, 4000), 0.5)
    assert s.diameter == pytest.approx(110)
    pts = np.column_stack([s.rows, s.cols])
    d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1))
    d[d == 0] = np.inf
    np.testing.assert_allclose(d.min(1), 200, rtol=1e-6)  # every spot: neighbours 100 µm away
    assert ((d < 200.5).sum(1) == 6).any()  # hexagonal: six neighbours inside


def brute_force(mask, cy, cx, r):
    yy, xx = np.mgrid[:mask.shape[0], :mask.shape[1]]
    disc = (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= r * r
    return 100 * mask[disc].sum() / disc.sum()


def test_percentages_equal_brute_force_on_a_simulated_slide(renal_masks_file):
    images = open_labels(renal_masks_file)
    spots = hexagonal_spots(images[0].shape, images[0].mpp)
    assert len(spots) > 10
    pct = spot_percentages(images, spots, level=0)
    for im in images:
        mask = np.asarray(im.level0)
        name = im.label_class(1).name
        for i in range(0, len(spots), 25):
            assert pct[name][i] == pytest.approx(
                brute_force(mask, spots.rows[i], spots.cols[i], spots.diameter / 2))


def write_positions(folder, rows, header=True, diameter=130.0):
    lines = (["barcode,in_tissue,array_row,array_col,pxl_row_in_fullres,pxl_col_in_fullres"]
             if header else [])
    lines += [",".join(map(str, r)) for r in rows]
    (folder / "tissue_positions.csv").write_text("\n".join(lines) + "\n")
    (folder / "scalefactors_json.json").write_text(json.dumps(
        {"spot_diameter_fullres": diameter, "tissue_hires_scalef": 0.1}))
    return folder / "tissue_positions.csv"


@pytest.mark.parametrize("header", [True, False])
def test_space_ranger_positions_scaled_to_55_um_and_outside_spots_skipped(tmp_path, header):
    path = write_positions(tmp_path, [("AAA-1", 1, 0, 0, 100, 100), ("CCC-1", 1, 0, 2, 100, 300),
                                      ("GGG-1", 0, 1, 1, 270, 200),
                                      ("TTT-1", 1, 5, 5, 9000, 50)], header=header)
    s = read_spaceranger_spots(path, (1000, 1000))
    assert s.barcodes == ["AAA-1", "CCC-1"] and s.skipped == 1
    assert s.diameter == pytest.approx(130 * SPOT_DIAMETER_UM / 65)


def test_positions_with_wrong_columns_get_one_sentence(tmp_path):
    (tmp_path / "p.csv").write_text("barcode,x,y\nA,1,2\n")
    with pytest.raises(OmnisegInputError, match="lacks the columns"):
        read_spaceranger_spots(tmp_path / "p.csv", (10, 10), mpp=0.25)


def test_correlation_against_a_users_table(tmp_path):
    rng = np.random.default_rng(0)
    ours = {f"B{i}": float(v) for i, v in enumerate(rng.random(30))}
    (tmp_path / "t.csv").write_text(",ptc_fraction\n" + "".join(
        f"B{i},{2 * v + 1}\n" for i, v in enumerate(ours.values())))
    r = correlate(ours, tmp_path / "t.csv", "ptc_fraction")
    assert r["spots"] == 30 and r["pearson"] == pytest.approx(1) and r["spearman"] == 1
    with pytest.raises(OmnisegInputError, match="no column"):
        correlate(ours, tmp_path / "t.csv", "nope")


def test_empty_spots_give_empty_percentages(renal_masks_file):
    images = open_labels(renal_masks_file)
    empty = Spots(np.zeros(0), np.zeros(0), 220.0, [])
    pct = spot_percentages(images, empty)
    assert all(len(v) == 0 for v in pct.values())
