"""Overlap and boundary-distance scores of binary masks."""

from __future__ import annotations

import numpy as np


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient of two binary masks; 1.0 when both are empty."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * (pred & truth).sum() / total)


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hausdorff95(pred: np.ndarray, truth: np.ndarray, spacing: float = 1.0) -> float:
    """Symmetric 95th-percentile Hausdorff distance between the masks' outlines.

    Parameters
    ----------
    pred, truth : numpy.ndarray
        Binary masks of the same shape.
    spacing : float
        Pixel size (the result is in its unit, e.g. µm).

    Returns
    -------
    float
        0.0 when both masks are empty, ``nan`` when only one is (the distance is undefined).
    """
    from scipy import ndimage

    pred, truth = pred.astype(bool), truth.astype(bool)
    if not pred.any() and not truth.any():
        return 0.0
    if not pred.any() or not truth.any():
        return float("nan")
    sp, st = _surface(pred), _surface(truth)
    to_truth = ndimage.distance_transform_edt(~st, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing)
    distances = np.concatenate([to_truth[sp], to_pred[st]])
    return float(np.percentile(distances, 95))


class PooledDice:
    """Dice of each key (a tissue, a region) pooled over every pixel of many images."""

    def __init__(self, keys) -> None:
        self.inter = dict.fromkeys(keys, 0.0)
        self.total = dict.fromkeys(keys, 0.0)

    def add(self, key: str, pred: np.ndarray, truth: np.ndarray) -> None:
        """Add one prediction and its truth to the sums of ``key``."""
        pred, truth = pred.astype(bool), truth.astype(bool)
        self.inter[key] += float((pred & truth).sum())
        self.total[key] += float(pred.sum() + truth.sum())

    def scores(self) -> dict[str, float]:
        """Dice per key (NaN where neither prediction nor truth has a pixel)."""
        return {k: 2 * self.inter[k] / t if t else float("nan") for k, t in self.total.items()}
