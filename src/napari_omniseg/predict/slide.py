"""Lazy whole-slide segmentation: dask pyramids of masks, computed tile by tile on demand.

For each working magnification a :class:`TileEngine` runs the network on a fixed, slide-wide
grid of overlapping tiles (so the answer at a pixel never depends on which chunk asked for it),
caches every tile it computed, and blends tiles with windows that fade at their borders. All
tissues that share a magnification share one backbone pass per tile. The masks of every pyramid
level are dask arrays whose chunks ask the engine for the tiles they cover: nothing runs until a
chunk is computed, and panning back to a seen region reuses the cached tiles.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np

from .. import vocab
from ..errors import OmnisegInputError
from ..io.slides import Slide
from ..run import Progress, ShouldStop, check_stop, report
from .tile_cache import TileCache
from .tiling import blend_window
from .tissue_mask import TissueMask, keep_in_margin, tissue_mask, tissue_pixels

#: Fraction of a tile that must look like tissue (not glass) for the network to run on it.
MIN_TISSUE_FRACTION = 0.01


def is_background(rgb: np.ndarray, min_fraction: float = MIN_TISSUE_FRACTION) -> bool:
    """True when (almost) every pixel is bright, unsaturated glass."""
    return tissue_pixels(rgb).mean() < min_fraction


#: Largest window of the slide read at once (RGB bytes: three times this), and longest run of
#: tiles read as one strip: memory stays bounded whatever region is asked for.
_MAX_WINDOW_PIXELS = 4096 * 4096
_MAX_RUN_TILES = 32


class TileEngine:
    """Probabilities of several tissues at one magnification, tile by tile, with a cache.

    The parameters are :func:`make_engines`'s for one working ``magnification`` (a loaded
    ``model``, a known ``bf16``), and: ``cache_mb``, memory for computed tiles (float16
    probabilities of every tissue; the least recently used are dropped beyond it), unless
    ``cache_rows`` rows of tiles are kept instead (band-by-band work, such as writing masks, in
    memory that does not grow with the slide's height); ``tissue_mask``, where there is tissue
    rather than glass (tiles without tissue are skipped, predictions off it are zero);
    ``flips``, average each tile's probabilities over its four mirror images (test-time
    augmentation: four network passes per tile).
    """

    def __init__(self, slide: Slide, model: Any, magnification: float, tissues: Sequence[str],
                 tile: int = 256, overlap: int = 64, bf16: bool = False,
                 cache_mb: float = 512.0, batch: int = 8,
                 tissue_mask: TissueMask | None = None, cache_rows: int | None = None,
                 flips: bool = False) -> None:
        if slide.magnification is None:
            slide.require_mpp()
        self.slide = slide
        self.model = model
        self.mag = float(magnification)
        self.tissues = list(tissues)
        self.conds = [(vocab.tissue(t).task_id, vocab.scale_id(magnification)) for t in tissues]
        self.tile, self.overlap, self.stride = tile, overlap, tile - overlap
        self.bf16 = bf16
        self.flips = flips
        self.batch = batch
        self.tissue_mask = tissue_mask
        mag0 = float(slide.magnification or magnification)  # a slide to segment has one
        self.scale0 = self.mag / mag0  # working pixels per level-0 pixel
        h0, w0 = slide.shape
        self.shape = (max(1, int(round(h0 * self.scale0))), max(1, int(round(w0 * self.scale0))))
        self.level = reading_level(slide, self.mag)
        self.level_per_working = (mag0 / slide.downsamples[self.level]) / self.mag
        self._windows_by_sides: dict[tuple[bool, ...], np.ndarray] = {}
        self._blocks: OrderedDict = OrderedDict()
        if cache_rows is not None:
            per_tile = 2 * len(self.tissues) * tile * tile  # float16
            cache_mb = cache_rows * (self.shape[1] // self.stride + 2) * per_tile / 2 ** 20
        self._cache = TileCache((len(self.tissues), tile, tile), cache_mb * 2 ** 20)
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()
        self.tiles_run = 0
        self.tiles_skipped = 0

    # -- tiles ---------------------------------------------------------------------------------

    def _origin(self, t: int, axis: int) -> int:
        """The working-grid origin of tile row (``axis`` 0) or column (1) ``t``.

        Tiles lie on a lattice of ``stride`` starting half an overlap before the image, moved
        inside the image where they would cross its edge (an image smaller than a tile: at
        0, the rest reflected). A tile read partly past the edge was mirrored tissue there,
        which networks trained on interior crops misread: on 256 px real patches, Dice fell
        from 0.51 (one tile, as ``omniseg evaluate`` predicts) to 0.37.
        """
        return min(max(t * self.stride - self.overlap, 0), max(self.shape[axis] - self.tile, 0))

    def _tile_indices(self, axis: int, a0: int, a1: int) -> list[int]:
        """The distinct tiles along ``axis`` whose span meets ``[a0, a1)`` (working pixels).

        Tiles moved to the same origin are one tile, the lowest index, whatever region
        asks, so every region blends the same tiles (no seams between chunks).
        """
        T, s, o = self.tile, self.stride, self.overlap
        last = (self.shape[axis] - 1 + o) // s  # the lattice's last tile starting before the end
        # a moved tile reaches up to T - 1 pixels beyond its lattice place: look two further
        first = max(0, (a0 + o - T) // s - 1)
        out = []
        for t in range(first, min(last, (a1 - 1 + o) // s + 2) + 1):
            c = self._origin(t, axis)
            if t > 0 and c == self._origin(t - 1, axis):
                continue
            if c < a1 and c + T > a0:
                out.append(t)
        return out

    def _window_of(self, oy: int, ox: int) -> np.ndarray:
        """Blend weights of the tile at ``(oy, ox)``: a side on the image's border keeps full
        weight (nothing else covers it)."""
        sides = (oy > 0, oy + self.tile < self.shape[0], ox > 0, ox + self.tile < self.shape[1])
        if sides not in self._windows_by_sides:
            self._windows_by_sides[sides] = blend_window(self.tile, self.overlap, sides)
        return self._windows_by_sides[sides]

    def _source_box(self, ty: int, tx: int) -> tuple[int, int, int, int]:
        """Rows and columns ``(y0, y1, x0, x1)`` of the read level under one tile (unclipped)."""
        T, f = self.tile, self.level_per_working
        y0, x0 = self._origin(ty, 0), self._origin(tx, 1)
        return (int(np.floor(y0 * f)), int(np.ceil((y0 + T) * f)),
                int(np.floor(x0 * f)), int(np.ceil((x0 + T) * f)))

    def _windows(self, keys: list[tuple[int, int]]) -> dict:
        """Read the level under several tiles in few calls: ``{key: (window, y0, x0)}``.

        Neighbouring tiles overlap and share the file's compressed tiles, so reading each tile
        on its own decoded every file tile about nine times. Tiles of one tile row are read as
        runs of consecutive columns, and the whole set as one window when it is dense enough.
        """
        lvl = self.slide.levels[self.level]
        H, W = lvl.shape[:2]

        boxes = {k: self._source_box(*k) for k in keys}

        def clipped(group):
            box = [boxes[k] for k in group]
            y0 = max(0, min(b[0] for b in box))
            y1 = min(H, max(b[1] for b in box))
            x0 = max(0, min(b[2] for b in box))
            x1 = min(W, max(b[3] for b in box))
            return y0, y1, x0, x1

        def read(group: list[tuple[int, int]]) -> dict:
            y0, y1, x0, x1 = clipped(group)
            if y1 <= y0 or x1 <= x0:
                return {}
            win = np.asarray(lvl[y0:y1, x0:x1].compute(scheduler="synchronous"))
            return dict.fromkeys(group, (win, y0, x0))

        if not keys:
            return {}
        f = self.level_per_working
        y0, y1, x0, x1 = clipped(keys)
        area = (y1 - y0) * (x1 - x0)
        if area <= min(1.5 * len(keys) * (self.stride * f) ** 2, _MAX_WINDOW_PIXELS):
            return read(keys)
        out: dict = {}
        run: list[tuple[int, int]] = []
        for key in sorted(keys):
            if run and (key[0] != run[-1][0] or key[1] != run[-1][1] + 1
                        or len(run) >= _MAX_RUN_TILES):
                out.update(read(run))
                run = []
            run.append(key)
        out.update(read(run))
        return out

    def _read(self, ty: int, tx: int, window: tuple | None = None) -> np.ndarray:
        """The RGB of one working-grid tile, reflected past the slide's edge.

        ``window`` is ``(array, y0, x0)``, a part of the read level already in memory that
        covers the tile (see :meth:`_windows`).
        """
        from skimage.transform import resize

        T, f = self.tile, self.level_per_working
        lvl = self.slide.levels[self.level]
        sy0, sy1, sx0, sx1 = self._source_box(ty, tx)
        H, W = lvl.shape[:2]
        cy0, cx0, cy1, cx1 = max(sy0, 0), max(sx0, 0), min(sy1, H), min(sx1, W)
        if cy1 <= cy0 or cx1 <= cx0:
            return np.full((T, T, 3), 255, np.uint8)
        if window is None:
            region = np.asarray(lvl[cy0:cy1, cx0:cx1].compute(scheduler="synchronous"))
        else:
            win, wy, wx = window
            region = win[cy0 - wy:cy1 - wy, cx0 - wx:cx1 - wx]
        pad = ((cy0 - sy0, sy1 - cy1), (cx0 - sx0, sx1 - cx1), (0, 0))
        if any(p for pp in pad for p in pp):
            reflect = min(region.shape[:2]) > max(max(p) for p in pad[:2])
            region = np.pad(region, pad, mode="reflect" if reflect else "edge")
        if region.shape[:2] != (T, T):
            region = (resize(region, (T, T), order=1, anti_aliasing=f > 1, preserve_range=True)
                      + 0.5).astype(np.uint8)
        return region

    def _run(self, keys: list[tuple[int, int]]) -> None:
        """Compute and cache the probabilities of the given tiles."""
        import torch

        todo, images, masks = [], [], []
        on = {k: self._on_tissue(*k) for k in keys}
        to_read = [k for k, m in on.items() if m is None or m.any()]  # not all glass
        windows = self._windows(to_read)
        reading = set(to_read)
        for key in keys:
            rgb = self._read(*key, windows.get(key)) if key in reading else None
            if rgb is None or is_background(rgb):
                self._store(key, None)
                self.tiles_skipped += 1
            else:
                todo.append(key)
                images.append(rgb)
                near, inner = on[key], self._on_tissue(*key, inner=True)
                masks.append(None if near is None or inner is None else
                             keep_in_margin(near, inner, rgb))
        dev = next(self.model.parameters()).device
        for i in range(0, len(todo), self.batch):
            x = torch.from_numpy(np.stack(images[i:i + self.batch])).to(dev)
            x = x.permute(0, 3, 1, 2).float().div_(255)
            prob = self._probabilities(x)
            for j, m in enumerate(masks[i:i + self.batch]):
                if m is not None:
                    prob[j] *= torch.from_numpy(m)
            # torch converts to float16 in hardware; numpy's conversion of the many tiny
            # (subnormal) probabilities took ~40 ms per batch, 5% of the whole pipeline (and
            # numpy's float16 arithmetic is emulated: masking there cost 1 ms per tile)
            prob = prob.to(torch.float16).numpy()
            for key, p in zip(todo[i:i + self.batch], prob):
                self._store(key, p)
            self.tiles_run += len(prob)

    def _probabilities(self, x):
        """Foreground probabilities ``(B, tissues, H, W)`` of a batch of tiles, averaged over
        the mirror images when ``flips``."""
        import torch

        mirrors: list[tuple[int, ...]] = [(), (3,), (2,), (2, 3)] if self.flips else [()]
        total = None
        for dims in mirrors:
            with self._model_lock, torch.no_grad(), torch.autocast(
                    x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.model.forward_conditions(x.flip(dims) if dims else x, self.conds)
            # logits are (B, tissues, 2, H, W): the image's axes are the last two here too
            prob = torch.softmax(logits.float(), dim=2)[:, :, 1]
            prob = prob.flip(dims) if dims else prob
            total = prob if total is None else total + prob
        return (total / len(mirrors)).cpu()

    def _on_tissue(self, ty: int, tx: int, inner: bool = False) -> np.ndarray | None:
        """The tissue mask (``inner``: before the margin) on a tile's working pixels, or None
        when the slide has none."""
        if self.tissue_mask is None:
            return None
        step = 1.0 / self.scale0
        return self.tissue_mask.crop(self._origin(ty, 0) * step, self._origin(tx, 1) * step, step,
                                     self.tile, inner)

    def _store(self, key, value) -> None:
        self._cache.put(key, value)

    # -- regions -------------------------------------------------------------------------------

    def probabilities(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Blended foreground probabilities ``(n_tissues, y1-y0, x1-x0)`` on the working grid."""
        import torch

        T = self.tile
        keys = [(ty, tx) for ty in self._tile_indices(0, y0, y1)
                for tx in self._tile_indices(1, x0, x1)]
        missing = [k for k in keys if k not in self._cache]
        if missing:
            self._run(missing)
        acc = np.zeros((len(self.conds), y1 - y0, x1 - x0), np.float32)
        wsum = np.zeros((y1 - y0, x1 - x0), np.float32)
        for ty, tx in keys:
            oy, ox = self._origin(ty, 0), self._origin(tx, 1)
            a0, a1 = max(y0, oy), min(y1, oy + T)
            b0, b1 = max(x0, ox), min(x1, ox + T)
            if a1 <= a0 or b1 <= b0:
                continue
            w = self._window_of(oy, ox)[a0 - oy:a1 - oy, b0 - ox:b1 - ox]

            dst = acc[:, a0 - y0:a1 - y0, b0 - x0:b1 - x0]  # a view: += writes into acc
            src = (slice(None), slice(a0 - oy, a1 - oy), slice(b0 - ox, b1 - ox))

            def add(p, dst=dst, src=src, w=w):  # runs at once, under the cache's lock
                if p is not None:  # in torch: numpy's float16 arithmetic is five times slower
                    torch.from_numpy(dst).add_(
                        torch.from_numpy(p[src]).float().mul_(torch.from_numpy(w)))

            if not self._cache.use((ty, tx), add):  # evicted by another thread meanwhile
                self._run([(ty, tx)])
                self._cache.use((ty, tx), add)
            wsum[a0 - y0:a1 - y0, b0 - x0:b1 - x0] += w
        acc /= np.maximum(wsum, 1e-12, out=wsum)  # in place: bands are tens of MB
        return acc

    def level_block(self, level: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Binary masks ``(n_tissues, y1-y0, x1-x0)`` uint8 for a block of a slide level."""
        return self._cached_block((level, y0, y1, x0, x1), None)

    def tissue_block(self, index: int, level: int, y0: int, y1: int, x0: int, x1: int
                     ) -> np.ndarray:
        """Binary mask ``(y1-y0, x1-x0)`` uint8 of the engine's ``index``-th tissue.

        Only that tissue is resampled: when the masks of tissues sharing this engine are
        written one file after the other, each block is resampled once per tissue, not once
        per tissue for every tissue.
        """
        return self._cached_block((level, y0, y1, x0, x1), index)[0]

    def _cached_block(self, key: tuple[int, int, int, int, int], index: int | None
                      ) -> np.ndarray:
        # the last few blocks are kept: several arrays (levels, tissues) ask for the same ones
        every, this = (*key, None), (*key, index)  # all of the engine's tissues, or one
        with self._lock:
            if every in self._blocks:
                full = self._blocks[every]
                return full if index is None else full[index:index + 1]
            if this in self._blocks:
                return self._blocks[this]
        out = self._level_block(*key, None if index is None else [index])
        with self._lock:
            self._blocks[this] = out
            while len(self._blocks) > 16:
                self._blocks.popitem(last=False)
        return out

    def _level_block(self, level: int, y0: int, y1: int, x0: int, x1: int,
                     indices: list[int] | None = None) -> np.ndarray:
        r = self.scale0 * self.slide.downsamples[level]  # working pixels per level pixel
        if r < 1:
            return self._upsampled_mask(r, y0, y1, x0, x1, indices)
        # one level pixel of context on each side: the anti-aliasing filter reaches into the
        # neighbouring level pixels, so without it a block's border would depend on where the
        # chunks fall (and the lazy pyramid, the widget and the mask files would disagree)
        h, w = self.slide.levels[level].shape[:2]
        py0, px0, py1, px1 = max(0, y0 - 1), max(0, x0 - 1), min(h, y1 + 1), min(w, x1 + 1)
        wy0, wx0 = int(np.floor(py0 * r)), int(np.floor(px0 * r))
        wy1 = min(self.shape[0], max(wy0 + 1, int(np.ceil(py1 * r))))
        wx1 = min(self.shape[1], max(wx0 + 1, int(np.ceil(px1 * r))))
        prob = self.probabilities(wy0, wy1, wx0, wx1)
        if indices is not None:
            prob = prob[indices]
        if prob.shape[1:] != (py1 - py0, px1 - px0):
            prob = _downsample(prob, (py1 - py0, px1 - px0))
        prob = prob[:, y0 - py0:y1 - py0, x0 - px0:x1 - px0]
        return (prob > 0.5).astype(np.uint8)

    def _upsampled_mask(self, r: float, y0: int, y1: int, x0: int, x1: int,
                        indices: list[int] | None = None) -> np.ndarray:
        """Masks of level pixels finer than the working grid: bilinear probabilities > 0.5.

        Each level pixel samples the working grid at its own centre, reading one working pixel
        beyond the block, so neighbouring blocks agree exactly along their common border. A
        tissue whose working pixels are all on one side of 0.5 is constant over the block (a
        bilinear value lies between its four neighbours), which most blocks are: no sampling.
        """
        cy = (np.arange(y0, y1) + 0.5) * r - 0.5
        cx = (np.arange(x0, x1) + 0.5) * r - 0.5
        wy0 = max(0, int(np.floor(cy[0])))
        wy1 = min(self.shape[0], int(np.floor(cy[-1])) + 2)
        wx0 = max(0, int(np.floor(cx[0])))
        wx1 = min(self.shape[1], int(np.floor(cx[-1])) + 2)
        prob = self.probabilities(wy0, wy1, wx0, wx1)
        if indices is not None:
            prob = prob[indices]
        out = np.zeros((len(prob), y1 - y0, x1 - x0), np.uint8)
        for k, p in enumerate(prob):
            above = p > 0.5
            if above.all():
                out[k] = 1
            elif above.any():
                out[k] = _lerp(_lerp(p[None], cy - wy0, axis=1), cx - wx0, axis=2)[0] > 0.5
        return out


def _lerp(a: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``a`` at fractional ``coords`` along ``axis`` (edges clamp)."""
    n = a.shape[axis]
    c = np.clip(coords, 0, n - 1)
    i0 = np.minimum(np.floor(c).astype(int), max(n - 2, 0))
    f = (c - i0).astype(np.float32)
    lo = np.take(a, i0, axis=axis).astype(np.float32)
    hi = np.take(a, np.minimum(i0 + 1, n - 1), axis=axis).astype(np.float32)
    shape = [1] * a.ndim
    shape[axis] = len(c)
    f = f.reshape(shape)
    return lo + f * (hi - lo)


def _downsample(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Anti-aliased bilinear resize of ``(n, h, w)`` probabilities to a coarser ``size``."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(prob, np.float32))[None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False,
                         antialias=True)[0].numpy()


def working_magnifications(tissues: Sequence[str] | str,
                           magnification: float | None = None) -> dict[str, float]:
    """Each tissue's working magnification: ``magnification`` for all, else (None) its optimal
    one. ``tissues`` are codes or ``("all",)``; unknown codes and powers are told."""
    if isinstance(tissues, str):  # "ptc" is one tissue, not three letters
        tissues = (tissues,)
    codes = list(vocab.TISSUE_CODES) if list(tissues) == ["all"] else [
        vocab.tissue(t).code for t in tissues]
    out = {}
    for code in codes:
        mag = float(magnification) if magnification else vocab.tissue(code).optimal_magnification
        vocab.scale_id(mag)
        out[code] = float(mag)
    return out


def make_engines(
    slide: Slide,
    tissues: Sequence[str] = ("ptc",),
    magnification: float | None = None,
    model: Any = None,
    tile: int = 256,
    overlap: int = 64,
    bf16: bool | None = None,
    mask_glass: bool = True,
    cache_rows: int | None = None,
    normalise_stain: str = "none",
    flips: bool = False,
) -> dict[str, tuple[TileEngine, int]]:
    """For each tissue, the engine of its working magnification and its index in that engine
    (tissues that share a magnification share an engine: one backbone pass per tile).

    Parameters
    ----------
    slide : Slide
        From :func:`~napari_omniseg.open_slide` (with a known pixel size).
    tissues, magnification
        Tissue codes or ``("all",)``; one working magnification for all (None: each
        tissue's optimal one).
    model : torch.nn.Module or str, optional
        A loaded model, a checkpoint path, or a bundled name; default the bundled renal model.
    tile, overlap, bf16, mask_glass
        Network window and overlap; bfloat16 autocast (default: on a CPU that computes it in
        hardware, :func:`~napari_omniseg.checkpoints.default_bf16`); keep predictions off the
        glass around the tissue (found on the slide's thumbnail).
    cache_rows : int, optional
        Rows of network tiles each engine keeps (:class:`TileEngine`); default: up to 512 MB
        per working magnification, for panning back and forth in a viewer.
    normalise_stain : StainNormalisation or str
        Map the slide's colours to the stain the model was trained on first ("reinhard",
        "macenko"; default "none"), fitted once on the slide
        (:func:`~napari_omniseg.predict.stain_norm.normalised_slide`).
    flips : bool
        Average each tile's answer over its four mirror images (four times the network work;
        docs/training.md measures what it buys).
    """
    from ..checkpoints import model_and_precision
    from ..choices import StainNormalisation

    if slide.magnification is None:
        slide.require_mpp()
    if min(slide.shape) < 64:
        raise OmnisegInputError(f"the image is {slide.shape[0]} x {slide.shape[1]} pixels; the "
                                "kidney models need at least 64 x 64 (a field of view)")
    mags = working_magnifications(tissues, magnification)
    codes = list(mags)
    model, bf16 = model_and_precision(model, "renal", bf16)
    if StainNormalisation(normalise_stain) != StainNormalisation.NONE:
        from .stain_norm import normalised_slide, reference_of

        slide = normalised_slide(slide, reference_of(model, normalise_stain))
    groups: dict[float, list[str]] = {}
    for code, mag in mags.items():
        groups.setdefault(mag, []).append(code)
    on_tissue = tissue_mask(slide) if mask_glass else None
    out: dict[str, tuple[TileEngine, int]] = {}
    for mag, group in groups.items():
        engine = TileEngine(slide, model, mag, group, tile=tile, overlap=overlap, bf16=bf16,
                            tissue_mask=on_tissue, cache_rows=cache_rows, flips=flips)
        for i, code in enumerate(group):
            out[code] = (engine, i)
    return {c: out[c] for c in codes}


def segment_slide(slide: Slide, tissues: Sequence[str] = ("ptc",),
                  magnification: float | None = None, model: Any = None, chunk: int = 512,
                  **engine: Any) -> dict[str, list[da.Array]]:
    """Lazy per-tissue mask pyramids aligned with the slide's levels.

    Parameters
    ----------
    slide : Slide
        From :func:`~napari_omniseg.open_slide`.
    tissues : sequence of str
        Tissue codes (``"ptc"``, ...), or ``("all",)``.
    magnification : float, optional
        The working magnification of every tissue; None: each tissue's optimal one.
    model : torch.nn.Module or str, optional
        A renal model, a checkpoint path or a bundled name (default ``"renal"``).
    chunk : int
        The dask chunk size of the output levels (pixels): at the working level a 512 px
        chunk is 16 network tiles, so the first answer comes quickly and little is computed
        outside the view.
    **engine
        :func:`make_engines`'s options (tile, overlap, bf16, mask_glass, cache_rows,
        normalise_stain, flips).

    Returns
    -------
    dict of str to list of dask.array.Array
        For each tissue, one ``(Y, X)`` uint8 0/1 array per slide level. Nothing is computed
        until a chunk is.
    """
    engines = make_engines(slide, tissues, magnification, model, **engine)
    return {code: [_level_array(engine, k, lv.shape[:2], chunk, i)
                   for k, lv in enumerate(slide.levels)]
            for code, (engine, i) in engines.items()}


def fill_region(
    engines: dict[str, tuple[TileEngine, int]],
    outputs: dict[str, list],
    box: tuple[int, int, int, int],
    chunk: int = 512,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> int:
    """Compute the masks of a level-0 box into writable per-level arrays, chunk by chunk.

    ``engines`` come from :func:`make_engines`; ``outputs`` hold, per tissue, one array per
    slide level supporting ``arr[y0:y1, x0:x1] = block`` (numpy, zarr); ``box`` is
    ``(y0, y1, x0, x1)`` in level-0 pixels; ``chunk`` the chunk side on the working grid.
    Chunks nearest the box's centre come first. ``progress`` is called after each chunk and
    ``should_stop`` before each: a stop raises :class:`~napari_omniseg.run.Stopped` and the
    chunks written so far stay (each is correct). Returns the number of chunks computed.
    """
    y0, y1, x0, x1 = box
    by_engine: dict[int, tuple[TileEngine, list[tuple[str, int]]]] = {}
    for code, (engine, i) in engines.items():
        by_engine.setdefault(id(engine), (engine, []))[1].append((code, i))
    jobs = []
    for engine, members in by_engine.values():
        s = engine.scale0
        wy0, wy1 = int(np.floor(y0 * s)), min(engine.shape[0], int(np.ceil(y1 * s)))
        wx0, wx1 = int(np.floor(x0 * s)), min(engine.shape[1], int(np.ceil(x1 * s)))
        cy, cx = (wy0 + wy1) / 2, (wx0 + wx1) / 2
        for a in range(wy0 - wy0 % chunk, wy1, chunk):
            for b in range(wx0 - wx0 % chunk, wx1, chunk):
                dist = (a + chunk / 2 - cy) ** 2 + (b + chunk / 2 - cx) ** 2
                jobs.append((dist, engine, members, max(a, wy0), min(a + chunk, wy1),
                             max(b, wx0), min(b + chunk, wx1)))
    jobs.sort(key=lambda j: j[0])
    for n, (_, engine, members, a0, a1, b0, b1) in enumerate(jobs):
        check_stop(should_stop)
        engine.probabilities(a0, a1, b0, b1)  # runs the network on the chunk's tiles
        for level, ds in enumerate(engine.slide.downsamples):
            r = engine.scale0 * ds  # working pixels per level pixel
            ly0, ly1 = int(np.floor(a0 / r)), int(np.ceil(a1 / r))
            lx0, lx1 = int(np.floor(b0 / r)), int(np.ceil(b1 / r))
            h, w = engine.slide.levels[level].shape[:2]
            ly1, lx1 = min(ly1, h), min(lx1, w)
            if ly1 <= ly0 or lx1 <= lx0:
                continue
            block = engine.level_block(level, ly0, ly1, lx0, lx1)
            for code, i in members:
                outputs[code][level][ly0:ly1, lx0:lx1] = block[i]
        report(progress, n + 1, len(jobs), f"chunk {n + 1} of {len(jobs)}")
    return len(jobs)


def _level_array(engine: TileEngine, level: int, shape: tuple[int, int], chunk: int,
                 index: int) -> da.Array:
    chunks = tuple(tuple(min(chunk, n - s) for s in range(0, n, chunk)) for n in shape)

    def block(block_info=None) -> np.ndarray:
        (y0, y1), (x0, x1) = block_info[None]["array-location"]
        return engine.tissue_block(index, level, y0, y1, x0, x1)

    return da.map_blocks(block, chunks=chunks, dtype=np.uint8, meta=np.empty((0, 0), np.uint8))


def reading_level(slide: Slide, magnification: float) -> int:
    """The slide level a working magnification is read from: the coarsest level still at
    least as fine as the working grid (3% slack: a 0.2525 µm/px scanner's 40x is 40x)."""
    mag0 = float(slide.magnification or magnification)
    usable = [k for k, d in enumerate(slide.downsamples) if mag0 / d >= magnification * 0.97]
    return max(usable) if usable else 0


def read_working_region(slide: Slide, magnification: float, box: tuple[int, int, int, int]
                        ) -> np.ndarray:
    """The RGB of a level-0 box at a working magnification, read as Segment reads it.

    Parameters
    ----------
    slide : Slide
        With a known magnification.
    magnification : float
        The working magnification.
    box : (int, int, int, int)
        ``(y0, y1, x0, x1)`` in level-0 pixels.

    Returns
    -------
    numpy.ndarray
        ``(h, w, 3)`` uint8, ``h, w`` the box's size at the working magnification.
    """
    from skimage.transform import resize

    mag0 = float(slide.magnification or magnification)
    scale0 = magnification / mag0
    level = reading_level(slide, magnification)
    d = slide.downsamples[level]
    y0, y1, x0, x1 = box
    lvl = slide.levels[level]
    ly0, lx0 = int(np.floor(y0 / d)), int(np.floor(x0 / d))
    ly1, lx1 = min(lvl.shape[0], int(np.ceil(y1 / d))), min(lvl.shape[1], int(np.ceil(x1 / d)))
    region = np.asarray(lvl[ly0:ly1, lx0:lx1].compute(scheduler="synchronous"))
    out = (max(1, int(round((y1 - y0) * scale0))), max(1, int(round((x1 - x0) * scale0))))
    if region.shape[:2] != out:
        f = (mag0 / d) / magnification
        region = (resize(region, out, order=1, anti_aliasing=f > 1, preserve_range=True)
                  + 0.5).astype(np.uint8)
    return region


def write_working_mask(levels: Sequence[Any], downsamples: Sequence[float],
                       box: tuple[int, int, int, int], mask: np.ndarray) -> None:
    """Write a 0/1 mask made on the working grid of a level-0 box into every slide level.

    Parameters
    ----------
    levels : sequence of arrays
        One writable ``(Y, X)`` uint8 array per slide level (numpy, zarr).
    downsamples : sequence of float
        Each level's downsample from level 0.
    box : (int, int, int, int)
        ``(y0, y1, x0, x1)`` in level-0 pixels that ``mask`` covers.
    mask : numpy.ndarray
        ``(h, w)`` bool on the working grid of the box (nearest-neighbour to each level).
    """
    y0, y1, x0, x1 = box
    h, w = mask.shape
    for lvl, d in zip(levels, downsamples):
        ly0, lx0 = int(np.ceil(y0 / d)), int(np.ceil(x0 / d))
        ly1, lx1 = min(lvl.shape[0], int(np.floor(y1 / d))), min(lvl.shape[1],
                                                                 int(np.floor(x1 / d)))
        if ly1 <= ly0 or lx1 <= lx0:
            continue
        # the working pixel under each level pixel's centre
        rows = np.clip(((np.arange(ly0, ly1) + 0.5) * d - y0) * h / (y1 - y0), 0, h - 1)
        cols = np.clip(((np.arange(lx0, lx1) + 0.5) * d - x0) * w / (x1 - x0), 0, w - 1)
        lvl[ly0:ly1, lx0:lx1] = mask[np.ix_(rows.astype(int), cols.astype(int))].astype(
            np.uint8)
