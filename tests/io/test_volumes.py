import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_omniseg import OmnisegInputError, open_volume
from napari_omniseg.io.export import save_nifti


def _volume(shape=(20, 30, 40)):
    z, y, x = np.indices(shape)
    return (z * 10000 + y * 100 + x).astype(np.float32)


def test_nifti_is_zyx_with_spacing_and_affine(tmp_path):
    vol = _volume()
    affine = np.diag([1.5, 2.0, 3.0, 1.0])  # i (x), j (y), k (z) spacing
    p = save_nifti(vol, affine, tmp_path / "v.nii.gz")
    v = open_volume(p)
    assert v.data.shape == (20, 30, 40)
    np.testing.assert_array_equal(v.data.compute(), vol)
    assert v.spacing == pytest.approx((3.0, 2.0, 1.5))
    np.testing.assert_allclose(v.affine, affine)
    # round trip: nibabel sees x along i
    assert nib.load(p).shape == (40, 30, 20)


def test_tiff_stack_with_imagej_spacing(tmp_path):
    vol = _volume().astype(np.uint16)
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, vol, imagej=True, resolution=(1 / 800.0, 1 / 800.0),
                     metadata={"spacing": 2500.0, "unit": "um", "axes": "ZYX"})
    v = open_volume(p)
    assert v.data.shape == (20, 30, 40)
    assert v.spacing == pytest.approx((2.5, 0.8, 0.8))
    np.testing.assert_array_equal(v.data.compute(), vol)


def test_tiff_stack_without_spacing_assumes_1mm_and_says_so(tmp_path):
    p = tmp_path / "plain.tif"
    tifffile.imwrite(p, _volume().astype(np.uint16))
    with pytest.warns(UserWarning, match="no voxel size"):
        v = open_volume(p)
    assert v.spacing == (1.0, 1.0, 1.0) and not v.spacing_known


def test_2d_files_are_not_volumes(tmp_path):
    p = save_nifti(np.zeros((1, 30, 40)), np.eye(4), tmp_path / "flat.nii")
    with pytest.raises(OmnisegInputError, match="2D image"):
        open_volume(p)
    t = tmp_path / "flat.tif"
    tifffile.imwrite(t, np.zeros((30, 40), np.uint8))
    with pytest.raises(OmnisegInputError, match="2D image"):
        open_volume(t)


def test_colour_tiff_is_a_slide_not_a_volume(tmp_path):
    t = tmp_path / "rgb.tif"
    tifffile.imwrite(t, np.zeros((30, 40, 3), np.uint8), photometric="rgb")
    with pytest.raises(OmnisegInputError, match="open it as a slide"):
        open_volume(t)


def test_damaged_nifti(tmp_path):
    p = save_nifti(_volume(), np.eye(4), tmp_path / "v.nii")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(OmnisegInputError, match="truncated"):
        open_volume(p)
    q = tmp_path / "junk.nii.gz"
    q.write_text("hello")
    with pytest.raises(OmnisegInputError, match="not a readable NIfTI"):
        open_volume(q)


def test_contrast_window_of_a_volume_with_nan_voxels_is_finite():
    import dask.array as da

    from napari_omniseg._reader import _percentile_window
    from napari_omniseg.io.volumes import Volume

    data = np.random.default_rng(0).random((20, 20, 20)).astype(np.float32)
    data[:5] = np.nan
    data[5, 5, 5] = np.inf
    lo, hi = _percentile_window(Volume(data=da.asarray(data), spacing=(1.0, 1.0, 1.0)))
    assert np.isfinite([lo, hi]).all() and 0 <= lo < 0.05 and 0.95 < hi <= 1


def test_a_truncated_volume_is_one_sentence_in_napari_and_on_the_command_line(tmp_path,
                                                                              monkeypatch,
                                                                              capsys):
    """Such a file used to raise EOFError into napari and stop a CLI batch with a traceback."""
    import napari.utils.notifications as notifications

    from napari_omniseg._reader import read_path
    from napari_omniseg.cli import main
    from napari_omniseg.io.export import save_nifti

    good = save_nifti(np.random.default_rng(0).random((40, 40, 40)), np.eye(4),
                      tmp_path / "good.nii.gz")
    data = good.read_bytes()
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    told = []
    monkeypatch.setattr(notifications, "show_error", told.append)
    assert read_path(str(bad)) == [(None,)]
    assert len(told) == 1 and told[0].startswith("cut.nii.gz failed: Compressed file ended")
    out = tmp_path / "masks"
    assert main(["segment-volume", str(bad), str(good), "--region", "brain", "--no-flips",
                 "-o", str(out)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("omniseg: error: cut.nii.gz failed:")
    assert sorted(p.name for p in out.iterdir()) == ["good_brain.nii.gz", "summary.json"]


def test_damaged_voxel_sizes_are_told_at_once(tmp_path):
    """A NaN voxel size used to surface only after segmenting (volumes in mL of NaN); an
    ImageJ spacing of "abc" or an OME unit of Å in a TIFF stack used to raise."""
    import warnings

    import nibabel as nib
    import pytest
    import tifffile

    from napari_omniseg.errors import OmnisegInputError
    from napari_omniseg.io.volumes import open_volume

    data = np.random.default_rng(0).random((8, 16, 16)).astype(np.float32)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header["pixdim"][1] = np.nan
    nib.save(img, tmp_path / "nan.nii.gz")
    with pytest.raises(OmnisegInputError, match=r"nan\.nii\.gz has the voxel size .*nan"):
        open_volume(tmp_path / "nan.nii.gz")
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, resolution=(2.0, 2.0),
                     metadata={"spacing": "abc", "unit": "um", "axes": "ZYX"})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        vol = open_volume(tmp_path / "ij.tif")
    assert vol.spacing == (1.0, 1.0, 1.0) and not vol.spacing_known
    assert any("cannot be read" in str(w.message) for w in seen)
