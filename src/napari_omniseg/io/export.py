"""Writing volumes and masks back to disk with the geometry of their source."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def save_nifti(data_zyx: np.ndarray, affine: np.ndarray, path: str | os.PathLike,
               dtype: np.dtype | type = np.float32) -> Path:
    """Write a ``(Z, Y, X)`` array as NIfTI in mm with the given ``(i, j, k)`` affine.

    Parameters
    ----------
    data_zyx : numpy.ndarray
        The volume in the plugin's ``(Z, Y, X)`` order.
    affine : numpy.ndarray
        4 x 4 voxel-to-world matrix for NIfTI's ``(i, j, k) = (X, Y, Z)`` storage order, as
        :class:`~napari_omniseg.io.volumes.Volume` keeps it.
    path : path-like
        Output file (``.nii`` or ``.nii.gz``).
    dtype : numpy dtype
        Stored type.
    """
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(data_zyx, dtype).transpose(2, 1, 0), affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return Path(path)


def write_mask_pyramid(path: str | os.PathLike, levels: list, mpp: float | None,
                       tile: int = 512, name: str = "mask", progress=None,
                       should_stop=None) -> int:
    """Write a pyramid of 0/1 masks (numpy or dask, finest first) as a tiled OME-TIFF.

    Levels are computed band by band (``tile`` rows at a time), so a lazy pyramid is written
    without holding it in memory. The file is written under a temporary name and renamed at
    the end; a stop (``should_stop()`` returning True) removes it.

    Returns
    -------
    int
        Foreground pixels of level 0.
    """
    import tifffile

    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    total_bands = sum(-(-lv.shape[0] // tile) for lv in levels)
    done = 0
    counted = [0]

    def tiles(level_index: int, arr):
        nonlocal done
        h, w = arr.shape
        for y in range(0, h, tile):
            if should_stop is not None and should_stop():
                raise InterruptedError("stopped")
            band = arr[y:y + tile]
            if hasattr(band, "compute"):
                # local scheduler: inside a cluster task the graph (holding a model) must not
                # be shipped back to the cluster
                band = band.compute(scheduler="synchronous")
            band = np.asarray(band, np.uint8)
            if level_index == 0:
                counted[0] += int(band.sum())
            done += 1
            if progress is not None:
                progress(done, total_bands, f"{name}: level {level_index}, rows {y}-{y + len(band)}")
            for x in range(0, w, tile):
                t = band[:, x:x + tile]
                if t.shape != (tile, tile):
                    t = np.pad(t, ((0, tile - t.shape[0]), (0, tile - t.shape[1])))
                yield np.ascontiguousarray(t)

    meta = {"axes": "YX", "Name": name}
    if mpp:
        meta.update(PhysicalSizeX=mpp, PhysicalSizeY=mpp, PhysicalSizeXUnit="µm",
                    PhysicalSizeYUnit="µm")
    try:
        with tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
            for k, lv in enumerate(levels):
                ds = levels[0].shape[0] / lv.shape[0]
                kw = dict(subifds=len(levels) - 1, metadata=meta) if k == 0 else dict(
                    subfiletype=1, metadata=None)
                res = {}
                if mpp:
                    res = dict(resolution=(1e4 / (mpp * ds),) * 2, resolutionunit="CENTIMETER")
                tif.write(tiles(k, lv), shape=lv.shape, dtype=np.uint8, tile=(tile, tile),
                          photometric="minisblack", compression="zlib", **kw, **res)
        tmp.replace(path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return counted[0]
