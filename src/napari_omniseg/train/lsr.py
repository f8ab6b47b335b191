"""Label super-resolution losses: a segmenter's per-block statistics matched to the block
table p(fraction | block class) (Malkin et al.'s intra-instance loss, the inter-instance and
intra + inter losses of the label super-resolution paper; digest section 3.2).

For block k with foreground probabilities p over its |X| pixels:
mu_k = mean(p), var_k = sum(p (1 - p)) / |X|^2 (the variance of a mean of independent
Bernoullis). Inter-instance pools the blocks of one class: mu = mean_k mu_k and var the spread
of the mu_k; intra + inter adds the mean within-block variance (law of total variance).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..choices import LsrDistance, LsrLoss


def block_statistics(prob: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block mean and Bernoulli variance of foreground probabilities ``(N, H, W)``.

    Returns
    -------
    (mu, var)
        Each ``(N, H // block_size, W // block_size)``.
    """
    p = prob[:, None]
    mu = F.avg_pool2d(p, block_size)[:, 0]
    var = F.avg_pool2d(p * (1 - p), block_size)[:, 0] / float(block_size * block_size)
    return mu, var


def distance(mu: torch.Tensor, var: torch.Tensor, eta: torch.Tensor, rho2: torch.Tensor,
             form: LsrDistance) -> torch.Tensor:
    """The statistics-matching distance D(mu, var; eta, rho2), elementwise.

    ``PAPER``: the paper's form as its public implementation writes it,
    ``(eta - mu)^2 var / (var + rho2 + 1e-6)^2 + log(var + 0.03)``; its mean term vanishes as
    var -> 0, so any mu is a minimum there. ``NLL``: the Gaussian negative log-likelihood of eta
    under N(mu, var + rho2), ``(eta - mu)^2 / (2 (var + rho2)) + log(var + rho2) / 2``.
    """
    form = LsrDistance(form)
    if form == LsrDistance.PAPER:
        return (eta - mu) ** 2 * var / (var + rho2 + 1e-6) ** 2 + torch.log(var + 0.03)
    total = var + rho2
    return 0.5 * (eta - mu) ** 2 / total + 0.5 * torch.log(total)


def group_statistics(mu: torch.Tensor, var: torch.Tensor, kind: LsrLoss
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and variance of one group of same-class blocks (1-D ``mu``, ``var``)."""
    m = mu.mean()
    spread = (mu ** 2).mean() - m ** 2
    if LsrLoss(kind) == LsrLoss.INTER:
        return m, spread.clamp(min=0)
    return m, (var.mean() + spread).clamp(min=0)


def lsr_loss(mu: torch.Tensor, var: torch.Tensor, keys: torch.Tensor, eta: torch.Tensor,
             sd: torch.Tensor, *, kind: LsrLoss = LsrLoss.INTRA_INTER,
             form: LsrDistance = LsrDistance.NLL, alpha: float = 0.8,
             group_size: int = 8) -> torch.Tensor:
    """The label super-resolution loss of a batch of labelled blocks.

    Parameters
    ----------
    mu, var : torch.Tensor
        ``(B,)`` statistics of the labelled blocks (:func:`block_statistics`).
    keys : torch.Tensor
        ``(B,)`` int: blocks with the same key share a class (and tissue) and may be grouped.
    eta, sd : torch.Tensor
        ``(B,)`` the table's mean and sd of each block's class.
    kind : LsrLoss
        Per block (intra), per group of same-class blocks (inter, intra + inter).
    form : LsrDistance
        The distance (:func:`distance`).
    alpha : float
        The table's sd is matched as ``alpha * sd`` (the paper's best: 0.8).
    group_size : int
        Blocks per group (K); the blocks of a class in the batch are cut into groups of K, the
        last group taking the remainder.

    Returns
    -------
    torch.Tensor
        The mean distance over blocks (intra) or groups.
    """
    rho2 = (alpha * sd) ** 2
    if LsrLoss(kind) == LsrLoss.INTRA:
        return distance(mu, var, eta, rho2, form).mean()
    terms = []
    for key in torch.unique(keys):
        idx = torch.nonzero(keys == key).flatten()
        n_groups = max(1, len(idx) // group_size)
        for chunk in torch.tensor_split(idx, n_groups):
            m, v = group_statistics(mu[chunk], var[chunk], kind)
            terms.append(distance(m, v, eta[chunk[0]], rho2[chunk[0]], form))
    return torch.stack(terms).mean()
