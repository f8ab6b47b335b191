"""Discriminators of the multi-level adversarial adaptation (cross-stain paper, SPECS section 2).

They judge the Omni-Seg+ network's own feature maps and answers, source (label 1) against
target (label 0):

- :class:`MirrorDiscriminator` runs down a list of feature maps given finest first: it starts
  on the first map, and at each later map halves its running map with a strided convolution,
  concatenates that map at its own size and convolves again; nothing is cropped or resized
  away. On the encoder maps it is the paper's encoder discriminator; on the decoder maps, taken
  finest first, it is the paper's "cheaper equivalent" decoder discriminator (downsampling,
  concatenating the coarser decoder maps in turn).
- :class:`ShapeDiscriminator` sees a foreground probability map with the tissue and the
  magnification asked as constant planes, since the segmenter is conditional: a capillary's
  shape at 40x is not a glomerulus's at 5x.

Each stage is one strided and one plain 3x3 convolution with LeakyReLU, narrower than the
paper's ResNet-34 and ResNet-18 mirrors, so that a step costs about one segmenter pass on a
two-core CPU. Pure torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .omniseg import N_SCALES, N_TASKS

#: Slope of the LeakyReLU in every discriminator.
SLOPE = 0.2


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(SLOPE, inplace=True))


class MirrorDiscriminator(nn.Module):
    """A domain discriminator over feature maps given finest first.

    Parameters
    ----------
    channels : sequence of int
        Channels of each map, finest first; each map is half the previous one's size.
    width : int
        Channels of the first stage; each later stage doubles them, up to ``4 * width``.

    ``model(maps)`` returns one logit per sample, ``(N,)``.
    """

    def __init__(self, channels: Sequence[int], width: int = 16) -> None:
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        widths = [min(width * 2 ** i, 4 * width) for i in range(len(self.channels))]
        self.stem = _conv(self.channels[0], widths[0])
        self.down = nn.ModuleList(_conv(widths[i - 1], widths[i], 2)
                                  for i in range(1, len(widths)))
        self.merge = nn.ModuleList(_conv(widths[i] + self.channels[i], widths[i])
                                   for i in range(1, len(widths)))
        self.fc = nn.Linear(widths[-1], 1)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """One source-vs-target logit per sample from the maps (finest first)."""
        if len(maps) != len(self.channels):
            raise ValueError(f"expected {len(self.channels)} feature maps, got {len(maps)}")
        x = self.stem(maps[0])
        for down, merge, f in zip(self.down, self.merge, maps[1:]):
            x = down(x)
            if x.shape[-2:] != f.shape[-2:]:
                raise ValueError(f"feature map of size {tuple(f.shape[-2:])} does not follow "
                                 f"one of size {tuple(x.shape[-2:])} at half its size")
            x = merge(torch.cat([x, f.to(x.dtype)], 1))
        return self.fc(x.mean((2, 3))).squeeze(1)


class ShapeDiscriminator(nn.Module):
    """Tells real masks from the segmenter's answers, given what was asked.

    ``model(probability, tissue_id, scale_id)``: ``probability`` ``(N, H, W)`` in [0, 1] (a
    binary mask or the softmax foreground), per-sample tissue and scale ids; one logit per
    sample, ``(N,)``. Four strided stages (ResNet-18's depth of downsampling, one
    convolution pair each).
    """

    def __init__(self, width: int = 16, n_tasks: int = N_TASKS,
                 n_scales: int = N_SCALES) -> None:
        super().__init__()
        self.n_tasks, self.n_scales = n_tasks, n_scales
        cin = 1 + n_tasks + n_scales
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for cout in widths:
            layers += [_conv(cin, cout, 2), _conv(cout, cout)]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(widths[-1], 1)

    def forward(self, probability: torch.Tensor, tissue_id: torch.Tensor,
                scale_id: torch.Tensor) -> torch.Tensor:
        """One real-vs-predicted logit per sample."""
        _, h, w = probability.shape
        planes = torch.cat([F.one_hot(tissue_id, self.n_tasks),
                            F.one_hot(scale_id, self.n_scales)], 1).to(probability.dtype)
        x = torch.cat([probability[:, None], planes[:, :, None, None].expand(-1, -1, h, w)], 1)
        return self.fc(self.body(x).mean((2, 3))).squeeze(1)


def encoder_channels(width: float = 1.0) -> tuple[int, ...]:
    """Channels of Omni-Seg+'s five encoder maps (finest first) at a network width."""
    c0, c1, c2, c3 = (max(16, int(round(c * width / 16)) * 16) for c in (32, 64, 128, 256))
    return (c0, c1, c2, c3, c3)


def decoder_channels(width: float = 1.0) -> tuple[int, ...]:
    """Channels of Omni-Seg+'s four decoder maps, finest first (the discriminator's order)."""
    c0, c1, c2, _ = encoder_channels(width)[:4]
    return (c0, c0, c1, c2)
