"""The training losses: Omni-Seg+'s Dice + binary cross-entropy on two one-hot channels, with
extra weight on a thin ring just outside objects (where touching structures must be kept
apart); CoNeMOS's soft Dice (and Dice + BCE) over the known voxels of partially labelled
volumes; the weight of synthetic pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Loss weight of generated (synthetic) pairs when a segmenter trains on them beside real ones:
#: the pyramid cGAN paper's cross-entropy coefficient. Fine-tuning and the three-player game
#: both use it.
SYNTHETIC_WEIGHT = 0.03


def ring_weights(target: torch.Tensor, ring_px: int = 2, ring_weight: float = 1.2) -> torch.Tensor:
    """1 everywhere, ``ring_weight`` within ``ring_px`` pixels outside the foreground."""
    k = 2 * ring_px + 1
    grown = F.max_pool2d(target[:, None].float(), k, stride=1, padding=ring_px)[:, 0]
    ring = (grown > 0) & (target == 0)
    return 1 + (ring_weight - 1) * ring.float()


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
                  ring_px: int = 2, ring_weight: float = 1.2,
                  sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of Dice + weighted BCE (each sample weighted by ``sample_weight``,
    default 1: synthetic pairs count less than real ones).

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, 2, H, W)``, background then foreground.
    target : torch.Tensor
        ``(N, H, W)`` 0/1.
    valid : torch.Tensor, optional
        ``(N, H, W)`` 0/1: pixels whose label is known; the rest contribute nothing (partial
        annotation).
    """
    target = target.float()
    onehot = torch.stack([1 - target, target], dim=1)
    prob = torch.softmax(logits.float(), dim=1)
    w = ring_weights(target, ring_px, ring_weight)
    if valid is not None:
        w = w * valid.float()
    w = w[:, None]
    inter = (prob * onehot * w).sum((2, 3))
    denom = (prob * w).sum((2, 3)) + (onehot * w).sum((2, 3))
    dice = 1 - (2 * inter + 1) / (denom + 1)
    if sample_weight is None:
        bce = F.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), onehot,
                                     weight=w.expand_as(prob), reduction="sum")
        return dice.mean() + bce / (w.sum() * 2).clamp(min=1)
    sw = sample_weight.float().to(logits.device)
    per_pixel = F.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), onehot,
                                       weight=w.expand_as(prob), reduction="none")
    bce = (per_pixel.sum((1, 2, 3)) * sw).sum() / ((w.sum((1, 2, 3)) * 2 * sw).sum()).clamp(
        min=1e-6)
    return (dice.mean(1) * sw).sum() / sw.sum().clamp(min=1e-6) + bce


def soft_dice_loss(logits, target, valid=None, eps: float = 1.0):
    """1 - soft Dice of sigmoid(logits) against 0/1 targets, per sample, averaged.

    The denominator sums squares (V-Net's soft Dice): with plain sums, a network that starts
    near 0.5 everywhere escapes the large background by answering "nothing" and stays there.
    ``valid`` (same shape, optional) drops voxels or whole channels whose label is unknown; a
    sample with nothing valid contributes zero.
    """
    p = torch.sigmoid(logits.float())
    t = target.float()
    w = torch.ones_like(p) if valid is None else valid.float()
    dims = tuple(range(2, p.ndim))
    inter = (p * t * w).sum(dims)
    denom = (p * p * w).sum(dims) + (t * t * w).sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    known = (w.sum(dims) > 0).float()
    return ((1 - dice) * known).sum() / known.sum().clamp(min=1)


def soft_dice_bce_loss(logits, target, valid=None):
    """:func:`soft_dice_loss` plus the mean binary cross-entropy over known voxels.

    The cross-entropy gives every voxel its own gradient, where the Dice of a region of about
    a hundred voxels (the eyes) hinges on a handful of them.
    """
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    if valid is None:
        bce = bce.mean()
    else:
        w = valid.float()
        bce = (bce * w).sum() / w.sum().clamp(min=1)
    return soft_dice_loss(logits, target, valid) + bce


#: The volume losses by name (``omniseg train fetal --loss``).
VOLUME_LOSSES = {"dice": soft_dice_loss, "dice+bce": soft_dice_bce_loss}
