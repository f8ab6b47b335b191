"""3D augmentation of MRI volumes on tensors: affine, elastic, bias field, noise, gamma, flips.

Volumes are ``(N, 1, D, H, W)`` in [0, 1]; masks ``(N, 1, D, H, W)`` 0/1 and move with them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(N, 3, 3)`` from three angles per sample."""
    a, b, c = angles.unbind(1)
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    rx = torch.stack([one, zero, zero, zero, a.cos(), -a.sin(), zero, a.sin(), a.cos()], 1)
    ry = torch.stack([b.cos(), zero, b.sin(), zero, one, zero, -b.sin(), zero, b.cos()], 1)
    rz = torch.stack([c.cos(), -c.sin(), zero, c.sin(), c.cos(), zero, zero, zero, one], 1)
    return rx.view(-1, 3, 3) @ ry.view(-1, 3, 3) @ rz.view(-1, 3, 3)


def spatial3d(volumes: torch.Tensor, masks: torch.Tensor, g: torch.Generator,
              rotation: float = math.pi / 6, scale: float = 0.15, shear: float = 0.05,
              shift: float = 0.08, elastic: float = 0.03, flip: bool = True
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random affine (rotation, scaling, shear, translation), smooth elastic warp and flips.

    ``elastic`` is the displacement amplitude as a fraction of the volume; the warp field is a
    coarse random grid upsampled smoothly. Intensities are resampled trilinearly, masks by
    nearest neighbour.
    """
    n = volumes.shape[0]
    rot = _rotation((torch.rand(n, 3, generator=g) * 2 - 1) * rotation)
    zoom = 1 + (torch.rand(n, 3, generator=g) * 2 - 1) * scale
    sh = torch.eye(3).repeat(n, 1, 1) + (torch.rand(n, 3, 3, generator=g) * 2 - 1) * shear * (
        1 - torch.eye(3))
    m = rot @ sh @ torch.diag_embed(1 / zoom)
    if flip:
        signs = torch.where(torch.rand(n, 3, generator=g) < 0.5, -1.0, 1.0)
        m = m @ torch.diag_embed(signs)
    t = (torch.rand(n, 3, 1, generator=g) * 2 - 1) * shift * 2
    theta = torch.cat([m, t], 2)
    grid = F.affine_grid(theta, list(volumes.shape), align_corners=False)
    if elastic > 0:
        coarse = (torch.rand(n, 3, 5, 5, 5, generator=g) * 2 - 1) * elastic * 2
        field = F.interpolate(coarse, size=volumes.shape[2:], mode="trilinear",
                              align_corners=False)
        grid = grid + field.permute(0, 2, 3, 4, 1)
    v = F.grid_sample(volumes, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    k = F.grid_sample(masks.float(), grid, mode="nearest", padding_mode="zeros",
                      align_corners=False)
    return v, k


def intensity3d(volumes: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Bias field, gamma, contrast and Gaussian noise, kept in [0, 1]."""
    n = volumes.shape[0]
    coarse = torch.randn(n, 1, 4, 4, 4, generator=g) * 0.15
    bias = torch.exp(F.interpolate(coarse, size=volumes.shape[2:], mode="trilinear",
                                   align_corners=False))
    v = volumes * bias
    gamma = torch.exp((torch.rand(n, 1, 1, 1, 1, generator=g) * 2 - 1) * 0.3)
    v = v.clamp(0, None) ** gamma
    v = v * (1 + (torch.rand(n, 1, 1, 1, 1, generator=g) * 2 - 1) * 0.15)
    v = v + torch.randn(v.shape, generator=g) * torch.rand(n, 1, 1, 1, 1, generator=g) * 0.05
    return v.clamp(0, 1)
