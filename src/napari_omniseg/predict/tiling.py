"""Run a conditional segmenter over an image larger than its window, without seams.

Tiles overlap; each tile's prediction is weighted by a window that falls to zero at the tile's
border, so every pixel's result is dominated by tiles that see it with context on all sides
(GroupNorm statistics differ from tile to tile, and this hides it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..run import Progress, ShouldStop, check_stop, report


def blend_weights(shape: tuple[int, ...], overlaps: tuple[int, ...],
                  sides: tuple[tuple[bool, bool], ...] | None = None) -> np.ndarray:
    """Weights of one window of any dimension: 1 inside, a squared ramp over ``overlaps[i]``
    samples towards both ends of axis ``i`` (no ramp where the overlap is 0).

    ``sides`` (one ``(low, high)`` pair per axis) says which ends have a neighbouring window;
    an end on the image border keeps full weight, since no other window covers those samples.
    """
    weights: Any = None
    for axis, (n, overlap) in enumerate(zip(shape, overlaps)):
        lo, hi = sides[axis] if sides is not None else (True, True)
        r = np.ones(n, np.float32)
        if overlap > 0:
            up = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
            if lo:
                r[:overlap] = up
            if hi:
                r[-overlap:] = up[::-1]
        weights = r if weights is None else np.multiply.outer(weights, r)
    return weights ** 2


def blend_window(tile: int, overlap: int, sides: tuple[bool, bool, bool, bool] = (True,) * 4
                 ) -> np.ndarray:
    """2D :func:`blend_weights` of a square tile; ``sides`` is (top, bottom, left, right)."""
    top, bottom, left, right = sides
    return blend_weights((tile, tile), (overlap, overlap), ((top, bottom), (left, right)))


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile origins covering [0, length), the last one flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def tile_weights(shape: tuple[int, int], tile: int, overlap: int
                 ) -> Callable[[tuple], np.ndarray]:
    """The blend weights of the square tile at each origin of a 2D grid over ``shape``
    (:func:`blend_window`; an edge on the image border keeps full weight), made once per kind
    of tile."""
    h, w = shape
    windows: dict = {}

    def weights(origin: tuple) -> np.ndarray:
        y, x = origin
        sides = (y > 0, y + tile < h, x > 0, x + tile < w)
        if sides not in windows:
            windows[sides] = blend_window(tile, overlap, sides)
        return windows[sides]

    return weights


def blend_windows(shape: tuple[int, ...], window: tuple[int, ...], overlap: int, channels: int,
                  predict: Callable[[list], np.ndarray], weights: Callable[[tuple], np.ndarray],
                  *, batch: int = 1, eps: float = 1e-6, progress: Progress | None = None,
                  should_stop: ShouldStop | None = None) -> np.ndarray:
    """Blend a network's answers over overlapping windows covering an array (2D or 3D).

    ``predict(origins)`` returns ``(len(origins), channels, *window)`` float32 for up to
    ``batch`` window origins; each answer is weighted by ``weights(origin)`` (a
    :func:`blend_weights`) and the sum divided by the sum of weights (at least ``eps``).
    ``progress`` and ``should_stop`` are the run contract, once per batch.

    Returns
    -------
    numpy.ndarray
        ``(channels, *shape)`` float32.
    """
    starts = [tile_starts(n, w, w - overlap) for n, w in zip(shape, window)]
    origins = list(itertools.product(*starts))
    acc = np.zeros((channels, *shape), np.float32)
    wsum = np.zeros(shape, np.float32)
    for i in range(0, len(origins), batch):
        check_stop(should_stop)
        chunk = origins[i:i + batch]
        for origin, p in zip(chunk, predict(chunk)):
            sl = tuple(slice(o, o + w) for o, w in zip(origin, window))
            w = weights(origin)
            every_channel = (slice(None), *sl)
            acc[every_channel] += p * w
            wsum[sl] += w
        done = min(i + batch, len(origins))
        report(progress, done, len(origins), f"window {done} of {len(origins)}")
    return acc / np.maximum(wsum, eps)


def predict_array(
    model,
    image: np.ndarray,
    conditions: Sequence[tuple[int, int]],
    tile: int = 256,
    overlap: int = 64,
    batch: int = 4,
    device: str | None = None,
    bf16: bool = False,
    should_stop: ShouldStop | None = None,
) -> np.ndarray:
    """Foreground probability of each condition over a whole RGB image.

    ``model`` has ``forward_conditions(images, conditions)``; ``image`` is ``(H, W, 3)``
    uint8; the ``(task_id, scale_id)`` ``conditions`` share one backbone pass per tile of
    ``tile`` pixels (a multiple of 16), ``overlap`` with its neighbours, ``batch`` tiles per
    forward pass, under bfloat16 autocast when ``bf16``. Returns ``(len(conditions), H, W)``
    float32 in [0, 1].
    """
    import torch

    if tile % 16:
        raise ValueError("tile must be a multiple of 16")
    h, w = image.shape[:2]
    ph, pw = max(h, tile), max(w, tile)
    if (ph, pw) != (h, w):
        image = np.pad(image, ((0, ph - h), (0, pw - w), (0, 0)), mode="reflect")
    dev = next(model.parameters()).device if device is None else torch.device(device)
    weights = tile_weights((ph, pw), tile, overlap)

    def predict(chunk: list) -> np.ndarray:
        x = np.stack([image[y:y + tile, x0:x0 + tile] for y, x0 in chunk])
        xt = torch.from_numpy(x).to(dev).permute(0, 3, 1, 2).float().div_(255)
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model.forward_conditions(xt, list(conditions))
        return torch.softmax(logits.float(), dim=2)[:, :, 1].cpu().numpy()

    out = blend_windows((ph, pw), (tile, tile), overlap, len(conditions), predict, weights,
                        batch=batch, should_stop=should_stop)
    return out[:, :h, :w]
