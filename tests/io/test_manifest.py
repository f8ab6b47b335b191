"""Manifests as spreadsheets write them, and the mistakes people make in them."""

import pytest

from napari_omniseg.errors import OmnisegInputError
from napari_omniseg.io.manifest import columns, number, read_rows

NEED = {"image", "mask", "tissue", "magnification"}


def _write(tmp_path, text, encoding="utf-8"):
    p = tmp_path / "manifest.csv"
    p.write_bytes(text.encode(encoding))
    return p


@pytest.mark.parametrize("text, encoding", [
    ("image,mask,tissue,magnification\na.png,a_m.png,ptc,40\n", "utf-8"),
    ("image,mask,tissue,magnification\r\na.png,a_m.png,ptc,40\r\n", "utf-8-sig"),  # Excel
    ("image;mask;tissue;magnification\na.png;a_m.png;ptc;40\n", "utf-8"),  # semicolons
    ("image, mask, tissue, magnification\na.png, a_m.png , ptc,40\n\n\n", "utf-8"),  # blanks
])
def test_spreadsheet_csv_flavours_read_alike(tmp_path, text, encoding):
    rows = read_rows(_write(tmp_path, text, encoding), NEED)
    assert rows == [(2, {"image": "a.png", "mask": "a_m.png", "tissue": "ptc",
                         "magnification": "40"})]


def test_mistakes_are_one_sentence_naming_the_line(tmp_path):
    with pytest.raises(OmnisegInputError, match="line 3 has 2 values for 4 columns"):
        read_rows(_write(tmp_path, "image,mask,tissue,magnification\na,b,ptc,40\nc,d\n"), NEED)
    with pytest.raises(OmnisegInputError, match=r"missing magnification"):
        read_rows(_write(tmp_path, "image,mask,tissue\na,b,ptc\n"), NEED)
    with pytest.raises(OmnisegInputError, match="lists no rows"):
        read_rows(_write(tmp_path, "image,mask,tissue,magnification\n\n"), NEED)
    with pytest.raises(OmnisegInputError, match="is a folder"):
        read_rows(tmp_path, NEED)
    assert number("40x", "magnification", "m.csv line 2") == 40
    for bad in ("", "forty", "-5", "inf"):
        with pytest.raises(OmnisegInputError, match=r"m\.csv line 2: magnification"):
            number(bad, "magnification", "m.csv line 2")
    assert columns(_write(tmp_path, "image;mask;region\n")) == ["image", "mask", "region"]


def test_manifest_rows_are_checked_before_training(tmp_path):
    from napari_omniseg.train.annotations import read_manifest

    for row, message in (("a.png,a.png,xyz,40", "line 2: unknown tissue 'xyz'"),
                         ("a.png,a.png,ptc,", "line 2: magnification '' is not a number"),
                         ("a.png,a.png,ptc,1e9", "line 2: magnification 1e9 is not a "
                                                 "microscope objective's")):
        p = _write(tmp_path, f"image,mask,tissue,magnification\n{row}\n")
        with pytest.raises(OmnisegInputError, match=message):
            read_manifest(p)


def test_a_semicolon_fetal_manifest_is_a_fetal_manifest(tmp_path):
    from napari_omniseg.tasks import task_of_manifest

    assert task_of_manifest(_write(tmp_path, "\ufeffimage;mask;region;annotated\n")).name == "fetal"


def test_grayscale_patches_are_refused_for_kidney_fine_tuning(tmp_path):
    import numpy as np
    import skimage.io

    from napari_omniseg.train.annotations import read_manifest

    skimage.io.imsave(tmp_path / "g.png", np.full((64, 64), 120, np.uint8), check_contrast=False)
    p = _write(tmp_path, "image,mask,tissue,magnification\ng.png,g.png,ptc,40\n")
    with pytest.raises(OmnisegInputError, match=r"line 2: g\.png is a grayscale image"):
        read_manifest(p)
