"""Batch augmentation on tensors: spatial (flips, rotation, scale) and colour (stain, blur, noise).

Colour jitter works in optical density, where stains add up (Beer-Lambert), so it imitates
batch-to-batch stain variation rather than arbitrary hue shifts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def spatial(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator,
            max_rotation: float = math.pi, scale: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flip, rotation and zoom of images ``(N, C, H, W)`` and masks ``(N, H, W)``.

    Image pixels are resampled bilinearly (reflected at the border), masks by nearest neighbour.
    """
    n = images.shape[0]
    ang = (torch.rand(n, generator=generator) * 2 - 1) * max_rotation
    zoom = 1 + (torch.rand(n, generator=generator) * 2 - 1) * scale
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(ang) / zoom, torch.sin(ang) / zoom
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * flip
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * flip
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                           align_corners=False)
    masks = F.grid_sample(masks[:, None].float(), grid, mode="nearest", padding_mode="reflection",
                          align_corners=False)[:, 0]
    return images, masks


def colour(images: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Stain, brightness, blur and noise jitter of RGB images in [0, 1], ``(N, 3, H, W)``."""
    n = images.shape[0]
    g = generator
    od = -torch.log(images.clamp(1 / 255, 1))
    # mix the channels a little (other dye hues), scale and shift them (dye amounts)
    mix = torch.eye(3) + strength * 0.08 * torch.randn(n, 3, 3, generator=g)
    od = torch.einsum("nij,njhw->nihw", mix, od)
    od = od * (1 + strength * 0.25 * (torch.rand(n, 3, 1, 1, generator=g) * 2 - 1))
    od = od * (1 + strength * 0.3 * (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1))
    out = torch.exp(-od.clamp(min=0))
    out = out * (1 + strength * 0.08 * (torch.rand(n, 3, 1, 1, generator=g) * 2 - 1))
    # optical blur on some images
    sig = torch.rand(n, generator=g) * 1.5 * strength
    for i in torch.nonzero(sig > 0.4).flatten().tolist():
        out[i] = _blur(out[i], float(sig[i]))
    out = out + strength * 0.02 * torch.rand(n, 1, 1, 1, generator=g) * torch.randn(
        out.shape, generator=g)
    return out.clamp(0, 1)


def _blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(2.5 * sigma)))
    x = torch.arange(-r, r + 1, dtype=img.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    c = img.shape[0]
    img = F.conv2d(F.pad(img[None], (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(
        c, 1, 1, 1), groups=c)
    img = F.conv2d(F.pad(img, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(
        c, 1, 1, 1), groups=c)
    return img[0]
