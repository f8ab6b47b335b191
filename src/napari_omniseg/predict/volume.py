"""Region masks for a 3D volume with a region-conditioned network (CoNeMOS).

Intensities are rescaled by the 0.5 / 99.5 percentiles, the volume is padded to a multiple of
16, and the requested regions are evaluated one after the other (FiLM changes every layer, so
they share no work, and one batch of all of them needs several times the memory). Volumes
larger than the window are covered by overlapping windows blended with weights that fade at
their borders.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np

from .. import vocab
from ..errors import OmnisegInputError
from ..io.volumes import Volume
from ..run import Progress, ShouldStop, scaled
from .tiling import blend_weights, blend_windows

#: Regions that are one connected piece of tissue: any other piece of their predicted mask is a
#: false positive. (Not the eyes: two globes, and a thin prediction of one may break in two.)
SINGLE_PIECE_REGIONS = ("uterus", "body", "brain", "placenta")

#: Regions that lie inside another one (region -> container): a predicted piece of them that
#: is not at least half inside the container's mask is a false positive. The eyes are part of
#: the fetal body; a network asked for "eyes" answers small bright globes anywhere, and most of
#: its false ones are outside the fetus.
INSIDE_REGIONS = {"eyes": "body"}


def _pieces(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The 26-connected pieces of a 3D mask: labels (0 outside, 1..n) and their count n."""
    from scipy import ndimage

    return ndimage.label(mask, structure=np.ones((3, 3, 3), bool))


