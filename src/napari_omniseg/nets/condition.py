"""What a generator is asked: which tissue is where (and where that is known), in which stain,
at which magnification, as input planes.

The condition of a pixel is 20 numbers: six tissue masks, six known maps, a stain one-hot and a
magnification one-hot. A known map says where the tissue's presence or absence is known: a
fully labelled simulated tile knows every tissue everywhere; a ki-dev patch knows only its one
tissue, so the generator is told nothing about the others there. Anatomy that overlaps is
stated once: a tuft pixel is a capsule pixel too (the tuft lies inside the glomerular unit).
"""

from __future__ import annotations

import numpy as np

from .. import vocab
from ..errors import OmnisegInputError

N_TISSUES = len(vocab.TISSUES)
STAIN_CODES = tuple(vocab.STAINS)
CONDITION_CHANNELS = 2 * N_TISSUES + len(STAIN_CODES) + len(vocab.MAGNIFICATIONS)
_TUFT = vocab.tissue("tuft").task_id
_CAP = vocab.tissue("cap").task_id


def masks_from_labels(labels: np.ndarray, name: str = "the mask") -> np.ndarray:
    """Six 0/1 tissue masks ``(6, H, W)`` from a painted label image (value = task id + 1;
    0 = nothing painted), with every tuft pixel also a capsule pixel.

    Raises
    ------
    OmnisegInputError
        For values outside 0-6, or an RGB image.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise OmnisegInputError(f"{name} is not a 2D label image (shape {labels.shape}); "
                                "paint on a Labels layer")
    if labels.size and (labels.max() > N_TISSUES or labels.min() < 0):
        bad = sorted(set(np.unique(labels).tolist()) - set(range(N_TISSUES + 1)))[:5]
        raise OmnisegInputError(
            f"{name} has label values {', '.join(map(str, bad))}; the tissues are 1 DT, 2 PT, "
            "3 CAP, 4 TUFT, 5 VES, 6 PTC (0: nothing painted)")
    masks = np.stack([labels == t.task_id + 1 for t in vocab.TISSUES]).astype(np.uint8)
    return implied(masks)


def implied(masks: np.ndarray) -> np.ndarray:
    """Masks with what anatomy implies added: a tuft pixel is a capsule pixel."""
    masks = masks.copy()
    masks[_CAP] |= masks[_TUFT]
    return masks


def condition_planes(masks: np.ndarray, known: np.ndarray | None, stain: str,
                     magnification: float) -> np.ndarray:
    """The ``(20, H, W)`` float32 condition of a tile.

    Parameters
    ----------
    masks : numpy.ndarray
        ``(6, H, W)`` 0/1 tissue masks.
    known : numpy.ndarray, optional
        ``(6,)`` or ``(6, H, W)``: where each tissue's masks are known; None: everywhere (a
        painted or simulated mask states all tissues, 0 meaning interstitium).
    stain : str
        Stain code (``he``, ``pas``, ``sil``, ``tri``).
    magnification : float
        Objective power (5, 10, 20 or 40).
    """
    _, h, w = masks.shape
    out = np.zeros((CONDITION_CHANNELS, h, w), np.float32)
    out[:N_TISSUES] = masks
    if known is None:
        out[N_TISSUES:2 * N_TISSUES] = 1.0
    else:
        k = np.asarray(known, np.float32)
        out[N_TISSUES:2 * N_TISSUES] = k[:, None, None] if k.ndim == 1 else k
        out[:N_TISSUES] *= out[N_TISSUES:2 * N_TISSUES]  # nothing is said where nothing is known
    out[2 * N_TISSUES + stain_index(stain)] = 1.0
    out[2 * N_TISSUES + len(STAIN_CODES) + vocab.scale_id(magnification)] = 1.0
    return out


def stain_index(stain: str) -> int:
    """Position of a stain in the condition's stain one-hot (an unknown code is one sentence)."""
    return STAIN_CODES.index(vocab.stain(stain))
