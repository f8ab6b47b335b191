"""A single-scale pix2pix-style generator: the baseline the pyramid generator is measured against.

pix2pix's U-Net (Isola et al. 2017), narrower: 4x4 stride-2 convolutions down to 1/32 of the
side, transposed convolutions back up with skip connections, batch norm, tanh out. It sees the
same 20-plane condition and a noise plane at full resolution (pix2pix's dropout noise is
replaced by input noise so that one seed gives one image), and it speaks the pyramid
generator's interface with a single level, so the same training step, discriminators and
generation code run it. It is here to be compared with, not used: docs/synthesis.md.
"""

from __future__ import annotations

import torch
from torch import nn

from .condition import CONDITION_CHANNELS
from .pyramid_gan import generator_vocabulary
from .registry import Architecture, register


def _down(cin: int, cout: int, norm: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class UNetGenerator(nn.Module):
    """``model([condition], [noise])`` -> ``[image]``: one level of the pyramid interface,
    ``(N, 20, H, W)`` condition and ``(N, 3, H, W)`` noise to RGB in [-1, 1]; H and W are
    multiples of ``factor`` (32)."""

    architecture = "pix2pix_unet"
    histology_generator = True
    levels = 1

    def __init__(self, width: int = 32, depth: int = 5) -> None:
        super().__init__()
        self.width, self.depth = width, depth
        widths = [min(width * 2 ** k, width * 4) for k in range(depth)]
        self.downs = nn.ModuleList(
            _down(CONDITION_CHANNELS + 3 if k == 0 else widths[k - 1], widths[k], norm=k > 0)
            for k in range(depth))
        self.ups = nn.ModuleList(
            _up(widths[k] * (1 if k == depth - 1 else 2), widths[k - 1])
            for k in range(depth - 1, 0, -1))
        self.out = nn.Sequential(nn.ConvTranspose2d(2 * widths[0], 3, 4, 2, 1), nn.Tanh())

    @property
    def factor(self) -> int:
        """Sides must be multiples of this."""
        return 2 ** self.depth

    def forward(self, conditions: list[torch.Tensor], noises: list[torch.Tensor]
                ) -> list[torch.Tensor]:
        """The generated image (one level: a list of one ``(N, 3, H, W)`` tensor in [-1, 1])."""
        x = torch.cat([conditions[-1], noises[-1]], 1)
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
        skips.pop()
        for up in self.ups:
            x = torch.cat([up(x), skips.pop()], 1)
        return [self.out(x)]


register(Architecture(
    name=UNetGenerator.architecture,
    build=lambda meta: UNetGenerator(**{k: meta[k] for k in ("width", "depth") if k in meta}),
    settings=lambda model: {"width": model.width, "depth": model.depth},
    vocabulary=generator_vocabulary,
))
