import time

import dask.array as da
import numpy as np
import pytest
import tifffile
from conftest import (
    MPP,
    rgb_image,
    write_huge_pyramid,
    write_ome_series,
    write_ome_subifd,
    write_png,
    write_svs,
)

from napari_omniseg import OmnisegInputError, open_slide
from napari_omniseg.errors import MissingPixelSizeError


def _check_levels(slide, img, n):
    assert len(slide.levels) == n
    for k, lv in enumerate(slide.levels):
        assert isinstance(lv, da.Array)
        assert lv.dtype == np.uint8 and lv.shape[2] == 3
        assert slide.downsamples[k] == pytest.approx(2**k, rel=0.01)
    np.testing.assert_array_equal(slide.levels[0][:300, :200].compute(), img[:300, :200])


def test_ome_subifd_pyramid(tmp_path, image):
    s = open_slide(write_ome_subifd(tmp_path / "a.ome.tif", image, levels=3))
    _check_levels(s, image, 3)
    assert s.source == "OME-TIFF SubIFD pyramid"
    assert s.mpp == pytest.approx(MPP) and s.magnification == pytest.approx(40)
    np.testing.assert_array_equal(s.levels[2].compute(), image[::4, ::4])


def test_ome_series_pyramid(tmp_path, image):
    s = open_slide(write_ome_series(tmp_path / "b.ome.tif", image, levels=3))
    _check_levels(s, image, 3)
    assert s.source == "OME-TIFF series pyramid"
    assert s.mpp == pytest.approx(MPP)


def test_svs(tmp_path, image):
    s = open_slide(write_svs(tmp_path / "c.svs", image, levels=3, mpp=0.2525, mag=40))
    _check_levels(s, image, 3)
    assert s.source == "Aperio SVS"
    assert s.mpp == pytest.approx(0.2525) and s.magnification == 40


def test_flat_png_builds_a_lazy_pyramid(tmp_path, image):
    s = open_slide(write_png(tmp_path / "d.png", image, mpp=0.5))
    # 1024 x 1536 -> 512 -> 256: three levels until the short side would drop below 256
    _check_levels(s, image, 3)
    assert s.mpp == pytest.approx(0.5, rel=1e-3) and s.magnification == pytest.approx(20, rel=1e-3)
    expected = image[:2 * 256 * 2, :].reshape(512, 2, 768, 2, 3).mean((1, 3))
    np.testing.assert_allclose(s.levels[1].compute(), np.round(expected), atol=1)


def test_rgba_png_drops_alpha(tmp_path, image):
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    s = open_slide(write_png(tmp_path / "rgba.png", rgba))
    assert s.levels[0].shape[2] == 3


