"""Label images: which files they are, what their values mean, pyramids that round-trip."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_omniseg.errors import OmnisegInputError
from napari_omniseg.io.labels import (
    LabelImage,
    is_label_file,
    label_class,
    label_image_of,
    open_labels,
    pyramid_of,
    tissue_in_name,
    write_label_pyramid,
)


def test_classes_follow_the_vocabulary():
    assert label_class(6).name == "PTC" and label_class(6).color == (23, 191, 207)
    assert label_class(1, "tuft").name == "TUFT"
    assert label_class(9).name == "Label 9"


@pytest.mark.parametrize("name, code", [("slide_ptc", "ptc"), ("cap mask of x.tif", "cap"),
                                        ("PT 10x", "pt"), ("renal_he", None)])
def test_tissue_in_name(name, code):
    assert tissue_in_name(name) == code


def test_label_files_are_told_from_slides(tmp_path):
    tifffile.imwrite(tmp_path / "m.tif", np.zeros((20, 20), np.uint8))
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((20, 20, 3), np.uint8), photometric="rgb")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "m.png")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "rgb.png")
    assert is_label_file(tmp_path / "m.tif") and is_label_file(tmp_path / "m.png")
    assert not is_label_file(tmp_path / "rgb.tif") and not is_label_file(tmp_path / "rgb.png")


def test_uint16_labels_round_trip_through_a_pyramid(tmp_path):
    lab = np.zeros((1500, 1100), np.uint16)
    lab[100:900, 200:300] = 700
    lab[1000:1400, 50:1000] = 3
    write_label_pyramid(tmp_path / "l.ome.tif", LabelImage([lab], 0.5, "painted"))
    (back,) = open_labels(tmp_path / "l.ome.tif")
    assert back.mpp == pytest.approx(0.5) and back.tissue is None
    assert [lv.shape for lv in back.levels] == [lv.shape for lv in pyramid_of(lab)]
    np.testing.assert_array_equal(np.asarray(back.level0), lab)
    np.testing.assert_array_equal(np.asarray(back.levels[1]), lab[::2, ::2])  # nearest


def test_layer_parts_give_pixel_size_only_for_lengths():
    data = np.zeros((10, 10), np.uint8)
    assert label_image_of(data, "m", (0.5, 0.5), ("µm", "µm")).mpp == 0.5
    assert label_image_of(data, "m", (0.001, 0.001), ("mm", "mm")).mpp == pytest.approx(1.0)
    assert label_image_of(data, "m", (1, 1), ("pixel", "pixel")).mpp is None
    with pytest.raises(OmnisegInputError, match="2D"):
        label_image_of(np.zeros((3, 10, 10), np.uint8), "vol", (1, 1, 1), None)


def test_a_colour_png_is_not_a_label_image(tmp_path):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "c.png")
    with pytest.raises(OmnisegInputError, match="colour"):
        open_labels(tmp_path / "c.png")
