"""The pyramid conditional GAN: a generator of histology from tissue masks, coarse to fine,
and PatchGAN discriminators on (image, condition) pairs.

Generator (Eq. 1 of the paper, layers after SinGAN since the paper's appendix is lost):
``x_N = G_N(y_N, z_N)`` at the coarsest level, then ``x_n = up(x_{n+1}) + Phi_n(y_n, z_n +
up(x_{n+1}))``, each level half the side of the next. ``Phi_n`` is five 3x3 conv blocks
(conv, batch norm, LeakyReLU 0.2), the last a conv to RGB with tanh. Batch norm, not instance
norm: at inference it is a fixed affine map, so a tile's pixels do not depend on the tile,
and a large mask can be generated in tiles without seams.

With ``prior=True`` every level also reads the anatomy prior
(:func:`~napari_omniseg.simulate.mask_prior.render_prior`: nuclei, epithelium, lumens drawn
from the mask) at its own size, three more input planes, and learns the real appearance on top
of structure it does not have to invent. The discriminators never see the prior: a real image
does not follow the prior's nuclei, so a discriminator that saw both would punish a generator
for keeping them.

Discriminators (pix2pixHD's PatchGAN, narrower): per pyramid level, identical PatchGANs on the
pair at x1, x1/2 and x1/4 (fewer where the level is small), returning their intermediate
features for the feature-matching loss.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .. import vocab
from .condition import CONDITION_CHANNELS
from .registry import Architecture, register


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2, inplace=True))


class LevelGenerator(nn.Module):
    """``Phi_n``: condition + (noise + upsampled coarser image) -> RGB correction in [-1, 1]."""

    def __init__(self, width: int, blocks: int = 5, extra: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = [_block(CONDITION_CHANNELS + extra + 3, width)]
        layers += [_block(width, width) for _ in range(blocks - 2)]
        layers += [nn.Conv2d(width, 3, 3, 1, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, condition: torch.Tensor, image_in: torch.Tensor) -> torch.Tensor:
        """The RGB correction of this level from its condition and input image."""
        x = torch.cat([condition, image_in], 1)
        # inference: channels-last activations take oneDNN's faster kernels on CPU (1.6x for
        # a 1024 px window in float32, docs/synthesis.md), as the segmenter does; training
        # keeps its layout (channels-last training was slower for the segmenter)
        if not self.training:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.body(x)


class PyramidGenerator(nn.Module):
    """Histology from a condition pyramid, coarsest level first.

    ``model(conditions, noises)`` takes per level (coarsest first) a ``(N, 20, H_n, W_n)``
    condition (``(N, 23, H_n, W_n)`` with the prior's RGB in [-1, 1] appended when ``prior``:
    :func:`generator_conditions`) and a ``(N, 3, H_n, W_n)`` noise, each level twice the side
    of the one before, and returns the RGB image of every level in [-1, 1], coarsest first.
    """

    architecture = "pyramid_cgan"
    histology_generator = True

    def __init__(self, levels: int = 4, width: int = 32, noise_amp: float = 0.1,
                 prior: bool = False) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError("a pyramid needs at least two levels")
        self.levels, self.width, self.noise_amp = levels, width, noise_amp
        self.prior = bool(prior)
        # wider at the coarse levels, where the layout is decided (SinGAN doubles every few)
        widths = [width * 2 if n < levels // 2 else width for n in range(levels)]
        self.stages = nn.ModuleList(LevelGenerator(w, extra=3 * self.prior) for w in widths)

    @property
    def factor(self) -> int:
        """Finest side / coarsest side."""
        return 2 ** (self.levels - 1)

    def forward(self, conditions: list[torch.Tensor], noises: list[torch.Tensor]
                ) -> list[torch.Tensor]:
        """The images of every level, coarse to fine, each ``(N, 3, H, W)`` in [-1, 1]."""
        out = [self.stages[0](conditions[0], noises[0])]
        for n in range(1, self.levels):
            up = F.interpolate(out[-1], size=conditions[n].shape[-2:], mode="bilinear",
                               align_corners=False)
            x = up + self.stages[n](conditions[n], self.noise_amp * noises[n] + up)
            out.append(x.clamp(-1, 1))
        return out


def fused_for_inference(generator: PyramidGenerator) -> PyramidGenerator:
    """A copy of ``generator`` for inference, each batch norm folded into the convolution
    before it: one pass less over every activation map (the normalisation's statistics are
    fixed at inference, so the convolution can apply them). Images agree with the unfused
    generator's to float rounding; train the original, not the copy."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(generator).eval()
    for block in fused.modules():
        if isinstance(block, nn.Sequential) and len(block) == 3 and isinstance(
                block[0], nn.Conv2d) and isinstance(block[1], nn.BatchNorm2d):
            block[0] = fuse_conv_bn_eval(block[0], block[1])
            block[1] = nn.Identity()
    return fused


