"""3D volumes (NIfTI, TIFF stacks) as lazy dask arrays with their voxel spacing."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ..errors import OmnisegInputError, short_reason

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".tif", ".tiff")
_CHUNK = 64


@dataclass
class Volume:
    """A 3D scalar volume.

    Attributes
    ----------
    data : dask.array.Array
        Intensities, ``(Z, Y, X)``.
    spacing : tuple of float
        Voxel size in millimetres along ``(Z, Y, X)``.
    affine : numpy.ndarray
        4 x 4 voxel-to-world matrix of the file's own ``(i, j, k)`` voxel order (NIfTI), so that
        masks can be written back with the input's geometry. For TIFF stacks a diagonal matrix.
    path : pathlib.Path or None
        File the volume was read from.
    spacing_known : bool
        False when the file carried no voxel size and 1 mm was assumed.
    """

    data: da.Array
    spacing: tuple[float, float, float]
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    path: Path | None = None
    spacing_known: bool = True


def volume_suffix(path: str | os.PathLike) -> str:
    """The file's volume suffix, treating ``.nii.gz`` as one suffix."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def is_volume_file(path: str | os.PathLike) -> bool:
    """Whether a file should be opened as a volume: NIfTI, or a TIFF whose image is a grey stack.

    An RGB TIFF (or one that cannot be parsed) is left to the slide reader, which explains what
    is wrong with it.
    """
    suffix = volume_suffix(path)
    if suffix in (".nii", ".nii.gz"):
        return True
    if suffix not in (".tif", ".tiff"):
        return False
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            s = tif.series[0]
            if tif.is_ome and s.axes.startswith("C") and s.shape[0] in (3, 4):
                return False
            dims = [a for a, n in zip(s.axes, s.shape) if n != 1]
            return "S" not in s.axes and len(dims) >= 3
    except Exception:
        return False


def open_volume(path: str | os.PathLike) -> Volume:
    """Open a 3D volume lazily.

    Parameters
    ----------
    path : str or os.PathLike
        A NIfTI file (``.nii``, ``.nii.gz``) or a TIFF stack.

    Returns
    -------
    Volume
        ``data`` is ``(Z, Y, X)``; ``spacing`` is in millimetres.

    Raises
    ------
    OmnisegInputError
        With one sentence saying what is wrong with the file and what to do.
    """
    path = Path(path)
    if not path.exists():
        raise OmnisegInputError(f"{path} does not exist; check the path")
    if path.is_dir():
        raise OmnisegInputError(f"{path} is a folder; open a volume file inside it")
    suffix = volume_suffix(path)
    if suffix in (".nii", ".nii.gz"):
        return _checked_spacing(_open_nifti(path))
    if suffix in (".tif", ".tiff"):
        return _checked_spacing(_open_tiff_stack(path))
    raise OmnisegInputError(
        f"{path.name} is not a volume format this plugin reads; use NIfTI (.nii, .nii.gz) or a "
        "TIFF stack"
    )


def _checked_spacing(volume: Volume) -> Volume:
    """Refuse a voxel size that is not positive and finite now, not after a long computation
    (volumes in mL and the layer scale would be NaN)."""
    if not all(s > 0 and np.isfinite(s) for s in volume.spacing):
        name = volume.path.name if volume.path else "the volume"
        raise OmnisegInputError(
            f"{name} has the voxel size {tuple(float(s) for s in volume.spacing)} mm in its "
            "header, which is not a size; the header is damaged, convert the file again")
    return volume


def _open_nifti(path: Path) -> Volume:
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises ImageFileError, EOFError, gzip errors...
        raise OmnisegInputError(
            f"{path.name} is not a readable NIfTI file ({short_reason(e)}); check that it was "
            "exported or copied correctly"
        ) from None
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) < 3 or min(shape[:3]) == 1:
        raise OmnisegInputError(
            f"{path.name} is a 2D image ({' x '.join(map(str, img.shape))}); the fetal models "
            "need a 3D volume"
        )
    if len(shape) > 3:
        raise OmnisegInputError(
            f"{path.name} has {len(img.shape)} dimensions ({' x '.join(map(str, img.shape))}); "
            "save one 3D volume per file"
        )
    expected = int(np.prod(img.shape)) * img.get_data_dtype().itemsize + int(img.dataobj.offset)
    if volume_suffix(path) == ".nii" and os.path.getsize(path) < expected:
        raise OmnisegInputError(
            f"{path.name} is truncated: it holds fewer voxels than its header says; copy the "
            "file again"
        )
    proxy = img.dataobj
    raw = da.from_array(proxy, chunks=(_CHUNK,) * len(img.shape), asarray=True)
    if raw.ndim == 4:
        raw = raw[..., 0]
    # nibabel indexes (i, j, k); napari and the models use (Z, Y, X) = (k, j, i).
    data = raw.transpose(2, 1, 0)
    zooms = img.header.get_zooms()[:3]
    scale_to_mm = _nifti_unit_to_mm(img.header)
    z_mm, y_mm, x_mm = (float(z) * scale_to_mm for z in zooms[::-1])
    spacing = (z_mm, y_mm, x_mm)
    return Volume(data=data, spacing=spacing, affine=np.asarray(img.affine), path=path)


