"""Writing volumes and masks back to disk with the geometry of their source."""

from __future__ import annotations

import os
import zlib
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


class _CoarseTiles:
    """One coarse pyramid level, filled row by row, kept as compressed file tiles in memory.

    Masks compress to almost nothing, so a slide of any size costs little memory; only the tile
    row being filled is held uncompressed (``tile`` rows of the level).
    """

    def __init__(self, shape: tuple[int, int], tile: int) -> None:
        self.shape, self.tile = shape, tile
        self.row = 0  # first level row of the tile row being filled
        self.buffer = np.zeros((tile, shape[1]), np.uint8)
        self.tiles: list[bytes] = []  # finished tiles, row-major

    def put(self, y0: int, rows: np.ndarray) -> None:
        """Write level rows ``y0 .. y0 + len(rows)``; rows arrive in order."""
        while len(rows):
            n = min(len(rows), self.row + self.tile - y0)
            self.buffer[y0 - self.row:y0 - self.row + n] = rows[:n]
            y0, rows = y0 + n, rows[n:]
            if y0 - self.row == self.tile or y0 == self.shape[0]:
                self._finish_row()

    def _finish_row(self) -> None:
        for x in range(0, self.shape[1], self.tile):
            t = np.zeros((self.tile, self.tile), np.uint8)
            part = self.buffer[:, x:x + self.tile]
            t[:, :part.shape[1]] = part
            self.tiles.append(zlib.compress(t.tobytes(), 1))
        self.buffer[:] = 0
        self.row += self.tile

    def tile_rows(self):
        """Each tile row as a list of ``(tile, tile)`` arrays."""
        per_row = -(-self.shape[1] // self.tile)
        for i in range(0, len(self.tiles), per_row):
            yield [np.frombuffer(zlib.decompress(b), np.uint8).reshape(self.tile, self.tile)
                   for b in self.tiles[i:i + per_row]]


def write_mask_pyramid(path: str | os.PathLike, levels: list, mpp: float | None,
                       tile: int = 512, name: str = "mask", progress=None,
                       should_stop=None) -> int:
    """Write a pyramid of 0/1 masks (numpy or dask, finest first) as a tiled OME-TIFF.

    Only level 0 is computed, band by band; the coarser levels (of the shapes of ``levels[1:]``)
    are sampled from it by nearest neighbour while level 0 is written, kept as compressed tiles
    in memory, then written after it. Memory stays flat whatever the slide's size, and a lazy
    pyramid is evaluated once (computing every level of a segmentation on its own would run the
    network again for each level once its tile cache is full). The file is written under a
    temporary name and renamed at the end; a stop (``should_stop()`` returning True) removes it.

    Returns
    -------
    int
        Foreground pixels of level 0.
    """
    import tifffile

    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    h0, w0 = levels[0].shape
    shapes = [tuple(lv.shape) for lv in levels]
    chunk_rows = levels[0].chunks[0][0] if hasattr(levels[0], "chunks") else tile
    band_rows = max(tile, (chunk_rows // tile) * tile)  # whole dask chunks, whole file tiles
    total = -(-h0 // band_rows) + sum(-(-h // tile) for h, _ in shapes[1:])
    done = 0
    counted = [0]
    coarse = [_CoarseTiles(shp, tile) for shp in shapes[1:]]
    # level-0 row/column that each coarse pixel samples (nearest neighbour)
    rows = [np.minimum((np.arange(h) * (h0 / h)).astype(int), h0 - 1) for h, _ in shapes[1:]]
    cols = [np.minimum((np.arange(w) * (w0 / w)).astype(int), w0 - 1) for _, w in shapes[1:]]

    def report(level_index: int, y: int, n: int) -> None:
        nonlocal done
        done += 1
        if should_stop is not None and should_stop():
            raise InterruptedError("stopped")
        if progress is not None:
            progress(done, total, f"{name}: level {level_index}, rows {y}-{y + n}")

    def level0_tiles():
        for y in range(0, h0, band_rows):
            if should_stop is not None and should_stop():
                raise InterruptedError("stopped")
            band = levels[0][y:y + band_rows]
            if hasattr(band, "compute"):
                # local scheduler: inside a cluster task the graph (holding a model) must
                # not be shipped back to the cluster
                band = band.compute(scheduler="synchronous")
            band = np.asarray(band, np.uint8)
            counted[0] += int(band.sum())
            for store, r, c in zip(coarse, rows, cols):
                sel = np.flatnonzero((r >= y) & (r < y + len(band)))
                if len(sel):
                    store.put(int(sel[0]), band[r[sel] - y][:, c])
            report(0, y, len(band))
            for r0 in range(0, len(band), tile):
                for x in range(0, w0, tile):
                    t = band[r0:r0 + tile, x:x + tile]
                    if t.shape != (tile, tile):
                        t = np.pad(t, ((0, tile - t.shape[0]), (0, tile - t.shape[1])))
                    yield np.ascontiguousarray(t)

    def coarse_tiles(level_index: int):
        store = coarse[level_index - 1]
        for k, row in enumerate(store.tile_rows()):
            report(level_index, k * tile, tile)
            yield from row

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
                tif.write(level0_tiles() if k == 0 else coarse_tiles(k), shape=shp,
                          dtype=np.uint8, tile=(tile, tile), photometric="minisblack",
                          compression="zlib", compressionargs={"level": 1}, **kw, **res)
        tmp.replace(path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return counted[0]