def condition_pyramid(condition: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """The condition at every level, coarsest first: area averages (a thin capillary stays a
    faint trace at a coarse level instead of vanishing or not, as nearest sampling would)."""
    out = [condition]
    for _ in range(levels - 1):
        out.append(F.avg_pool2d(out[-1], 2))
    return out[::-1]


def image_pyramid(image: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """An image at every level, coarsest first (2x area averages)."""
    return condition_pyramid(image, levels)


def generator_conditions(generator: nn.Module, conditions: list[torch.Tensor],
                         prior: torch.Tensor | None) -> list[torch.Tensor]:
    """What ``generator`` reads at each level: the condition pyramid, with the prior image
    ``(N, 3, H, W)`` in [-1, 1] appended at every level when the generator reads one."""
    if not getattr(generator, "prior", False):
        return conditions
    if prior is None:
        raise ValueError("this generator reads the anatomy prior; none was given")
    return [torch.cat([c, p], 1) for c, p in
            zip(conditions, image_pyramid(prior.to(conditions[0].dtype), len(conditions)))]


class PatchDiscriminator(nn.Module):
    """A PatchGAN: 4x4 convs w (s2) -> 2w (s2, IN) -> 4w (s1, IN) -> 1 (s1)."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([
            nn.Sequential(nn.Conv2d(cin, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)),
            nn.Sequential(nn.Conv2d(width, 2 * width, 4, 2, 1), nn.InstanceNorm2d(2 * width),
                          nn.LeakyReLU(0.2, inplace=True)),
            nn.Sequential(nn.Conv2d(2 * width, 4 * width, 4, 1, 1),
                          nn.InstanceNorm2d(4 * width), nn.LeakyReLU(0.2, inplace=True)),
            nn.Conv2d(4 * width, 1, 4, 1, 1),
        ])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's output; the last is the patch score map."""
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class MultiScaleDiscriminator(nn.Module):
    """Identical PatchGANs on the (image, condition) pair at x1, x1/2, x1/4 ... (``scales``)."""

    def __init__(self, scales: int, width: int = 32) -> None:
        super().__init__()
        self.nets = nn.ModuleList(PatchDiscriminator(3 + CONDITION_CHANNELS, width)
                                  for _ in range(scales))

    def forward(self, image: torch.Tensor, condition: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per scale, the discriminator's layer outputs (the last: patch scores)."""
        x = torch.cat([image, condition], 1)
        out = []
        for k, net in enumerate(self.nets):
            if k:
                x = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
            out.append(net(x))
        return out


class PyramidDiscriminators(nn.Module):
    """One multi-scale discriminator per generator level, coarsest first; a level of side
    ``s`` gets as many scales (up to three) as keep the smallest input at least 32 pixels."""

    def __init__(self, levels: int, finest: int, width: int = 32) -> None:
        super().__init__()
        sides = [finest // 2 ** (levels - 1 - n) for n in range(levels)]
        if sides[0] < 16:
            raise ValueError(f"the coarsest level is {sides[0]} px; a PatchGAN needs at least "
                             f"16 (train on crops of at least {16 * 2 ** (levels - 1)} px)")
        self.per_level = nn.ModuleList(
            MultiScaleDiscriminator(max(1, min(3, 1 + (s // 32).bit_length() - 1)), width)
            for s in sides)


def generator_vocabulary() -> dict:
    """What a histology generator's label values, stains and magnifications mean."""
    return {"tissues": {t.code: t.task_id + 1 for t in vocab.TISSUES},
            "stains": list(vocab.STAINS), "magnifications": list(vocab.MAGNIFICATIONS)}


def _settings(model: PyramidGenerator) -> dict:
    return {"levels": model.levels, "width": model.width, "noise_amp": model.noise_amp,
            "prior": model.prior}


register(Architecture(
    name=PyramidGenerator.architecture,
    build=lambda meta: PyramidGenerator(**{k: meta[k] for k in
                                           ("levels", "width", "noise_amp", "prior")
                                           if k in meta}),
    settings=_settings,
    vocabulary=generator_vocabulary,
))