def _nifti_unit_to_mm(header: Any) -> float:
    try:
        unit = header.get_xyzt_units()[0]
    except Exception:
        unit = "unknown"
    return {"meter": 1000.0, "mm": 1.0, "micron": 1e-3}.get(unit, 1.0)


def _open_tiff_stack(path: Path) -> Volume:
    import tifffile
    import zarr

    try:
        tif = tifffile.TiffFile(path)
        series = tif.series[0]
    except tifffile.TiffFileError:
        raise OmnisegInputError(
            f"{path.name} is not a TIFF file although its name says so; check the file"
        ) from None
    except Exception as e:
        raise OmnisegInputError(
            f"{path.name} could not be read ({short_reason(e)}); the file is probably truncated or "
            "damaged, copy it again"
        ) from None
    axes = series.axes
    if "S" in axes:
        tif.close()
        raise OmnisegInputError(
            f"{path.name} is a colour image, not an MRI volume; open it as a slide"
        )
    squeezed = "".join(a for a, n in zip(axes, series.shape) if n != 1)
    if len(squeezed) < 3:
        tif.close()
        raise OmnisegInputError(
            f"{path.name} is a 2D image ({' x '.join(map(str, series.shape))}); the fetal models "
            "need a 3D volume"
        )
    if len(squeezed) > 3:
        tif.close()
        raise OmnisegInputError(
            f"{path.name} has axes {squeezed}; save one 3D (Z, Y, X) volume per file"
        )
    arr = da.from_zarr(zarr.open_array(series.aszarr(), mode="r"))
    index = tuple(0 if n == 1 else slice(None) for n in series.shape)
    data = arr[index]
    spacing, known = _tiff_spacing_mm(tif)
    if not known:
        warnings.warn(
            f"{path.name} carries no voxel size; assuming 1 mm isotropic", stacklevel=3
        )
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    vol = Volume(data=data, spacing=spacing, affine=affine, path=path, spacing_known=known)
    vol._tif = tif  # type: ignore[attr-defined]  # keeps the file open for the dask graph
    return vol


def _tiff_spacing_mm(tif: Any) -> tuple[tuple[float, float, float], bool]:
    """Voxel size (Z, Y, X) in mm from ImageJ or OME metadata, else 1 mm (unknown).

    Metadata that cannot be read (a unit this plugin does not know, a spacing that is not a
    number) counts as unknown, with a warning.
    """
    try:
        return _tiff_spacing_from_metadata(tif)
    except (ValueError, KeyError, ZeroDivisionError, SyntaxError) as e:
        warnings.warn(f"the voxel size in the file cannot be read ({short_reason(e)}); 1 mm "
                      "is assumed", stacklevel=3)
        return (1.0, 1.0, 1.0), False


def _tiff_spacing_from_metadata(tif: Any) -> tuple[tuple[float, float, float], bool]:
    to_mm = {"micron": 1e-3, "um": 1e-3, "µm": 1e-3, "\\u00B5m": 1e-3, "mm": 1.0, "cm": 10.0}
    ij = tif.imagej_metadata or {}
    page = tif.pages.first
    if ij and "XResolution" in page.tags:
        unit = to_mm.get(str(ij.get("unit", "")))
        num, den = page.tags["XResolution"].value
        if unit is not None and num:
            xy = den / num * unit
            z = float(ij.get("spacing", den / num)) * unit
            return (z, xy, xy), True
    if tif.is_ome and tif.ome_metadata:
        import xml.etree.ElementTree as ET

        root = ET.fromstring(tif.ome_metadata)
        for el in root.iter():
            if el.tag.endswith("Pixels") and el.get("PhysicalSizeX"):
                def size(ax: str, el: ET.Element = el) -> float:
                    unit = el.get(f"PhysicalSize{ax}Unit", "µm")
                    factor = {"µm": 1e-3, "um": 1e-3, "mm": 1.0, "cm": 10.0, "nm": 1e-6}[unit]
                    given = el.get(f"PhysicalSize{ax}") or el.get("PhysicalSizeX") or ""
                    return float(given) * factor

                return (size("Z"), size("Y"), size("X")), True
    return (1.0, 1.0, 1.0), False

