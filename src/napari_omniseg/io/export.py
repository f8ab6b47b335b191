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

    Only level 0 is computed, band by band; the coarser levels (of the shapes of ``levels[1:]``)
    are sampled from it by nearest neighbour into a compressed scratch store next to the output
    while level 0 is written, then copied into the file. Memory stays flat whatever the slide's
    size, and a lazy pyramid is evaluated once (computing every level of a segmentation on its
    own would run the network again for each level once its tile cache is full). The file is
    written under a temporary name and renamed at the end; a stop (``should_stop()`` returning
    True) removes it.

    Returns
    -------
    int
        Foreground pixels of level 0.
    """
    import shutil
    import tempfile

    import tifffile
    import zarr

    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    h0, w0 = levels[0].shape
    shapes = [tuple(lv.shape) for lv in levels]
    chunk_rows = levels[0].chunks[0][0] if hasattr(levels[0], "chunks") else tile
    band_rows = max(tile, (chunk_rows // tile) * tile)  # whole dask chunks, whole file tiles
    total_bands = sum(-(-h // band_rows) for h, _ in shapes)
    done = 0
    counted = [0]
    scratch = Path(tempfile.mkdtemp(prefix="omniseg-mask-", dir=path.parent))
    coarse = [zarr.open_array(str(scratch / f"{k}.zarr"), mode="w", shape=shp,
                              chunks=(tile, tile), dtype=np.uint8, fill_value=0)
              for k, shp in enumerate(shapes) if k > 0]
    # level-0 row/column that each coarse pixel samples (nearest neighbour)
    rows = [np.minimum((np.arange(h) * (h0 / h)).astype(int), h0 - 1) for h, _ in shapes[1:]]
    cols = [np.minimum((np.arange(w) * (w0 / w)).astype(int), w0 - 1) for _, w in shapes[1:]]

    def report(level_index: int, y: int, n: int) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total_bands, f"{name}: level {level_index}, rows {y}-{y + n}")

    def bands(level_index: int):
        h = shapes[level_index][0]
        for y in range(0, h, band_rows):
            if should_stop is not None and should_stop():
                raise InterruptedError("stopped")
            if level_index == 0:
                band = levels[0][y:y + band_rows]
                if hasattr(band, "compute"):
                    # local scheduler: inside a cluster task the graph (holding a model) must
                    # not be shipped back to the cluster
                    band = band.compute(scheduler="synchronous")
                band = np.asarray(band, np.uint8)
                counted[0] += int(band.sum())
                for arr, r, c in zip(coarse, rows, cols):
                    sel = np.flatnonzero((r >= y) & (r < y + len(band)))
                    if len(sel):
                        arr[sel[0]:sel[-1] + 1] = band[r[sel] - y][:, c]
            else:
                band = np.asarray(coarse[level_index - 1][y:y + band_rows])
            report(level_index, y, len(band))
            yield band

    def tiles(level_index: int):
        w = shapes[level_index][1]
        for band in bands(level_index):
            for r0 in range(0, len(band), tile):
                for x in range(0, w, tile):
                    t = band[r0:r0 + tile, x:x + tile]
                    if t.shape != (tile, tile):
                        t = np.pad(t, ((0, tile - t.shape[0]), (0, tile - t.shape[1])))
                    yield np.ascontiguousarray(t)

    meta = {"axes": "YX", "Name": name}
    if mpp:
        meta.update(PhysicalSizeX=mpp, PhysicalSizeY=mpp, PhysicalSizeXUnit="µm",
                    PhysicalSizeYUnit="µm")
    try:
        with tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
            for k, shp in enumerate(shapes):
                ds = h0 / shp[0]
                kw = dict(subifds=len(levels) - 1, metadata=meta) if k == 0 else dict(
                    subfiletype=1, metadata=None)
                res = {}
                if mpp:
                    res = dict(resolution=(1e4 / (mpp * ds),) * 2, resolutionunit="CENTIMETER")
                tif.write(tiles(k), shape=shp, dtype=np.uint8, tile=(tile, tile),
                          photometric="minisblack", compression="zlib", **kw, **res)
        tmp.replace(path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return counted[0]
