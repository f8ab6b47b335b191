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


#: Optical-density vectors of haematoxylin, eosin and a residual channel (Ruifrok & Johnston,
#: as in scikit-image's ``rgb_from_hed``): the basis other stains are rotated from.
_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])


def stain_vectors(images: torch.Tensor, generator: torch.Generator, p: float = 0.5,
                  max_angle: float = 0.45, amount: float = 0.3) -> torch.Tensor:
    """Re-dye a share ``p`` of RGB images ``(N, 3, H, W)`` in [0, 1] with random stains.

    Each image is unmixed into amounts of three dyes (haematoxylin, eosin, residual) and mixed
    again with each dye's optical-density vector turned by up to ``max_angle`` radians in a
    random direction and each dye's amount scaled by up to ``amount``: colours the training
    stains never had (silver, trichrome, other labs' PAS), with the tissue's structure kept.
    """
    n = images.shape[0]
    g = generator
    pick = torch.nonzero(torch.rand(n, generator=g) < p).flatten()
    if len(pick) == 0:
        return images
    basis = _HED / _HED.norm(dim=1, keepdim=True)
    unmix = torch.linalg.inv(basis)
    out = images.clone()
    for i in pick.tolist():
        od = -torch.log(images[i].clamp(1 / 255, 1))  # (3, H, W)
        amounts = torch.einsum("ck,chw->khw", unmix, od)
        amounts[:2] = amounts[:2].clamp(min=0)  # no negative dye; the residual may be
        turn = torch.randn(3, 3, generator=g)
        turn = turn - (turn * basis).sum(1, keepdim=True) * basis  # perpendicular directions
        turn = turn / turn.norm(dim=1, keepdim=True).clamp(min=1e-6)
        angle = torch.rand(3, 1, generator=g) * max_angle
        angle[2] = 0  # the residual is what no dye explains: turned, it tints the glass
        # a dye absorbs, never brightens: no negative density
        vectors = (basis * torch.cos(angle) + turn * torch.sin(angle)).clamp(min=0)
        vectors = vectors / vectors.norm(dim=1, keepdim=True).clamp(min=1e-6)
        scale = 1 + amount * (torch.rand(3, 1, 1, generator=g) * 2 - 1)
        od = torch.einsum("khw,kc->chw", amounts * scale, vectors)
        out[i] = torch.exp(-od.clamp(min=0)).clamp(0, 1)
    return out


def jpeg(images: torch.Tensor, generator: torch.Generator, p: float = 0.5,
         quality: tuple[int, int] = (30, 95)) -> torch.Tensor:
    """JPEG-compress a share ``p`` of RGB images ``(N, 3, H, W)`` in [0, 1] at a random
    quality: the block artefacts of scanned slides."""
    import io

    import numpy as np
    from PIL import Image

    n = images.shape[0]
    pick = torch.nonzero(torch.rand(n, generator=generator) < p).flatten()
    if len(pick) == 0:
        return images
    q = torch.randint(quality[0], quality[1] + 1, (n,), generator=generator)
    out = images.clone()
    for i in pick.tolist():
        arr = (images[i].permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(q[i]))
        buf.seek(0)
        with Image.open(buf) as im:
            back = np.asarray(im.convert("RGB"))
        out[i] = torch.from_numpy(back.copy()).permute(2, 0, 1).float() / 255
    return out


def edge_reflection(images: torch.Tensor, maps: list[torch.Tensor], generator: torch.Generator,
                    p: float = 0.5, max_width: int = 128
                    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Mirror a band along one or two sides of a share ``p`` of the patches, as the tile engine
    pads an image smaller than one network tile.

    Segment keeps its tiles inside the image, but an image (or a working level) smaller than a
    tile is still read reflected past its edge, and a network trained on interior crops only
    meets mirrored tubules and glomeruli there. A band of 8 to ``max_width`` pixels along a
    side is replaced by the reflection of the pixels inside it (``numpy.pad(mode="reflect")``),
    and the same is done to every map in ``maps`` (targets, valid masks: ``(N, H, W)``), so
    labels stay those of the mirrored tissue.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)``.
    maps : list of torch.Tensor
        ``(N, H, W)`` tensors reflected alike.
    generator : torch.Generator
        Randomness.
    p : float
        Share of patches changed.
    max_width : int
        Widest band, in pixels (at most one less than half the patch side).

    Returns
    -------
    (torch.Tensor, list of torch.Tensor)
        New tensors; the inputs are not changed.
    """
    n, _, h, w = images.shape
    pick = torch.nonzero(torch.rand(n, generator=generator) < p).flatten()
    if len(pick) == 0:
        return images, maps
    images = images.clone()
    maps = [m.clone() for m in maps]
    for i in pick.tolist():
        sides = torch.randperm(4, generator=generator)[:int(torch.randint(1, 3, (1,),
                                                                          generator=generator))]
        for side in sides.tolist():
            extent = h if side < 2 else w
            width = int(torch.randint(8, max(9, min(max_width, extent // 2 - 1) + 1), (1,),
                                      generator=generator))
            for t in [images[i], *[m[i] for m in maps]]:
                _reflect_band(t, side, width)
    return images, maps


def _reflect_band(t: torch.Tensor, side: int, width: int) -> None:
    """In place: the outer ``width`` rows/columns of ``t`` (``(..., H, W)``) on ``side`` (0 top,
    1 bottom, 2 left, 3 right) become the reflection of the ones inside, edge pixel excluded."""
    dim = -2 if side < 2 else -1
    size = t.shape[dim]
    if side in (0, 2):  # band [0, width) mirrors [width + 1, 2 * width] about pixel `width`
        src = torch.arange(2 * width, width, -1)
        dst = torch.arange(0, width)
    else:  # band [size - width, size) mirrors about pixel size - width - 1
        src = torch.arange(size - width - 2, size - 2 * width - 2, -1)
        dst = torch.arange(size - width, size)
    t.index_copy_(dim % t.dim(), dst, t.index_select(dim % t.dim(), src))
