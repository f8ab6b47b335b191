"""Writing volumes and masks back to disk with the geometry of their source."""

from __future__ import annotations

import os
import queue
import threading
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..run import Stopped, check_stop
from .atomic import partial_path, written_atomically


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
    with written_atomically(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


class _CoarseTiles:
    """One coarse pyramid level, filled row by row, kept as compressed file tiles in memory.

    Masks compress to almost nothing, so a slide of any size costs little memory; only the tile
    row being filled is held uncompressed (``tile`` rows of the level).
    """

    def __init__(self, shape: tuple[int, int], tile: int, dtype: Any = np.uint8) -> None:
        self.shape, self.tile, self.dtype = shape, tile, np.dtype(dtype)
        self.row = 0  # first level row of the tile row being filled
        self.buffer = np.zeros((tile, shape[1]), self.dtype)
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
        self.tiles.extend(zlib.compress(t.tobytes(), 1)
                          for t in _file_tiles(self.buffer, self.tile))
        self.buffer[:] = 0
        self.row += self.tile

    def tile_rows(self):
        """Each tile row as a list of ``(tile, tile)`` arrays."""
        per_row = -(-self.shape[1] // self.tile)
        for i in range(0, len(self.tiles), per_row):
            yield [np.frombuffer(zlib.decompress(b), self.dtype).reshape(self.tile, self.tile)
                   for b in self.tiles[i:i + per_row]]


def level_options(k: int, levels: int, metadata: dict | None, mpp: float | None
                  ) -> dict[str, Any]:
    """``tifffile`` write options of level ``k`` of a ``levels``-level pyramid.

    Level 0 holds the sub-IFDs of the others and the OME ``metadata``; the others are
    reduced-resolution sub-files. ``mpp`` (µm per pixel of this level) adds the resolution tags.
    """
    out: dict[str, Any] = ({"subifds": levels - 1, "metadata": metadata} if k == 0
                           else {"subfiletype": 1, "metadata": None})
    if mpp:
        out.update(resolution=(1e4 / mpp,) * 2, resolutionunit="CENTIMETER")
    return out


def _file_tiles(band: np.ndarray, tile: int):
    """The ``(tile, tile[, channels])`` file tiles of a band of rows, row-major, zero-padded
    at the edges."""
    for r0 in range(0, len(band), tile):
        for x in range(0, band.shape[1], tile):
            part = band[r0:r0 + tile, x:x + tile]
            if part.shape[:2] != (tile, tile):
                part = np.pad(part, [(0, tile - part.shape[0]), (0, tile - part.shape[1])]
                              + [(0, 0)] * (part.ndim - 2))
            yield np.ascontiguousarray(part)


def _stored(band: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """``band`` in the stored ``dtype``, refusing values it cannot hold (a cast would turn
    label 2**32 + 2 into 2, another tissue, without a word)."""
    dtype = np.dtype(dtype)
    if band.dtype != dtype and band.dtype.kind in "iu" and band.size:
        info = np.iinfo(dtype)
        lo, hi = band.min(), band.max()
        if lo < info.min or hi > info.max:
            from ..errors import OmnisegInputError

            bad = hi if hi > info.max else lo
            raise OmnisegInputError(f"{name} has label {int(bad)}, which a {dtype} OME-TIFF "
                                    f"cannot hold (labels {info.min} to {info.max})")
    return band.astype(dtype, copy=False)


def write_mask_pyramids(outputs: list[tuple], mpp: float | None, tile: int = 512,
                        progress=None, should_stop=None, dtype: Any = np.uint8
                        ) -> list[int]:
    """Write several mask pyramids of one slide, band by band in step, as tiled OME-TIFFs.

    ``outputs`` lists ``(path, levels, name)``: a 0/1 mask or label pyramid (numpy, dask or
    zarr, finest first, one level-0 shape for all) and the name stored in its metadata;
    ``mpp`` is the level-0 pixel size in µm, ``tile`` the file tile, ``dtype`` the stored
    type; ``progress`` and ``should_stop`` are the run contract, over all files. Returns the
    foreground (non-zero) pixels of each level 0.

    Only level 0 is computed, one band of every file before the next band, so tissues sharing
    a tile engine are computed once per band and its cache holds about one band of tiles
    whatever the slide's size. One writer thread per file samples the coarser levels from
    level 0 (nearest neighbour), keeps them as compressed tiles, compresses and writes while
    the network runs. Files appear under their names when all are complete; after a stop or
    an error none is left.
    """
    if not outputs:
        return []
    levels0 = outputs[0][1][0]
    h0, _w0 = levels0.shape
    chunks = getattr(levels0, "chunks", None)
    chunk_rows = tile if chunks is None else (
        chunks[0] if isinstance(chunks[0], int) else chunks[0][0])  # zarr's, or dask's
    band_rows = max(tile, (chunk_rows // tile) * tile)  # whole dask chunks, whole file tiles
    n_bands = -(-h0 // band_rows)
    lock = threading.Lock()
    count = {"done": 0, "total": len(outputs) * n_bands + sum(
        -(-lv.shape[0] // tile) for _, levels, _ in outputs for lv in levels[1:])}

    def report(message: str) -> None:
        with lock:
            count["done"] += 1
            if progress is not None:
                progress(count["done"], count["total"], message)

    abort = threading.Event()
    failures: list[BaseException] = []  # what made the writers stop, first cause first
    writers = [_PyramidWriter(Path(p), levels, mpp, tile, name, band_rows, report, abort,
                              failures, dtype) for p, levels, name in outputs]
    try:  # the writers create their files when they start: from then on, clean up
        for w in writers:
            w.start()
        for y in range(0, h0, band_rows):
            for w in writers:
                check_stop(should_stop)
                band = w.levels[0][y:y + band_rows]
                if hasattr(band, "compute"):
                    # local scheduler: inside a cluster task the graph (holding a model) must
                    # not be shipped back to the cluster
                    band = band.compute(scheduler="synchronous")
                w.put(_stored(np.asarray(band), dtype, w.name))
        for w in writers:
            w.put(None)
            w.join()
        for w in writers:
            w.raise_error()
        for w in writers:
            w.tmp.replace(w.path)
    except BaseException:
        abort.set()
        for w in writers:
            if w.started:
                w.join()
            w.tmp.unlink(missing_ok=True)
        raise
    return [w.pixels for w in writers]


class _PyramidWriter:
    """A thread writing one mask pyramid from level-0 bands handed to it in order."""

    def __init__(self, path: Path, levels: list, mpp: float | None, tile: int, name: str,
                 band_rows: int, report, abort, failures: list,
                 dtype: Any = np.uint8) -> None:
        self.path, self.levels, self.mpp, self.tile, self.name = path, levels, mpp, tile, name
        self.tmp = partial_path(path)
        self.band_rows, self.report, self.abort = band_rows, report, abort
        self.failures = failures
        self.shapes = [tuple(lv.shape) for lv in levels]
        self.dtype = np.dtype(dtype)
        self.coarse = [_CoarseTiles(shp, tile, dtype) for shp in self.shapes[1:]]
        h0, w0 = self.shapes[0]
        # level-0 row/column that each coarse pixel samples (nearest neighbour)
        self.rows = [np.minimum((np.arange(h) * (h0 / h)).astype(int), h0 - 1)
                     for h, _ in self.shapes[1:]]
        self.cols = [np.minimum((np.arange(w) * (w0 / w)).astype(int), w0 - 1)
                     for _, w in self.shapes[1:]]
        self.pixels = 0
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=2)  # bands waiting: memory stays flat
        self._thread = threading.Thread(target=self._run, name=f"write {path.name}",
                                        daemon=True)

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def start(self) -> None:
        self._thread.start()

    def put(self, band: np.ndarray | None) -> None:
        """Hand over the next band (None: no more); gives up if the writer has died."""
        while self._thread.is_alive() and not self.abort.is_set():
            try:
                self._queue.put(band, timeout=0.2)
                return
            except queue.Full:
                continue
        self.raise_error()

    def join(self) -> None:
        self._thread.join()

    def raise_error(self) -> None:
        """Raise what stopped the writing: the first writer's own failure (a full disk, say),
        not the "stopped" of the writers that ended because of it."""
        if self.failures:
            raise self.failures[0]
        if self.error is not None:
            raise self.error

    def _bands(self):
        y = 0
        while True:
            try:
                band = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self.abort.is_set():
                    raise Stopped() from None
                continue
            if band is None:
                return
            self.pixels += int(np.count_nonzero(band))
            for store, r, c in zip(self.coarse, self.rows, self.cols):
                sel = np.flatnonzero((r >= y) & (r < y + len(band)))
                if len(sel):
                    store.put(int(sel[0]), band[r[sel] - y][:, c])
            self.report(f"{self.name}: level 0, rows {y}-{y + len(band)}")
            yield band
            y += len(band)

    def _level0_tiles(self):
        for band in self._bands():
            yield from _file_tiles(band, self.tile)

    def _coarse_tiles(self, level_index: int):
        for k, row in enumerate(self.coarse[level_index - 1].tile_rows()):
            if self.abort.is_set():
                raise Stopped()
            self.report(f"{self.name}: level {level_index}, rows {k * self.tile}-"
                        f"{(k + 1) * self.tile}")
            yield from row

    def _run(self) -> None:
        import tifffile

        meta: dict[str, Any] = {"axes": "YX", "Name": self.name}
        if self.mpp:
            meta.update(PhysicalSizeX=self.mpp, PhysicalSizeY=self.mpp,
                        PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm")
        h0 = self.shapes[0][0]
        try:
            with tifffile.TiffWriter(self.tmp, bigtiff=True, ome=True) as tif:
                for k, shp in enumerate(self.shapes):
                    kw = level_options(k, len(self.shapes), meta,
                                       self.mpp * h0 / shp[0] if self.mpp else None)
                    tif.write(self._level0_tiles() if k == 0 else self._coarse_tiles(k),
                              shape=shp, dtype=self.dtype, tile=(self.tile, self.tile),
                              photometric="minisblack", compression="zlib",
                              compressionargs={"level": 1}, **kw)
        except BaseException as e:  # handed to the computing thread
            self.error = e
            if not (isinstance(e, Stopped) and self.abort.is_set()):
                self.failures.append(e)
            self.abort.set()


def write_rgb_pyramid(path: str | os.PathLike, image: Any, mpp: float | None, name: str = "",
                      tile: int = 512, progress=None, should_stop=None, workers: int = 2
                      ) -> Path:
    """Write a ``(H, W, 3)`` uint8 image (numpy or dask, computed band by band) as a tiled
    pyramidal OME-TIFF, levels halved by area averaging down to 512 px, JPEG at quality 90
    like a scanner's output, level-0 pixel size ``mpp`` µm.

    Memory holds one band of ``tile`` rows, whose chunks a lazy image computes on ``workers``
    threads (two chunks at once beat one chunk on torch's own threads: docs/synthesis.md,
    Speed); coarser levels collect in a scratch store on disk beside ``path``.
    Written complete or not at all; a stop raises
    :class:`~napari_omniseg.run.Stopped`. ``progress`` is called once per band.
    """
    import shutil
    import tempfile

    import tifffile
    import zarr

    path = Path(path)
    h, w = image.shape[:2]
    shapes = [(h, w)]
    while max(shapes[-1]) > 512 and min(shapes[-1]) >= 2:
        shapes.append((shapes[-1][0] // 2, shapes[-1][1] // 2))
    levels = len(shapes)
    # a band is one row of level-0 tiles (more only if a coarse level would get no whole row)
    tile_rows = max(tile, 2 ** (levels - 1))
    scratch = Path(tempfile.mkdtemp(prefix=".omniseg-pyramid-", dir=path.parent))
    n_bands = -(-h // tile_rows)
    try:
        store: Any = zarr.open_group(str(scratch / "levels.zarr"), mode="w")
        for k, (lh, lw) in enumerate(shapes[1:], start=1):
            store.create_array(str(k), shape=(lh, lw, 3), dtype=np.uint8,
                               chunks=(min(lh, tile), min(lw, 4096), 3))

        def level0_tiles():
            for b in range(n_bands):
                check_stop(should_stop)
                y = b * tile_rows
                band = image[y:y + tile_rows]
                if hasattr(band, "compute"):
                    band = band.compute(scheduler="threads", num_workers=workers)
                band = np.asarray(band, np.uint8)
                for k in range(1, levels):
                    f = 2 ** k
                    bh, bw = band.shape[0] // f, shapes[k][1]
                    if bh == 0:
                        continue
                    small = band[:bh * f, :bw * f].reshape(bh, f, bw, f, 3).mean((1, 3))
                    yk = y // f
                    rows = min(bh, shapes[k][0] - yk)
                    if rows > 0:
                        store[str(k)][yk:yk + rows] = np.round(small[:rows]).astype(np.uint8)
                if progress is not None:
                    progress(b + 1, n_bands, f"band {b + 1} of {n_bands}")
                yield from _file_tiles(band, tile)

        meta: dict[str, Any] = {"axes": "YXS", "Name": name}
        if mpp:
            meta.update(PhysicalSizeX=mpp, PhysicalSizeY=mpp, PhysicalSizeXUnit="µm",
                        PhysicalSizeYUnit="µm")
        jpeg = {"photometric": "rgb", "compression": "jpeg", "compressionargs": {"level": 90}}
        with written_atomically(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True,
                                                                  ome=True) as tif:
            for k, shp in enumerate(shapes):
                kw = level_options(k, levels, meta, mpp * 2 ** k if mpp else None)
                data = level0_tiles() if k == 0 else (
                    t for y in range(0, shp[0], tile)
                    for t in _file_tiles(store[str(k)][y:y + tile], tile))
                tif.write(data, shape=(*shp, 3), dtype=np.uint8, tile=(tile, tile),
                          **jpeg, **kw)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path

