"""Correction in seconds: a person's strokes on a few views of a slide teach one condition
(tissue at its magnification) a small per-pixel correction of the segmenter's answer.

Each view's features (the segmenter's decoder features, its head input, a filter bank and its
own logit; :mod:`napari_omniseg.nets.corrected`) are computed once, with the same tiles as
Segment, and kept; an update trains a fresh correction on every stroke of the session (a
painted pixel is tissue, an erased one background, everything else unknown) and answers the
views from the kept features, so it costs a few hundred small steps, not a network pass. A few
confident pixels of the model itself are kept as weak anchors, so strokes of one kind do not
flood the rest of the view. The same strokes always give the same correction (fixed seed), so
undoing a stroke gives back the mask before it exactly. The model in use is never changed: the
result is a new :class:`~napari_omniseg.nets.corrected.CorrectedOmniSeg` that Segment and
``omniseg segment --model`` use like any model.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import vocab
from ..errors import OmnisegInputError
from ..run import ShouldStop, check_stop

#: Stroke values in a label map of strokes.
UNKNOWN, BACKGROUND, TISSUE = -1, 0, 1


@dataclass(frozen=True)
class CorrectionOptions:
    """How a correction learns.

    Attributes
    ----------
    steps : int
        Optimisation steps per update (all strokes in one batch).
    lr : float
        Adam's learning rate.
    hidden : int
        Hidden units of the per-pixel correction network.
    anchor_weight : float
        Total weight of the model's own confident pixels against the strokes' (0: none).
    anchors : int
        How many such pixels are drawn over the kept views.
    weight_decay : float
        L2 on the correction's weights (keeps it small where strokes say little).
    seed : int
        Initial weights and anchor draw: the same strokes give the same correction.
    tile, overlap : int
        The network tiles features are computed on (Segment's).
    """

    steps: int = 150
    lr: float = 1e-2
    hidden: int = 32
    anchor_weight: float = 0.2
    anchors: int = 4096
    weight_decay: float = 1e-4
    seed: int = 0
    tile: int = 256
    overlap: int = 64


@dataclass
class _View:
    features: Any  # torch (F, H, W) float16: what the correction reads, without the logit
    logit: Any  # torch (H, W) float32: the base model's foreground logit


class Corrector:
    """The correction of one condition on one slide: kept views, strokes, updates.

    Parameters
    ----------
    model : torch.nn.Module
        The model in use (Omni-Seg+, or a corrected one whose other corrections are kept);
        it is never changed.
    tissue : str
        The tissue code.
    magnification : float
        The working magnification of the views.
    options : CorrectionOptions, optional
        How updates learn.
    bf16 : bool, optional
        bfloat16 autocast for the network pass (None: as Segment, on for the CPU).
    """

    def __init__(self, model: Any, tissue: str, magnification: float,
                 options: CorrectionOptions | None = None, bf16: bool | None = None) -> None:
        from ..checkpoints import model_and_precision
        from ..nets.corrected import CorrectedOmniSeg

        model, self.bf16 = model_and_precision(model, "renal", bf16)
        self.options = options or CorrectionOptions()
        self.tissue = vocab.tissue(tissue).code
        self.magnification = float(magnification)
        self.condition = (vocab.tissue(tissue).task_id, vocab.scale_id(magnification))
        if isinstance(model, CorrectedOmniSeg):
            self.base = model.base
            self._kept = [(c, h) for c, h in zip(model.conditions, model.heads)
                          if c != self.condition]
            self._start = model if self.condition in model.conditions else None
        else:
            self.base, self._kept, self._start = model, [], None
        self.views: dict[Hashable, _View] = {}
        self.strokes: dict[Hashable, np.ndarray] = {}
        self.model: Any = model  # the latest answer: the model given, until an update

    # -- views -------------------------------------------------------------------------------

    def add_view(self, key: Hashable, rgb: np.ndarray, should_stop: ShouldStop | None = None
                 ) -> None:
        """Compute and keep the features of a view ``(H, W, 3)`` uint8 at the working
        magnification (once: a view already kept is not recomputed)."""
        if key in self.views:
            return
        if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 16:
            raise OmnisegInputError(f"a view to correct is an RGB image of at least 16 x 16 "
                                    f"pixels, got shape {tuple(rgb.shape)}")
        feats, logit = _view_features(self.base, rgb, self.condition, self.options, self.bf16,
                                      should_stop)
        self.views[key] = _View(feats, logit)

    def set_strokes(self, key: Hashable, labels: np.ndarray) -> None:
        """All strokes on a kept view: ``labels`` (H, W) with :data:`TISSUE`,
        :data:`BACKGROUND` or :data:`UNKNOWN` per pixel (replacing what the view had)."""
        if key not in self.views:
            raise KeyError(key)
        shape = tuple(self.views[key].logit.shape)
        if labels.shape != shape:
            raise OmnisegInputError(f"the strokes ({labels.shape[0]} x {labels.shape[1]}) are "
                                    f"not drawn on the view ({shape[0]} x {shape[1]})")
        self.strokes[key] = np.asarray(labels, np.int8)

    def stroke_counts(self) -> tuple[int, int]:
        """Painted pixels of (tissue, background) over all views."""
        tissue = sum(int((s == TISSUE).sum()) for s in self.strokes.values())
        background = sum(int((s == BACKGROUND).sum()) for s in self.strokes.values())
        return tissue, background

    # -- learning ----------------------------------------------------------------------------

    def update(self, should_stop: ShouldStop | None = None) -> Any:
        """Learn the correction from every stroke so far; returns (and keeps as ``model``)
        the corrected model. With no stroke at all, the model given is the answer."""
        import torch

        from ..nets.corrected import CorrectedOmniSeg, CorrectionHead

        tissue, background = self.stroke_counts()
        if tissue + background == 0:
            self.model = self._start if self._start is not None else self._uncorrected()
            return self.model
        x, y, w = self._training_set()
        torch.manual_seed(self.options.seed)
        head = CorrectionHead(x.shape[1], self.options.hidden)
        mean, std = self._feature_stats()
        head.mean.copy_(mean)
        head.std.copy_(std)
        opt = torch.optim.Adam(head.net.parameters(), lr=self.options.lr,
                               weight_decay=self.options.weight_decay)
        logit = x[:, -1]
        xx = x[:, :, None, None]
        for _ in range(self.options.steps):
            check_stop(should_stop)
            opt.zero_grad(set_to_none=True)
            out = logit + head(xx)[:, 0, 0, 0]
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(
                out, y, reduction="none") * w).sum() / w.sum()
            loss.backward()
            opt.step()
        head.eval()
        conditions = [c for c, _ in self._kept] + [self.condition]
        corrected = CorrectedOmniSeg(self.base, conditions, self.options.hidden)
        for i, (_, kept) in enumerate(self._kept):
            corrected.heads[i].load_state_dict(kept.state_dict())
        corrected.heads[-1].load_state_dict(head.state_dict())
        corrected.eval()
        self.model = corrected
        return corrected

    def probability(self, key: Hashable, model: Any = None) -> np.ndarray:
        """Foreground probability ``(H, W)`` of a kept view under ``model`` (default: the
        latest), from the kept features: no network pass."""
        import torch

        from ..nets.corrected import CorrectedOmniSeg

        model = self.model if model is None else model
        view = self.views[key]
        logit = view.logit
        if isinstance(model, CorrectedOmniSeg) and self.condition in model.conditions:
            head = model.heads[model.conditions.index(self.condition)]
            change = torch.empty_like(logit)
            rows = max(1, (1 << 20) // logit.shape[1])  # about a million pixels at a time
            with torch.no_grad():
                for y0 in range(0, logit.shape[0], rows):
                    f = view.features[:, y0:y0 + rows].float()
                    inp = torch.cat([f, logit[None, y0:y0 + rows]], 0)[None]
                    change[y0:y0 + rows] = head(inp)[0, 0]
            logit = logit + change
        return torch.sigmoid(logit).numpy()

    # -- internals ---------------------------------------------------------------------------

    def _uncorrected(self) -> Any:
        if not self._kept:
            return self.base
        from ..nets.corrected import CorrectedOmniSeg

        model = CorrectedOmniSeg(self.base, [c for c, _ in self._kept], self.options.hidden)
        for i, (_, kept) in enumerate(self._kept):
            model.heads[i].load_state_dict(kept.state_dict())
        return model.eval()

    def _training_set(self) -> tuple[Any, Any, Any]:
        """Stroked pixels (features + logit, label, weight 1) and weak anchors."""
        import torch

        xs, ys, ws = [], [], []
        for key, labels in self.strokes.items():
            view = self.views[key]
            idx = torch.from_numpy(np.flatnonzero(labels.ravel() != UNKNOWN))
            if not len(idx):
                continue
            xs.append(_rows(view, idx))
            ys.append(torch.from_numpy(labels.ravel()[idx.numpy()].astype(np.float32)))
            ws.append(torch.ones(len(idx)))
        n_strokes = int(sum(len(y) for y in ys))
        opts = self.options
        if opts.anchor_weight > 0 and opts.anchors > 0:
            rng = np.random.default_rng(opts.seed)
            per_view = max(1, opts.anchors // max(1, len(self.views)))
            found = []
            for key, view in self.views.items():
                logit = view.logit.numpy().ravel()
                free = np.abs(logit) > 2  # where the model is sure of itself
                if key in self.strokes:
                    free &= self.strokes[key].ravel() == UNKNOWN
                cand = np.flatnonzero(free)
                if len(cand):
                    pick = torch.from_numpy(rng.choice(cand, min(per_view, len(cand)),
                                                       replace=False))
                    found.append((view, pick, logit[pick.numpy()] > 0))
            n_anchor = sum(len(p) for _, p, _ in found)
            for view, pick, target in found:
                xs.append(_rows(view, pick))
                ys.append(torch.from_numpy(target.astype(np.float32)))
                ws.append(torch.full((len(pick),), opts.anchor_weight * n_strokes / n_anchor))
        return torch.cat(xs), torch.cat(ys), torch.cat(ws)

    def _feature_stats(self) -> tuple[Any, Any]:
        """Mean and spread of every input over the kept views (a sample of pixels)."""
        import torch

        rng = np.random.default_rng(self.options.seed + 1)
        rows = []
        for view in self.views.values():
            n = view.logit.numel()
            pick = torch.from_numpy(rng.choice(n, min(n, 16384), replace=False))
            rows.append(_rows(view, pick))
        x = torch.cat(rows)
        return x.mean(0), x.std(0).clamp(min=1e-3)


def _rows(view: _View, idx: Any) -> Any:
    """``(len(idx), F + 1)`` float32: the features and logit at flat pixel indices."""
    import torch

    f = view.features.reshape(view.features.shape[0], -1)[:, idx].float().T
    return torch.cat([f, view.logit.reshape(-1)[idx][:, None]], 1)


def _view_features(base: Any, rgb: np.ndarray, condition: tuple[int, int],
                   options: CorrectionOptions, bf16: bool, should_stop: ShouldStop | None
                   ) -> tuple[Any, Any]:
    """Features and logit of one view, blended over Segment's overlapping tiles."""
    import torch

    from ..nets.corrected import CorrectedOmniSeg, correction_inputs
    from ..predict.tiling import blend_windows, tile_weights

    tile, overlap = options.tile, options.overlap
    h, w = rgb.shape[:2]
    ph, pw = max(h, tile), max(w, tile)
    image = rgb if (ph, pw) == (h, w) else np.pad(
        rgb, ((0, ph - h), (0, pw - w), (0, 0)), mode="reflect" if min(h, w) > max(
            ph - h, pw - w) else "edge")
    probe = CorrectedOmniSeg(base, [])
    dev = next(base.parameters()).device

    def predict(chunk: list) -> np.ndarray:
        x = np.stack([image[y:y + tile, x0:x0 + tile] for y, x0 in chunk])
        xt = torch.from_numpy(x).to(dev).permute(0, 3, 1, 2).float().div_(255)
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            head, context, feats = probe.pixel_features(xt)
            logits = probe.base_logits(head, context, condition).float()
        diff = logits[:, 1:] - logits[:, :1]
        return torch.cat([feats.float(), diff], 1).cpu().numpy()

    out = blend_windows((ph, pw), (tile, tile), overlap, correction_inputs(base), predict,
                        tile_weights((ph, pw), tile, overlap), batch=4,
                        should_stop=should_stop)[:, :h, :w]
    t = torch.from_numpy(out)
    return t[:-1].to(torch.float16).contiguous(), t[-1].contiguous()