def keep_largest_piece(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected piece of a 3D 0/1 mask (same dtype; empty stays empty)."""
    labels, n = _pieces(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return (labels == 1 + int(np.argmax(sizes))).astype(mask.dtype)


def keep_pieces_inside(mask: np.ndarray, container: np.ndarray,
                       fraction: float = 0.5) -> np.ndarray:
    """The 26-connected pieces of ``mask`` with at least ``fraction`` of their voxels in
    ``container`` (same dtype as ``mask``)."""
    from scipy import ndimage

    labels, n = _pieces(mask)
    if n == 0:
        return mask
    inside = np.asarray(ndimage.mean(container > 0, labels, np.arange(1, n + 1)))
    keep = np.flatnonzero(inside >= fraction) + 1
    return np.isin(labels, keep).astype(mask.dtype)


def regions_to_predict(codes: Sequence[str], clean_up: bool = True) -> list[str]:
    """``codes`` plus the containers their clean-up needs (see :data:`INSIDE_REGIONS`)."""
    out = list(codes)
    if clean_up:
        out += [INSIDE_REGIONS[c] for c in codes if c in INSIDE_REGIONS
                and INSIDE_REGIONS[c] not in out]
    return out


def masks_from_probabilities(prob: np.ndarray, codes: Sequence[str],
                             clean_up: bool = True) -> np.ndarray:
    """uint8 0/1 masks from :func:`predict_regions`'s probabilities of the regions ``codes``.

    Thresholds at 0.5. With ``clean_up``, regions of
    :data:`SINGLE_PIECE_REGIONS` keep only their largest piece, and regions of
    :data:`INSIDE_REGIONS` only their pieces at least half inside their container (which must
    then be among ``codes``: :func:`regions_to_predict`).
    """
    codes = list(codes)
    out = (prob > 0.5).astype(np.uint8)
    if not clean_up:
        return out
    for k, code in enumerate(codes):
        if code in SINGLE_PIECE_REGIONS:
            out[k] = keep_largest_piece(out[k])
    for k, code in enumerate(codes):
        if code in INSIDE_REGIONS:
            container = INSIDE_REGIONS[code]
            if container not in codes:
                raise ValueError(f"the clean-up of {code!r} needs the {container!r} mask")
            out[k] = keep_pieces_inside(out[k], out[codes.index(container)])
    return out


def normalize_intensity(volume: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1] by the 0.5 and 99.5 percentiles (as at inference).

    Voxels that are NaN or infinite (a converter's or scanner's fault) do not count for the
    percentiles and become 0, the darkest value, so that they cannot spread through the
    network; a warning says how many there were.

    Raises
    ------
    OmnisegInputError
        When no voxel is finite.
    """
    finite = np.isfinite(volume)
    if finite.all():
        lo, hi = np.percentile(volume, (0.5, 99.5))
        return np.clip((volume - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)
    if not finite.any():
        raise OmnisegInputError("the volume has no finite voxel (all are NaN or infinite)")
    bad = int(volume.size - finite.sum())
    warnings.warn(f"{bad} voxels ({100 * bad / volume.size:.2g}%) are NaN or infinite; they are "
                  "treated as background", UserWarning, stacklevel=2)
    lo, hi = np.percentile(volume[finite], (0.5, 99.5))
    out = np.zeros(volume.shape, np.float32)
    out[finite] = np.clip((volume[finite] - lo) / max(hi - lo, 1e-6), 0, 1)
    return out


def predict_regions(model: Any, volume: np.ndarray, region_ids: Sequence[int], window: int = 128,
                    overlap: int = 32, flips: bool = False, bf16: bool = False,
                    normalize: bool = True, progress: Progress | None = None,
                    should_stop: ShouldStop | None = None) -> np.ndarray:
    """Foreground probabilities ``(len(region_ids), Z, Y, X)`` of a volume.

    ``normalize=False`` when the intensities were already rescaled (a crop of a larger volume
    keeps the whole volume's rescaling). ``progress`` and ``should_stop`` (the run contract)
    are called once per window; a stop raises :class:`~napari_omniseg.run.Stopped`.
    """
    import torch

    vol = np.asarray(volume, np.float32)
    vol = normalize_intensity(vol) if normalize else vol
    shape = vol.shape
    padded = [max(window if n > window else 0, -(-n // 16) * 16) for n in shape]
    vol = np.pad(vol, [(0, p - n) for p, n in zip(padded, shape)])
    win = [min(window, p) for p in padded]
    # only axes covered by several windows blend: a thick-slice stack (512 x 512 x 8) has one
    # window of 16 along its short axis, shorter than the overlap
    weights = blend_weights(tuple(win), tuple(overlap if p > window else 0 for p in padded))
    dev = next(model.parameters()).device

    def predict(chunk: list) -> np.ndarray:
        sl = tuple(slice(o, o + w) for o, w in zip(chunk[0], win))
        t = torch.from_numpy(np.ascontiguousarray(vol[sl]))[None, None].to(dev)
        # one region per pass: as fast as one batch of all regions (FiLM leaves nothing to
        # share) and the batch of five 128^3 passes held 4 GB, not 1.5
        probs = []
        for rid in region_ids:
            with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                p = torch.sigmoid(model.forward_regions(t, [rid]).float())
                if flips:
                    for axis in (2, 3, 4):
                        f = model.forward_regions(t.flip(axis), [rid])
                        p = p + torch.sigmoid(f.float()).flip(axis)
                    p = p / 4
            probs.append(p[0, 0].cpu().numpy())
        return np.stack(probs)[None]

    out = blend_windows(tuple(padded), tuple(win), overlap, len(region_ids), predict,
                        lambda origin: weights, eps=1e-12, progress=progress,
                        should_stop=should_stop)
    return out[:, : shape[0], : shape[1], : shape[2]]


def region_masks(model: Any, volume: np.ndarray, codes: Sequence[str], window: int = 128,
                 flips: bool = True, bf16: bool = False, clean_up: bool = True,
                 progress: Progress | None = None, should_stop: ShouldStop | None = None
                 ) -> np.ndarray:
    """uint8 0/1 masks ``(len(codes), Z, Y, X)`` of the regions ``codes``, made the way
    :func:`segment_volume` makes them: the containers the clean-up needs are predicted too
    (:func:`regions_to_predict`) but not returned.

    Regions are predicted one after the other (FiLM leaves them no work to share), so progress
    moves and a stop takes effect within each region; a stop raises
    :class:`~napari_omniseg.run.Stopped`.
    """
    predicted = regions_to_predict(codes, clean_up)
    vol = normalize_intensity(np.asarray(volume, np.float32))  # once for all regions
    probs = []
    for k, code in enumerate(predicted):
        region = vocab.fetal_region(code)
        probs.append(predict_regions(
            model, vol, [region.region_id], window, flips=flips, bf16=bf16, normalize=False,
            progress=scaled(progress, 1000 * k, 1000, 1000 * len(predicted),
                            f"{region.name}: "), should_stop=should_stop)[0])
    return masks_from_probabilities(np.stack(probs), predicted, clean_up)[: len(codes)]


def segment_volume(volume: Volume, regions: Sequence[str] = ("brain",), model: Any = None,
                   window: int = 128, flips: bool = True, bf16: bool | None = None,
                   clean_up: bool = True, progress: Progress | None = None,
                   should_stop: ShouldStop | None = None) -> dict[str, da.Array]:
    """Lazy uint8 0/1 masks of fetal regions, each with the volume's shape.

    Parameters
    ----------
    volume, regions
        From :func:`~napari_omniseg.open_volume`; region codes, or ``("all",)``.
    model : torch.nn.Module or str, optional
        A CoNeMOS model, a checkpoint path or a bundled name (default ``"fetal"``).
    window : int
        Largest window side; bigger volumes are tiled.
    bf16 : bool, optional
        bfloat16 autocast (None: on for the CPU).
    flips : bool
        Average the prediction with its three axis-mirrored ones (4 passes per region, so 4x
        slower). On by default: on held-out phantoms it raised every region's Dice, the eyes
        most (0.74 -> 0.88; docs/fetal.md). ``False`` for a quick preview.
    clean_up : bool
        Keep only the largest piece of the regions that are one piece of tissue
        (:data:`SINGLE_PIECE_REGIONS`), and the pieces of the eyes at least half inside the
        fetal body (:data:`INSIDE_REGIONS`; the body is then predicted too).
    progress, should_stop : callable, optional
        The run contract, during the first compute of any region (a stop raises
        :class:`~napari_omniseg.run.Stopped` from it).

    Returns
    -------
    dict of str to dask.array.Array
        All regions are computed together the first time any of them is.
    """
    from ..checkpoints import model_and_precision

    codes = list(vocab.FETAL_REGION_CODES) if list(regions) == ["all"] else [
        vocab.fetal_region(r).code for r in regions]
    model, bf16 = model_and_precision(model, "fetal", bf16)

    done: dict = {}
    lock = threading.Lock()

    @dask.delayed(pure=True)
    def masks() -> np.ndarray:
        # kept after the first compute: each region's array is usually computed on its own,
        # and without this every one of them ran the network for all the regions again
        with lock:
            if "masks" not in done:
                done["masks"] = region_masks(model, np.asarray(volume.data), codes, window,
                                             flips, bf16, clean_up, progress, should_stop)
            return done["masks"]

    stacked = da.from_delayed(masks(), (len(codes), *volume.data.shape), np.uint8)
    return {c: stacked[i] for i, c in enumerate(codes)}
