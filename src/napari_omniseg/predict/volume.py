"""Region masks for a 3D volume with a region-conditioned network (CoNeMOS).

Intensities are rescaled by the 0.5 / 99.5 percentiles, the volume is padded to a multiple of
16, and the requested regions are evaluated one after the other (FiLM changes every layer, so
they share no work, and one batch of all of them needs several times the memory). Volumes
larger than the window are covered by overlapping windows blended with weights that fade at
their borders.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import dask
import dask.array as da
import numpy as np

from .. import vocab
from ..io.volumes import Volume


#: Regions that are one connected piece of tissue: any other piece of their predicted mask is a
#: false positive. (Not the eyes: two globes, and a thin prediction of one may break in two.)
SINGLE_PIECE_REGIONS = ("uterus", "body", "brain", "placenta")


def keep_largest_piece(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected piece of a 3D 0/1 mask (same dtype; empty stays empty)."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return (labels == 1 + int(np.argmax(sizes))).astype(mask.dtype)


def masks_from_probabilities(prob: np.ndarray, codes: Sequence[str],
                             largest_piece: bool = True) -> np.ndarray:
    """uint8 0/1 masks from :func:`predict_regions`'s probabilities of the regions ``codes``.

    Thresholds at 0.5; with ``largest_piece``, regions of :data:`SINGLE_PIECE_REGIONS` keep
    only their largest piece.
    """
    out = (prob > 0.5).astype(np.uint8)
    for k, code in enumerate(codes):
        if largest_piece and code in SINGLE_PIECE_REGIONS:
            out[k] = keep_largest_piece(out[k])
    return out


def _window_weights(shape: tuple[int, int, int], overlap: int) -> np.ndarray:
    ramps = []
    for n in shape:
        r = np.ones(n, np.float32)
        if overlap:
            up = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
            r[:overlap], r[-overlap:] = up, up[::-1]
        ramps.append(r)
    return (ramps[0][:, None, None] * ramps[1][None, :, None] * ramps[2][None, None, :]) ** 2


def _starts(n: int, window: int, stride: int) -> list[int]:
    if n <= window:
        return [0]
    s = list(range(0, n - window, stride))
    return s + [n - window]


def predict_regions(model: Any, volume: np.ndarray, region_ids: Sequence[int], window: int = 128,
                    overlap: int = 32, flips: bool = False, bf16: bool = False,
                    normalize: bool = True) -> np.ndarray:
    """Foreground probabilities ``(len(region_ids), Z, Y, X)`` of a volume.

    ``normalize=False`` when the intensities were already rescaled (a crop of a larger volume
    keeps the whole volume's rescaling).
    """
    import torch

    from ..train.fetal import normalize_intensity

    vol = np.asarray(volume, np.float32)
    vol = normalize_intensity(vol) if normalize else vol
    shape = vol.shape
    padded = [max(window if n > window else 0, -(-n // 16) * 16) for n in shape]
    vol = np.pad(vol, [(0, p - n) for p, n in zip(padded, shape)])
    win = [min(window, p) for p in padded]
    weights = _window_weights(tuple(win), overlap if any(p > window for p in padded) else 0)
    acc = np.zeros((len(region_ids), *padded), np.float32)
    wsum = np.zeros(padded, np.float32)
    dev = next(model.parameters()).device
    for z in _starts(padded[0], win[0], win[0] - overlap):
        for y in _starts(padded[1], win[1], win[1] - overlap):
            for x in _starts(padded[2], win[2], win[2] - overlap):
                sl = (slice(z, z + win[0]), slice(y, y + win[1]), slice(x, x + win[2]))
                t = torch.from_numpy(np.ascontiguousarray(vol[sl]))[None, None].to(dev)
                # one region per pass: as fast as one batch of all regions (FiLM leaves
                # nothing to share) and the batch of five 128^3 passes held 4 GB, not 1.5
                for k, rid in enumerate(region_ids):
                    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16,
                                                         enabled=bf16):
                        p = torch.sigmoid(model.forward_regions(t, [rid]).float())
                        if flips:
                            for axis in (2, 3, 4):
                                f = model.forward_regions(t.flip(axis), [rid])
                                p = p + torch.sigmoid(f.float()).flip(axis)
                            p = p / 4
                    acc[k][sl] += p[0, 0].cpu().numpy() * weights
                wsum[sl] += weights
    out = acc / np.maximum(wsum, 1e-12)
    return out[:, : shape[0], : shape[1], : shape[2]]


def segment_volume(volume: Volume, regions: Sequence[str] = ("brain",), model: Any = None,
                   window: int = 128, flips: bool = False, bf16: bool | None = None,
                   largest_piece: bool = True) -> dict[str, da.Array]:
    """Lazy uint8 0/1 masks of fetal regions, each with the volume's shape.

    Parameters
    ----------
    volume : Volume
        From :func:`~napari_omniseg.open_volume`.
    regions : sequence of str
        Region codes, or ``("all",)``.
    model : torch.nn.Module or str, optional
        A CoNeMOS model, a checkpoint path or a bundled name (default ``"fetal"``).
    window : int
        Largest window side; bigger volumes are tiled.
    flips : bool
        Average the three axis flips as well (4x slower).
    largest_piece : bool
        Keep only the largest connected piece of the regions that are one piece of tissue
        (:data:`SINGLE_PIECE_REGIONS`).

    Returns
    -------
    dict of str to dask.array.Array
        All regions are computed together the first time any of them is.
    """
    from ..models import model_and_precision

    codes = list(vocab.FETAL_REGION_CODES) if list(regions) == ["all"] else [
        vocab.fetal_region(r).code for r in regions]
    model, bf16 = model_and_precision(model, "fetal", bf16)
    ids = [vocab.fetal_region(c).region_id for c in codes]

    done: dict = {}
    lock = threading.Lock()

    @dask.delayed(pure=True)
    def masks() -> np.ndarray:
        # kept after the first compute: each region's array is usually computed on its own,
        # and without this every one of them ran the network for all the regions again
        with lock:
            if "masks" not in done:
                prob = predict_regions(model, np.asarray(volume.data), ids, window,
                                       flips=flips, bf16=bf16)
                done["masks"] = masks_from_probabilities(prob, codes, largest_piece)
            return done["masks"]

    stacked = da.from_delayed(masks(), (len(codes), *volume.data.shape), np.uint8)
    return {c: stacked[i] for i, c in enumerate(codes)}
