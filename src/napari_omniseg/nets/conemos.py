"""CoNeMOS: a 3D U-Net whose every convolution is modulated by the region asked for (FiLM).

A small MLP maps the region one-hot to a shared embedding; for every conv layer a linear head
turns it into per-channel ``gamma`` and ``beta``, and the layer's output (after its ReLU) becomes
``(1 + gamma) * x + beta``. One network thus segments uterus, fetal body, brain, eyes or placenta,
regions that may nest or overlap, one binary map per request.

Like the reference, each encoder level passes the output of its *first* conv to the decoder as
its skip connection. Pure torch: no I/O, no napari.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import vocab
from .registry import Architecture, register

N_REGIONS = 5
FEATURES = (16, 32, 64, 128)
EMBED = 64


class FiLMConv(nn.Module):
    """3x3x3 (or 1x1x1) conv, optional ReLU, then FiLM from the condition.

    With ``film=False`` it is a plain conv with bias (the unconditioned baseline).
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, relu: bool = True,
                 film: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel, padding=kernel // 2, bias=not film)
        self.film = nn.Linear(EMBED, 2 * cout) if film else None
        self.relu = relu

    def forward(self, x: torch.Tensor, embedding: torch.Tensor | None) -> torch.Tensor:
        """Convolve ``x`` and modulate it by ``embedding`` (FiLM), then ReLU."""
        x = self.conv(x)
        if self.relu:
            x = F.relu(x)
        if self.film is None:
            return x
        gamma, beta = self.film(embedding).chunk(2, dim=1)
        return (1 + gamma[:, :, None, None, None]) * x + beta[:, :, None, None, None]


def _pair(level: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The two convolutions of a U-Net level (a two-module ModuleList)."""
    first, second = level.children()
    return first, second


class CoNeMOS(nn.Module):
    """Region-conditioned 3D U-Net (about 1.6 M parameters).

    ``model(volume, region_id)`` maps ``(N, 1, D, H, W)`` intensities in [0, 1] (each side a
    multiple of 8) and ``(N,)`` region ids to ``(N, 1, D, H, W)`` logits; foreground where the
    sigmoid exceeds 0.5.
    """

    #: Name in checkpoints and in the architecture registry.
    architecture = "conemos"

    def __init__(self, n_regions: int = N_REGIONS, features: tuple[int, ...] = FEATURES,
                 conditioned: bool = True) -> None:
        super().__init__()
        self.n_regions = n_regions
        self.conditioned = conditioned
        film = conditioned
        self.mlp = None
        if conditioned:
            layers: list[nn.Module] = []
            cin = n_regions
            for _ in range(4):
                layers += [nn.Linear(cin, EMBED), nn.LeakyReLU(0.2)]
                cin = EMBED
            self.mlp = nn.Sequential(*layers)
        self.enc = nn.ModuleList()
        cin = 1
        for c in features:
            self.enc.append(nn.ModuleList([FiLMConv(cin, c, film=film),
                                           FiLMConv(c, c, film=film)]))
            cin = c
        self.dec = nn.ModuleList()
        for c_skip in reversed(features[:-1]):
            self.dec.append(nn.ModuleList([FiLMConv(cin + c_skip, c_skip, film=film),
                                           FiLMConv(c_skip, c_skip, film=film)]))
            cin = c_skip
        # the baseline answers every region at once, one output channel each
        self.head = FiLMConv(cin, 1 if conditioned else n_regions, kernel=1, relu=False,
                             film=film)
        # Glorot-uniform conv weights, the Keras default of the reference implementation. Without
        # normalisation, PyTorch's default (variance 1/(3 fan_in)) shrinks the signal about six
        # times per layer, and the deep levels barely learn.
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.xavier_uniform_(m.weight)

    def embed(self, region_id: torch.Tensor) -> torch.Tensor:
        """The shared condition embedding, ``(N, 64)``."""
        onehot = F.one_hot(region_id.long(), self.n_regions).float()
        assert self.mlp is not None, "an unconditioned network has no condition embedding"
        return self.mlp(onehot)

    def forward(self, volume: torch.Tensor, region_id: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Logits of ``region_id`` in ``volume`` ``(N, 1, D, H, W)`` (all regions' channels
        for the unconditioned baseline); sides must be multiples of 8."""
        if any(s % 8 for s in volume.shape[-3:]):
            raise ValueError(f"volume sides must be multiples of 8, got {tuple(volume.shape[-3:])}")
        e = None
        if self.conditioned:
            if region_id is None:
                raise ValueError("this CoNeMOS is conditioned: give region_id")
            e = self.embed(region_id.to(volume.device))
        skips = []
        x = volume
        for i, level in enumerate(self.enc):
            first, second = _pair(level)
            x = first(x, e)
            skips.append(x)  # the reference's skip: the level's first conv
            x = second(x, e)
            if i < len(self.enc) - 1:
                x = F.max_pool3d(x, 2)
        for level, skip in zip(self.dec, reversed(skips[:-1])):
            first, second = _pair(level)
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = second(first(torch.cat([x, skip], dim=1), e), e)
        return self.head(x, e)

    def forward_regions(self, volume: torch.Tensor, region_ids: list[int]) -> torch.Tensor:
        """Logits of several regions for one volume ``(1, 1, D, H, W)``, batched together.

        Returns
        -------
        torch.Tensor
            ``(len(region_ids), 1, D, H, W)``.
        """
        if not self.conditioned:
            return self(volume)[0, region_ids][:, None]
        n = len(region_ids)
        ids = torch.tensor(region_ids, device=volume.device)
        return self(volume.expand(n, *volume.shape[1:]), ids)


register(Architecture(
    "conemos",
    build=lambda meta: CoNeMOS(conditioned=bool(meta.get("conditioned", True))),
    settings=lambda net: {"conditioned": bool(net.conditioned)},
    vocabulary=lambda: {"regions": {r.code: r.region_id for r in vocab.FETAL_REGIONS}}))