def test_plain_pyramidal_tiff_with_resolution_tags(tmp_path, image):
    path = tmp_path / "e.tif"
    with tifffile.TiffWriter(path) as w:
        w.write(image, tile=(256, 256), photometric="rgb", subifds=1,
                resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
        w.write(image[::2, ::2].copy(), tile=(256, 256), photometric="rgb", subfiletype=1)
    s = open_slide(path)
    assert s.source == "pyramidal TIFF"
    assert len(s.levels) == 2 and s.mpp == pytest.approx(0.5)


def test_missing_pixel_size_is_reported_and_can_be_given(tmp_path, image):
    path = write_png(tmp_path / "nompp.png", image, mpp=None)
    s = open_slide(path)
    assert s.mpp is None and s.magnification is None
    with pytest.raises(MissingPixelSizeError, match="no pixel size; pass mpp"):
        s.require_mpp()
    s2 = open_slide(path, mpp=0.25)
    assert s2.mpp == 0.25 and s2.magnification == pytest.approx(40)


def test_screen_resolution_is_not_a_pixel_size(tmp_path, image):
    path = tmp_path / "screen.tif"
    tifffile.imwrite(path, image, photometric="rgb", resolution=(72, 72), resolutionunit="INCH")
    assert open_slide(path).mpp is None


def test_open_huge_pyramid_fast_without_reading_pixels(tmp_path, monkeypatch):
    path = write_huge_pyramid(tmp_path / "huge.ome.tif")

    def no_decode(*a, **k):
        raise AssertionError("open_slide decoded pixel data")

    # tile reads go through FileCache.read (zarr store) or FileHandle.read_segments (asarray)
    monkeypatch.setattr(tifffile.FileCache, "read", no_decode)
    monkeypatch.setattr(tifffile.FileHandle, "read_segments", no_decode)
    t = time.perf_counter()
    s = open_slide(path)
    elapsed = time.perf_counter() - t
    assert elapsed < 1.0
    assert s.levels[0].shape == (100_000, 100_000, 3) and len(s.levels) == 4
    monkeypatch.undo()
    assert s.levels[3][:16, :16].compute().sum() == 0  # and the pixels can be read


# --- bad input: one clear sentence, never a traceback into the viewer ----------------------


def _one_sentence(err: Exception) -> str:
    msg = str(err)
    assert "\n" not in msg and len(msg) < 300
    return msg


def test_text_file_named_tif(tmp_path):
    p = tmp_path / "notes.tif"
    p.write_text("this is not an image\n" * 20)
    with pytest.raises(OmnisegInputError) as e:
        open_slide(p)
    assert "not a TIFF file" in _one_sentence(e.value)


def test_truncated_tiff(tmp_path, image):
    p = write_ome_subifd(tmp_path / "t.ome.tif", image, levels=2)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(OmnisegInputError) as e:
        open_slide(p)
    assert "truncated" in _one_sentence(e.value)


def test_truncated_png(tmp_path, image):
    p = write_png(tmp_path / "t.png", rgb_image(512, 512, seed=3) ^ 0x5A)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(OmnisegInputError) as e:
        open_slide(p)
    assert "truncated" in _one_sentence(e.value)


@pytest.mark.parametrize("shape, words", [((512, 512), "grayscale"),
                                          ((512, 512, 2), "has 2 channels"),
                                          ((512, 512, 5), "has 5 channels")])
def test_wrong_number_of_channels(tmp_path, shape, words):
    p = tmp_path / "wrong.tif"
    tifffile.imwrite(p, np.zeros(shape, np.uint8), photometric="minisblack",
                     planarconfig="contig" if len(shape) == 3 else None)
    with pytest.raises(OmnisegInputError) as e:
        open_slide(p)
    assert words in _one_sentence(e.value)


def test_missing_file_and_bad_mpp(tmp_path):
    with pytest.raises(OmnisegInputError, match="does not exist"):
        open_slide(tmp_path / "nope.svs")
    with pytest.raises(OmnisegInputError, match="positive"):
        open_slide(tmp_path / "nope.svs", mpp=-1)


def _ome_with(path, image, size="0.44", unit="µm", objective="20"):
    """An OME-TIFF whose XML says what the test wants, objective included."""
    h, w = image.shape[:2]
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
        f'<Instrument ID="Instrument:0"><Objective ID="Objective:0" '
        f'NominalMagnification="{objective}"/></Instrument><Image ID="Image:0">'
        '<InstrumentRef ID="Instrument:0"/><ObjectiveSettings ID="Objective:0"/>'
        f'<Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="{w}" SizeY="{h}" '
        f'SizeC="3" SizeZ="1" SizeT="1" PhysicalSizeX="{size}" PhysicalSizeY="{size}" '
        f'PhysicalSizeXUnit="{unit}" PhysicalSizeYUnit="{unit}" Interleaved="true">'
        '<Channel ID="Channel:0:0" SamplesPerPixel="3"/><TiffData IFD="0" PlaneCount="1"/>'
        '</Pixels></Image></OME>')
    tifffile.imwrite(path, image, photometric="rgb", tile=(256, 256),
                     description=xml.encode(), metadata=None)
    return path


def test_objective_power_comes_from_ome_nominal_magnification(tmp_path, image):
    """A 20x scanner at 0.44 µm/px: the objective says 20x, the pixel size alone 22.7x."""
    s = open_slide(_ome_with(tmp_path / "scanner20x.ome.tif", image))
    assert s.mpp == pytest.approx(0.44)
    assert s.magnification == pytest.approx(20)


@pytest.mark.parametrize("size, unit, objective, mpp, magnification, warning", [
    ("0.25", "µm", "1000000", 0.25, 40, "says 1e\\+06x but 0.25 µm/px"),
    ("0.25", "pc", "40", None, None, "unit 'pc' is not a length unit"),
    ("abc", "µm", "40", None, None, "PhysicalSizeX 'abc' .* not a positive number"),
    ("0.25", "µm", "0", 0.25, 40, "NominalMagnification '0' .* not a positive number"),
    ("0.25", "µm", "-20", 0.25, 40, "NominalMagnification '-20'"),
])
def test_contradictory_or_unreadable_metadata_is_not_trusted(tmp_path, image, size, unit,
                                                             objective, mpp, magnification,
                                                             warning):
    path = _ome_with(tmp_path / "odd.ome.tif", image, size, unit, objective)
    with pytest.warns(UserWarning, match=warning):
        s = open_slide(path)
    assert s.mpp == (pytest.approx(mpp) if mpp else None)
    assert s.magnification == (pytest.approx(magnification) if magnification else None)


def test_tiles_missing_from_a_sparse_file_read_as_glass(tmp_path, image):
    """Scanners leave empty tiles out of the file; read as black they counted as tissue."""
    path = write_ome_subifd(tmp_path / "sparse.ome.tif", image, levels=1)
    with tifffile.TiffFile(path, mode="r+") as tif:
        page = tif.pages.first
        offsets = list(page.tags["TileOffsets"].value)
        counts = list(page.tags["TileByteCounts"].value)
        offsets[0] = counts[0] = 0  # the top-left tile is not stored
        page.tags["TileOffsets"].overwrite(offsets)
        page.tags["TileByteCounts"].overwrite(counts)
    level0 = open_slide(path).levels[0]
    assert (level0[:256, :256].compute() == 255).all()
    np.testing.assert_array_equal(level0[256:512, 256:512].compute(), image[256:512, 256:512])
