"""A renal model corrected by a person's strokes: Omni-Seg+ plus, for each corrected condition
(tissue, scale), a small per-pixel network that adds to the foreground logit.

The correction reads what the segmenter already computes (its last decoder features and the
dynamic head's input) and a fixed filter bank on the image (smoothed optical density, gradient
magnitude and Laplacian of Gaussian at three scales, as ilastik's pixel classifier uses), plus
the base model's own logit. It starts at zero (its last layer is zero), so an uncorrected
condition, or a correction with no strokes, answers exactly as the base model does.

Pure torch: no I/O, no napari.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .omniseg import HEAD_CHANNELS, OmniSegPlus, renal_vocabulary
from .registry import Architecture, register

#: Gaussian scales of the filter bank, in working pixels.
FILTER_SIGMAS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
#: Filter bank channels: optical density (3), then per scale smoothed density (3), gradient
#: magnitude and Laplacian of Gaussian of the mean density (1 + 1).
FILTER_CHANNELS = 3 + len(FILTER_SIGMAS) * 5
#: Hidden units of a correction network.
HIDDEN = 32


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    pad = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
    mode = "reflect" if pad == r else "replicate"
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
                 groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
                    groups=c)


def filter_bank(images: torch.Tensor) -> torch.Tensor:
    """Per-pixel texture and colour features of RGB ``images`` ``(N, 3, H, W)`` in [0, 1].

    Returns
    -------
    torch.Tensor
        ``(N, FILTER_CHANNELS, H, W)``.
    """
    od = -torch.log(images.float().clamp(1 / 255, 1))
    out = [od]
    for s in FILTER_SIGMAS:
        smooth = _gaussian(od, s)
        grey = smooth.mean(1, keepdim=True)
        gy = F.pad(grey[:, :, 2:] - grey[:, :, :-2], (0, 0, 1, 1), mode="replicate") / 2
        gx = F.pad(grey[..., 2:] - grey[..., :-2], (1, 1, 0, 0), mode="replicate") / 2
        padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
        lap = (padded[:, :, :-2, 1:-1] + padded[:, :, 2:, 1:-1] + padded[:, :, 1:-1, :-2]
               + padded[:, :, 1:-1, 2:] - 4 * grey)
        out += [smooth, torch.sqrt(gx ** 2 + gy ** 2) * s, lap * s ** 2]
    return torch.cat(out, 1)


def correction_inputs(base: OmniSegPlus) -> int:
    """How many features a correction of ``base`` reads per pixel (its logit included)."""
    head_input: nn.Conv2d = base.precls_conv[-1]  # type: ignore[assignment]
    decoder = int(head_input.in_channels)  # the head's input convolution reads them
    return HEAD_CHANNELS + decoder + FILTER_CHANNELS + 1


class CorrectionHead(nn.Module):
    """A per-pixel network (1x1 convolutions) from standardised features to a logit change."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, n_inputs: int, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_inputs))
        self.register_buffer("std", torch.ones(n_inputs))
        last = nn.Conv2d(hidden, 1, 1)
        with torch.no_grad():  # no change until strokes teach one
            last.weight.zero_()
            last.bias.zero_()  # type: ignore[union-attr]
        self.net = nn.Sequential(nn.Conv2d(n_inputs, hidden, 1), nn.ReLU(), last)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The logit change ``(N, 1, H, W)`` of features ``(N, n_inputs, H, W)``."""
        mean, std = self.mean.view(1, -1, 1, 1), self.std.view(1, -1, 1, 1)
        return self.net((features.float() - mean) / std)


class CorrectedOmniSeg(nn.Module):
    """Omni-Seg+ with per-condition corrections; answers like the base model otherwise.

    ``base`` is used as it is (the corrections never change it); ``conditions`` are the
    corrected ``(tissue_id, scale_id)`` pairs, one :class:`CorrectionHead` each.
    """

    #: Name in checkpoints and in the architecture registry.
    architecture = "omniseg_corrected"

    def __init__(self, base: OmniSegPlus, conditions: list[tuple[int, int]],
                 hidden: int = HIDDEN) -> None:
        super().__init__()
        self.base = base
        self.width = base.width
        self.hidden = hidden
        self.conditions = [(int(t), int(s)) for t, s in conditions]
        n = correction_inputs(base)
        self.heads = nn.ModuleList(CorrectionHead(n, hidden) for _ in self.conditions)

    def pixel_features(self, image: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Head features, context, and what a correction reads (without the logit)."""
        head, context, decoder = self.base.backbone_and_decoder(image)
        # in float32: bfloat16 depthwise convolutions take a slow path on the CPU (a 256 px
        # tile took seconds, not milliseconds)
        with torch.autocast(image.device.type, enabled=False):
            bank = filter_bank(image.float())
        return head, context, torch.cat([head.float(), decoder.float(), bank], 1)

    def base_logits(self, head: torch.Tensor, context: torch.Tensor, condition: tuple[int, int]
                    ) -> torch.Tensor:
        """The base model's ``(N, 2, H, W)`` logits of one condition."""
        n = head.shape[0]
        tid = torch.full((n,), condition[0], dtype=torch.long, device=head.device)
        sid = torch.full((n,), condition[1], dtype=torch.long, device=head.device)
        return self.base.dynamic_head(head, self.base.head_params(context, tid, sid))

    def forward_conditions(self, image: torch.Tensor,
                           conditions: list[tuple[int, int]]) -> torch.Tensor:
        """Logits ``(N, len(conditions), 2, H, W)``; corrected conditions add their change to
        the foreground channel."""
        head, context, feats = self.pixel_features(image)
        outs = []
        for cond in conditions:
            logits = self.base_logits(head, context, (int(cond[0]), int(cond[1])))
            key = (int(cond[0]), int(cond[1]))
            if key in self.conditions:
                diff = (logits[:, 1:] - logits[:, :1]).float()
                change = self.heads[self.conditions.index(key)](torch.cat([feats, diff], 1))
                logits = torch.cat([logits[:, :1], logits[:, 1:] + change.to(logits.dtype)], 1)
            outs.append(logits)
        return torch.stack(outs, dim=1)

    def forward(self, image: torch.Tensor, tissue_id: torch.Tensor,
                scale_id: torch.Tensor) -> torch.Tensor:
        """Two-channel logits ``(N, 2, H, W)``, one condition per sample."""
        out = [self.forward_conditions(image[i:i + 1], [(int(t), int(s))])[:, 0]
               for i, (t, s) in enumerate(zip(tissue_id.tolist(), scale_id.tolist()))]
        return torch.cat(out, 0)


register(Architecture(
    "omniseg_corrected",
    build=lambda meta: CorrectedOmniSeg(OmniSegPlus(width=float(meta.get("width", 1.0)),
                                                    thresholds=meta.get("thresholds")),
                                        [tuple(c) for c in meta.get("corrections", [])],
                                        int(meta.get("hidden", HIDDEN))),
    settings=lambda net: {"width": float(net.width), "hidden": int(net.hidden),
                          "corrections": [list(c) for c in net.conditions],
                          "thresholds": net.base.thresholds()},
    vocabulary=renal_vocabulary))
