"""Synthetic kidney cortex: RGB pyramids with exact per-tissue masks, in any stain and size.

The simulator is the training data of the bundled renal model and the fixture of most tests.
A slide is rendered at 40x (0.25 um/px) window by window, so a slide of any size can be produced
lazily with dask (:func:`simulate_renal`) or streamed to a pyramidal OME-TIFF without holding it
in memory (:func:`write_renal_slide`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from .. import vocab
from ..errors import OmnisegInputError
from ..io.atomic import partial_path
from ..io.export import level_options
from ..run import Progress, ShouldStop, check_stop
from .noise import value_noise
from .renal_layout import RenalAnatomy, RenalLayout
from .renal_render import MASK_ORDER, MPP, RenalRenderer
from .stains import stain_style

#: Objective power of each pyramid level, finest first.
LEVEL_MAGNIFICATIONS = (40, 20, 10, 5)
TISSUE_SHAPES = ("full", "biopsy")



@dataclass
class RenalSample:
    """A simulated slide with its ground truth.

    Attributes
    ----------
    image, masks : list of array; dict of str to list of array
        RGB ``(Y, X, 3)`` uint8 per level, finest (40x) first (numpy, or dask when lazy); per
        tissue code a ``(Y, X)`` uint8 0/1 mask per level, marking pixels at least half covered
        by the tissue (masks may overlap: the tuft lies inside the capsule).
    mpp, magnifications
        Micrometres per pixel at level 0; objective power of each level.
    stain, seed, shape : str, int, str
        How the slide was made.
    """

    image: list
    masks: dict[str, list]
    mpp: float
    magnifications: tuple[int, ...]
    stain: str
    seed: int
    shape: str

    def level_for(self, magnification: int) -> int:
        """Index of the level at a magnification (40, 20, 10 or 5)."""
        return self.magnifications.index(int(magnification))


def make_renderer(seed: int, stain: str, height: int, width: int, shape: str = "full",
                  variation: float = 1.0, anatomy: RenalAnatomy | None = None) -> RenalRenderer:
    """The renderer of one simulated slide (layout, stain appearance and tissue outline)."""
    stain = vocab.stain(stain)
    if shape not in TISSUE_SHAPES:
        raise OmnisegInputError(f"unknown tissue shape {shape!r}; choose one of {TISSUE_SHAPES}")
    tissue_fn = _biopsy_outline(seed, height * MPP, width * MPP) if shape == "biopsy" else None
    return RenalRenderer(RenalLayout(seed, anatomy), stain_style(stain, seed, variation),
                         tissue_fn)


def simulate_renal(
    height: int = 4096,
    width: int = 4096,
    stain: str = "he",
    seed: int = 0,
    shape: str = "full",
    levels: int = 4,
    lazy: bool = False,
    chunk: int = 2048,
    variation: float = 1.0,
    anatomy: RenalAnatomy | None = None,
) -> RenalSample:
    """Simulate a kidney cortex slide at 40x with exact masks of the six tissues.

    Parameters
    ----------
    height, width, levels : int
        Size of level 0 in pixels (0.25 um/px); pyramid levels, 1 to 4 (40, 20, 10, 5x).
    stain, seed : str, int
        ``"he"``, ``"pas"``, ``"sil"`` or ``"tri"``; same seed, same slide (layout, stain
        variation, texture).
    shape : {"full", "biopsy"}
        Tissue everywhere, or a needle-biopsy core along the long axis with glass around it.
    lazy, chunk : bool, int
        Return dask arrays computed on demand, in level-0 chunks of ``chunk`` pixels (a
        multiple of 8), instead of numpy arrays.
    variation : float
        Spread of the per-slide stain appearance; 0 gives the textbook stain.
    anatomy : RenalAnatomy, optional
        Shapes drawn beyond the default ones (slit capillaries, small oblique vessels);
        default none.

    Returns
    -------
    RenalSample
        The RGB levels and each tissue's mask levels, with the pixel size.
    """
    if not 1 <= levels <= len(LEVEL_MAGNIFICATIONS):
        raise OmnisegInputError(f"levels must be 1 to {len(LEVEL_MAGNIFICATIONS)}, got {levels}")
    if height < 8 or width < 8:
        raise OmnisegInputError(f"a slide must be at least 8 x 8 pixels, got {height} x {width}")
    chunk = max(8, (int(chunk) // 8) * 8)
    renderer = make_renderer(seed, stain, height, width, shape, variation, anatomy)
    stack0 = _lazy_level0(renderer, height, width, chunk)
    stacks = [stack0] + [_coarsen_stack(stack0, 2**k) for k in range(1, levels)]
    image = [s[..., :3] for s in stacks]
    masks = {code: [s[..., 3 + i] for s in stacks] for i, code in enumerate(MASK_ORDER)}
    if not lazy:
        computed = dask.compute(image, masks, scheduler="threads")
        image, masks = computed[0], computed[1]
    return RenalSample(image, masks, MPP, LEVEL_MAGNIFICATIONS[:levels], vocab.stain(stain),
                       seed, shape)


def _lazy_level0(renderer: RenalRenderer, height: int, width: int, chunk: int) -> da.Array:
    """Level 0 as a dask array of 9 channels: RGB then the six masks."""

    def block(y: int, x: int, h: int, w: int) -> np.ndarray:
        rgb, masks = renderer.render(y, x, h, w)
        return np.concatenate([rgb, masks.transpose(1, 2, 0)], axis=-1)

    rows = []
    for y in range(0, height, chunk):
        h = min(chunk, height - y)
        row = []
        for x in range(0, width, chunk):
            w = min(chunk, width - x)
            row.append(da.from_delayed(dask.delayed(block)(y, x, h, w), (h, w, 9), np.uint8))
        rows.append(da.concatenate(row, axis=1))
    return da.concatenate(rows, axis=0)


def _coarsen_stack(stack0: da.Array, factor: int) -> da.Array:
    """Downsample RGB by area mean and masks by majority of the covered level-0 pixels."""
    h, w = (stack0.shape[0] // factor) * factor, (stack0.shape[1] // factor) * factor
    s = stack0[:h, :w]
    if any(c % factor for c in s.chunks[0][:-1] + s.chunks[1][:-1]):
        s = s.rechunk((max(factor, (s.chunksize[0] // factor) * factor),
                       max(factor, (s.chunksize[1] // factor) * factor), 9))
    mean = da.coarsen(np.mean, s.astype(np.float32), {0: factor, 1: factor}, trim_excess=True)
    rgb = da.round(mean[..., :3]).astype(np.uint8)
    masks = (mean[..., 3:] >= 0.5).astype(np.uint8)
    return da.concatenate([rgb, masks], axis=-1)


def _downsample_np(block: np.ndarray, factor: int) -> np.ndarray:
    """Numpy twin of :func:`_coarsen_stack` for a (Y, X, 9) block whose size divides by factor."""
    h, w = block.shape[0] // factor, block.shape[1] // factor
    m = block[: h * factor, : w * factor].reshape(h, factor, w, factor, 9).mean((1, 3),
                                                                                dtype=np.float32)
    out = np.empty((h, w, 9), np.uint8)
    out[..., :3] = np.round(m[..., :3])
    out[..., 3:] = m[..., 3:] >= 0.5
    return out


def _biopsy_outline(seed: int, height_um: float, width_um: float):
    """Signed distance (um) to the edge of a wavy needle-core running along the long axis."""
    transpose = height_um > width_um
    long_um, short_um = (height_um, width_um) if transpose else (width_um, height_um)

    def fn(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        along, across = (ys, xs) if transpose else (xs, ys)
        wob = value_noise(seed, 41, np.zeros(1), along, 500.0)[0]
        wid = value_noise(seed, 42, np.zeros(1), along, 300.0)[0]
        centre = short_um / 2 + 0.06 * short_um * wob
        half = 0.36 * short_um * (1 + 0.12 * wid)
        ends = np.minimum(along - 0.03 * long_um, 0.97 * long_um - along)
        side = half[None, :] - np.abs(across[:, None] - centre[None, :])
        sd = np.minimum(side, ends[None, :] + 0.5 * half[None, :] - np.abs(
            across[:, None] - centre[None, :]) * 0.5)
        return sd.T.astype(np.float32) if transpose else sd.astype(np.float32)

    return fn


# ---------------------------------------------------------------------------------------------
# Streaming writer


def write_renal_slide(
    path: str | os.PathLike,
    height: int,
    width: int,
    stain: str = "he",
    seed: int = 0,
    shape: str = "full",
    levels: int = 4,
    masks_path: str | os.PathLike | None = None,
    tile: int = 512,
    quality: int = 90,
    variation: float = 1.0,
    anatomy: RenalAnatomy | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> tuple[Path, Path | None]:
    """Render a slide band by band straight into a pyramidal OME-TIFF (``path``).

    Memory holds one band of ``tile`` rows whatever the slide's height; lower levels collect
    in a compressed scratch store on disk.

    Parameters
    ----------
    path : str or os.PathLike
        The image to write.
    height, width, levels : int
        As :func:`simulate_renal`'s.
    stain, seed, shape, variation, anatomy
        As :func:`simulate_renal`'s.
    masks_path : str or os.PathLike, optional
        Where the six masks go, as 0/1 channels (``C`` in the vocabulary's task order) with
        the same pyramid; None: no masks.
    tile : int
        The TIFF tile, a multiple of 16 and of ``2**(levels-1)``.
    quality : int
        JPEG quality of the image, as a scanner compresses.
    progress, should_stop : callable, optional
        The run contract, once per band: a stop removes the partial files and raises
        :class:`~napari_omniseg.run.Stopped`.

    Returns
    -------
    (Path, Path or None)
        The image and masks files.
    """
    import tifffile
    import zarr

    path = Path(path)
    masks_path = Path(masks_path) if masks_path is not None else None
    if tile % 16 or tile % 2 ** (levels - 1):
        raise OmnisegInputError(f"tile must be a multiple of 16 and of {2 ** (levels - 1)}")
    renderer = make_renderer(seed, stain, height, width, shape, variation, anatomy)
    shapes = [(height // 2**k, width // 2**k) for k in range(levels)]
    scratch = Path(tempfile.mkdtemp(prefix="omniseg-sim-", dir=path.parent))
    tmp_image = partial_path(path)
    tmp_masks = partial_path(masks_path) if masks_path else None
    n_bands = -(-height // tile)
    try:
        store: Any = zarr.open_group(str(scratch / "levels.zarr"), mode="w")
        for k, (h, w) in enumerate(shapes):
            store.create_array(str(k), shape=(h, w, 9), dtype=np.uint8,
                               chunks=(max(1, tile >> k), min(w, 4096), 9))

        def level0_tiles() -> Iterator[np.ndarray]:
            for b in range(n_bands):
                check_stop(should_stop)
                y = b * tile
                bh = min(tile, height - y)
                band = np.empty((bh, width, 9), np.uint8)
                step = 4 * tile
                for x in range(0, width, step):
                    bw = min(step, width - x)
                    rgb, m = renderer.render(y, x, bh, bw)
                    band[:, x:x + bw, :3] = rgb
                    band[:, x:x + bw, 3:] = m.transpose(1, 2, 0)
                store["0"][y:y + bh] = band
                for k in range(1, levels):
                    f = 2**k
                    small = _downsample_np(band, f)
                    y_k = y // f
                    rows = min(small.shape[0], shapes[k][0] - y_k)
                    if rows > 0:
                        store[str(k)][y_k:y_k + rows] = small[:rows, : shapes[k][1]]
                if progress is not None:
                    progress(b + 1, n_bands, f"rendered band {b + 1} of {n_bands}")
                yield from _tiles(band[..., :3], tile)

        ome = {
            "axes": "YXS",
            "PhysicalSizeX": MPP, "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": MPP, "PhysicalSizeYUnit": "µm",
            "Name": f"synthetic kidney {stain} seed {seed}",
        }
        res: dict[str, Any] = {"resolution": (1e4 / MPP, 1e4 / MPP), "resolutionunit": "CENTIMETER"}
        jpeg: dict[str, Any] = {"photometric": "rgb", "compression": "jpeg",
                                    "compressionargs": {"level": quality}}
        with tifffile.TiffWriter(tmp_image, bigtiff=True, ome=True) as tif:
            tif.write(level0_tiles(), shape=(height, width, 3), dtype=np.uint8,
                      tile=(tile, tile), subifds=levels - 1, metadata=ome, **res, **jpeg)
            for k in range(1, levels):
                arr = store[str(k)]
                tif.write(_zarr_tiles(arr, tile, slice(0, 3)), shape=(*shapes[k], 3),
                          dtype=np.uint8, tile=(tile, tile), subfiletype=1,
                          resolution=(1e4 / (MPP * 2**k), 1e4 / (MPP * 2**k)),
                          resolutionunit="CENTIMETER", **jpeg)
        if masks_path is not None and tmp_masks is not None:
            _write_masks(tmp_masks, store, shapes, tile)
        tmp_image.replace(path)
        if masks_path is not None and tmp_masks is not None:
            tmp_masks.replace(masks_path)
    except BaseException:
        for p in (tmp_image, tmp_masks):
            if p is not None and p.exists():
                p.unlink()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path, masks_path


def _write_masks(path: Path, store, shapes: list[tuple[int, int]], tile: int) -> None:
    import tifffile

    ome = {"axes": "CYX", "Channel": {"Name": list(MASK_ORDER)},
           "PhysicalSizeX": MPP, "PhysicalSizeXUnit": "µm",
           "PhysicalSizeY": MPP, "PhysicalSizeYUnit": "µm"}
    common: dict[str, Any] = {"photometric": "minisblack", "planarconfig": "separate",
                                  "compression": "zlib", "tile": (tile, tile), "dtype": np.uint8}
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        for k, (h, w) in enumerate(shapes):
            gen = (t for c in range(6) for t in _zarr_tiles(store[str(k)], tile, 3 + c))
            tif.write(gen, shape=(6, h, w), **common,
                      **level_options(k, len(shapes), ome, MPP * 2**k))


def _tiles(band: np.ndarray, tile: int) -> Iterator[np.ndarray]:
    """Row-major tiles of a band (padded to full tiles, as TIFF tiles are)."""
    for y in range(0, band.shape[0], tile):
        for x in range(0, band.shape[1], tile):
            t = band[y:y + tile, x:x + tile]
            if t.shape[0] != tile or t.shape[1] != tile:
                pad = [(0, tile - t.shape[0]), (0, tile - t.shape[1])] + [(0, 0)] * (t.ndim - 2)
                t = np.pad(t, pad)
            yield np.ascontiguousarray(t)


def _zarr_tiles(arr, tile: int, channels) -> Iterator[np.ndarray]:
    for y in range(0, arr.shape[0], tile):
        yield from _tiles(arr[y:y + tile, :, channels], tile)


def read_renal_masks(path: str | os.PathLike, level: int = 0) -> dict[str, np.ndarray]:
    """Read the masks file written by :func:`write_renal_slide` at one pyramid level."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        data = tif.series[0].levels[level].asarray()
    return {code: data[i] for i, code in enumerate(MASK_ORDER)}
