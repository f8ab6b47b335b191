"""The anatomy prior of a large painted mask, drawn once per tile and shared between chunks.

A prior-reading generator needs the prior under each chunk and its halo, and the prior needs
its own context (:func:`~napari_omniseg.simulate.mask_prior.prior_halo`, about 100 µm: 400
pixels at 40x). Drawing it per chunk, inside the chunk's window, made the generator run on
windows three times the chunk's side. Here the prior is drawn on a fixed grid of tiles, each
with its own context, kept while neighbouring chunks need it; the generator then runs on the
chunk and its own halo only. A pixel of the prior is the same whichever tile draws it, so the
result does not depend on the chunking.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

#: Tiles of at most this side (pixels): the prior draws on a tile and a narrow margin (about
#: (tile + 180)² x 100 B at 40x) after distance transforms over its whole context.
MAX_TILE = 1536


def read_window(labels: Any, y0: int, x0: int, h: int, w: int) -> np.ndarray:
    """``labels[y0:y0 + h, x0:x0 + w]`` as int64, zeros where the window leaves the image."""
    window = np.zeros((h, w), np.int64)
    ih, iw = labels.shape
    sy0, sx0 = max(0, y0), max(0, x0)
    sy1, sx1 = min(ih, y0 + h), min(iw, x0 + w)
    if sy1 > sy0 and sx1 > sx0:
        window[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = np.asarray(labels[sy0:sy1, sx0:sx1])
    return window


def tile_side(span: int, largest: int = MAX_TILE) -> int:
    """A tile side that covers ``span`` pixels in as few tiles of at most ``largest`` as
    possible, split evenly (a 2304-pixel span: two tiles of 1152, not 1536 and a sliver)."""
    n = max(1, -(-span // largest))
    return -(-span // n)


class PriorTiles:
    """The anatomy prior of ``labels`` at ``mpp`` µm per pixel, read by window.

    Parameters
    ----------
    labels : array
        ``(H, W)`` labels (numpy, dask or zarr), as :func:`~.synthesize.synthesize` takes them.
    stain, mpp, seed
        As :func:`~napari_omniseg.simulate.mask_prior.render_prior`.
    name : str
        How messages name the mask.
    margin : int
        Pixels past the image's edge that windows may ask for (the generator's halo).
    keep : int
        Tiles kept; the least recently used is dropped first.
    """

    def __init__(self, labels: Any, stain: str, mpp: float, seed: int, name: str = "the mask",
                 margin: int = 0, keep: int = 12) -> None:
        from ..simulate.mask_prior import prior_halo

        self.labels, self.stain, self.mpp, self.seed, self.name = labels, stain, mpp, seed, name
        self.halo = prior_halo(mpp)
        h, w = labels.shape
        # the grid starts at the margin's corner so a small mask needs few tiles
        self.origin = -margin
        self.tile = tile_side(max(h, w) + 2 * margin)
        self.keep = keep
        self._tiles: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._drawing: dict[tuple[int, int], threading.Lock] = {}

    def window(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """``(h, w, 3)`` uint8 prior of image pixels ``[y0, y0 + h) x [x0, x0 + w)``."""
        out = np.empty((h, w, 3), np.uint8)
        t, o = self.tile, self.origin
        for ty in range((y0 - o) // t, (y0 + h - 1 - o) // t + 1):
            for tx in range((x0 - o) // t, (x0 + w - 1 - o) // t + 1):
                tile = self._tile(ty, tx)
                ty0, tx0 = o + ty * t, o + tx * t
                ys, xs = max(y0, ty0), max(x0, tx0)
                ye, xe = min(y0 + h, ty0 + t), min(x0 + w, tx0 + t)
                out[ys - y0:ye - y0, xs - x0:xe - x0] = tile[ys - ty0:ye - ty0, xs - tx0:xe - tx0]
        return out

    def _tile(self, ty: int, tx: int) -> np.ndarray:
        key = (ty, tx)
        with self._lock:
            if key in self._tiles:
                self._tiles.move_to_end(key)
                return self._tiles[key]
            drawing = self._drawing.setdefault(key, threading.Lock())
        with drawing:  # two chunks asking for one tile at once: it is drawn once
            with self._lock:
                if key in self._tiles:
                    return self._tiles[key]
            tile = self._draw(ty, tx)
            with self._lock:
                self._tiles[key] = tile
                self._drawing.pop(key, None)
                while len(self._tiles) > self.keep:
                    self._tiles.popitem(last=False)
        return tile

    def _draw(self, ty: int, tx: int) -> np.ndarray:
        from ..nets.condition import masks_from_labels
        from ..simulate.mask_prior import render_prior

        t, c = self.tile, self.halo
        y0, x0 = self.origin + ty * t - c, self.origin + tx * t - c
        window = read_window(self.labels, y0, x0, t + 2 * c, t + 2 * c)
        return render_prior(masks_from_labels(window, self.name), self.stain, self.mpp,
                            self.seed, y0, x0, crop=c)
