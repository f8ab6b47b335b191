"""Adapt the renal segmenter to unlabelled images of the user's slides: multi-level adversarial
adaptation (cross-stain paper, SPECS section 2), on the training engine.

Discriminators (:mod:`napari_omniseg.nets.domain_discriminators`) learn to tell the source
(labelled batches: the user's annotations, or the simulator's patch bank the bundled model was
trained on) from the target (crops of the unlabelled images) from the segmenter's encoder maps,
its decoder maps and its answers; the segmenter learns to segment the source while fooling them:

    L = L_seg - 0.01 L_De - 0.05 L_Dd - 0.1 L_Ds

in the non-saturating form (the segmenter's target batches are scored against the source
label). The schedule has three phases over the budget: the segmenter alone on the source, the
discriminators alone (segmenter fixed), then both in alternation, one step each. The encoder and
decoder maps do not depend on the condition (the condition only writes the dynamic head), so
their discriminators need none; the shape discriminator sees the tissue and magnification asked.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoints import default_bf16
from ..choices import AdaptLevel, StainNormalisation
from ..errors import OmnisegInputError
from ..run import Progress, ShouldStop
from .adapt_targets import TargetImages, TargetSampler
from .engine import TrainResult, run_training

#: The paper's weights of each discriminator's term in the segmenter's loss.
ALPHAS = {AdaptLevel.ENCODER: 0.01, AdaptLevel.DECODER: 0.05, AdaptLevel.SHAPE: 0.1}
#: Simulated slides of the source bank when the user gives no labelled rows.
SOURCE_SLIDES = 6
#: Their side at 40x (pixels): big enough for several 5x patches each.
SOURCE_SLIDE_SIZE = 2048
#: Seeds of those slides (apart from the bundled model's training and evaluation seeds).
SOURCE_SEED0 = 30_000


@dataclass(frozen=True)
class AdaptOptions:
    """How an adaptation run trains; recorded in its checkpoint.

    Attributes
    ----------
    minutes : float
        The whole budget (reading the targets and building a source bank included).
    levels : tuple of AdaptLevel
        The discriminators used; empty: the source alone (the "source only" baseline).
    lr : float
        AdamW rate of the segmenter (the paper's Adam 1e-3) and the discriminators.
    segmenter_warmup, discriminator_warmup : float
        Shares of the budget for the segmenter alone, then the discriminators alone.
    batch : int
        Source and target crops per step (each).
    crop : int
        Crop side in pixels.
    seed : int
        Batches, crops and the discriminators' first weights.
    validate_every : float or None
        Seconds between validations on labelled rows, if any; None: the engine's default.
    normalise_stain : StainNormalisation or str
        Map each target image's stain to the source images' (Macenko or Reinhard) before
        adapting, so the discriminators see the gap colour mapping leaves; the adapted model
        is then meant to segment with the same normalisation (its checkpoint says so).
    """

    minutes: float = 15.0
    levels: tuple[AdaptLevel, ...] = (AdaptLevel.ENCODER, AdaptLevel.DECODER, AdaptLevel.SHAPE)
    lr: float = 1e-3
    segmenter_warmup: float = 0.1
    discriminator_warmup: float = 0.1
    batch: int = 4
    crop: int = 256
    seed: int = 0
    validate_every: float | None = None
    normalise_stain: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "normalise_stain",
                           str(StainNormalisation(self.normalise_stain)))
        levels = tuple(AdaptLevel(level) for level in self.levels)
        if len(set(levels)) != len(levels):
            raise OmnisegInputError("each discriminator level may be named once")
        object.__setattr__(self, "levels", levels)
        if not 0 <= self.segmenter_warmup + self.discriminator_warmup < 1:
            raise OmnisegInputError("the two warm-ups must leave part of the budget for "
                                    "adversarial steps")

    def metadata(self) -> dict:
        """The options and the weights used, as plain values."""
        out = dataclasses.asdict(self)
        out["levels"] = [str(level) for level in self.levels]
        out["alphas"] = {str(level): ALPHAS[level] for level in self.levels}
        return out


class Phases:
    """Which phase a step is in, from the share of the budget spent.

    The budget is the time left when the first step runs (``minutes`` counted from
    ``started``) or ``max_steps`` steps; the first of the two to end decides.
    """

    def __init__(self, options: AdaptOptions, *, started: float, minutes: float | None,
                 max_steps: int | None) -> None:
        self.options, self.started = options, started
        self.minutes, self.max_steps = minutes, max_steps
        self.steps = 0
        self.first: float | None = None

    def fraction(self) -> float:
        """The share of the budget spent before this step."""
        now = time.perf_counter()
        self.first = now if self.first is None else self.first
        shares = []
        if self.minutes is not None:
            budget = max(1e-6, self.minutes * 60 - (self.first - self.started))
            shares.append((now - self.first) / budget)
        if self.max_steps is not None:
            shares.append(self.steps / max(1, self.max_steps))
        return max(shares) if shares else 0.0

    def __call__(self) -> str:
        """``"segmenter"``, ``"discriminators"`` or ``"adversarial"``; counts the step."""
        f = self.fraction()
        self.steps += 1
        o = self.options
        if not o.levels or f < o.segmenter_warmup:
            return "segmenter"
        if f < o.segmenter_warmup + o.discriminator_warmup:
            return "discriminators"
        return "adversarial"


def make_discriminators(levels: tuple[AdaptLevel, ...], width: float) -> dict[AdaptLevel, Any]:
    """One new discriminator per level for a segmenter of network ``width``."""
    from ..nets.domain_discriminators import (
        MirrorDiscriminator,
        ShapeDiscriminator,
        decoder_channels,
        encoder_channels,
    )

    build = {AdaptLevel.ENCODER: lambda: MirrorDiscriminator(encoder_channels(width)),
             AdaptLevel.DECODER: lambda: MirrorDiscriminator(decoder_channels(width)),
             AdaptLevel.SHAPE: lambda: ShapeDiscriminator()}
    return {level: build[level]() for level in levels}


class AdversarialStep:
    """One step of adaptation (module docstring): a :class:`~napari_omniseg.train.engine.
    TrainingStep` with the segmenter and one discriminator per level.

    ``source()`` gives labelled batches (``images``, ``targets``, ``valid``, ``conditions``)
    and ``target()`` unlabelled ones (``images``, ``conditions``); ``phase()`` says which
    players move (:class:`Phases`).
    """

    def __init__(self, model: Any, discriminators: dict[AdaptLevel, Any],
                 source: Callable[[], dict], target: Callable[[], dict],
                 phase: Callable[[], str], *, lr: float = 1e-3, lr_d: float | None = None,
                 bf16: bool | None = None, alphas: dict[AdaptLevel, float] | None = None
                 ) -> None:
        import torch

        self.model, self.discriminators = model, discriminators
        self.source, self.target, self.phase = source, target, phase
        self.alphas = {**ALPHAS, **(alphas or {})}
        self.device = next(model.parameters()).device
        self.bf16 = default_bf16(self.device) if bf16 is None else bf16
        for d in discriminators.values():
            d.to(self.device)
        self.networks = {"model": model, **{f"d_{k}": d for k, d in discriminators.items()}}
        self.optimizers: list[Any] = [torch.optim.AdamW(model.parameters(), lr=lr,
                                                        weight_decay=1e-4)]
        d_params = [p for d in discriminators.values() for p in d.parameters()]
        if d_params:
            self.optimizers.append(torch.optim.Adam(d_params, lr=lr if lr_d is None else lr_d,
                                                    betas=(0.5, 0.999)))

    def _pass(self, images: Any, conditions: tuple, grad: bool) -> dict:
        """Logits and feature maps of one batch."""
        import torch

        tids, sids = (c.to(self.device) for c in conditions)
        with torch.set_grad_enabled(grad), torch.autocast(self.device.type,
                                                          dtype=torch.bfloat16,
                                                          enabled=self.bf16):
            head, context, encoder, decoder = self.model.feature_maps(images.to(self.device))
            logits = self.model.dynamic_head(head, self.model.head_params(context, tids, sids))
        return {"logits": logits.float(), "tids": tids, "sids": sids,
                AdaptLevel.ENCODER: encoder, AdaptLevel.DECODER: decoder[::-1]}

    def _judge(self, level: AdaptLevel, out: dict, detach: bool, mask: Any = None) -> Any:
        """The level's discriminator logits on one pass (or on ``mask`` for the shape)."""
        import torch

        d = self.discriminators[level]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if level == AdaptLevel.SHAPE:
                p = torch.softmax(out["logits"], 1)[:, 1] if mask is None else mask
                return d(p.detach() if detach else p, out["tids"], out["sids"]).float()
            maps = [m.detach() for m in out[level]] if detach else out[level]
            return d(maps).float()

    def __call__(self) -> dict[str, float]:
        """One step of the players the phase moves; returns the named losses."""
        import torch
        import torch.nn.functional as F

        from .losses import dice_bce_loss

        phase = self.phase()
        move_segmenter = phase != "discriminators"
        src = self.source()
        s = self._pass(src["images"], src["conditions"], grad=move_segmenter)
        targets = src["targets"].to(self.device)
        valid = src["valid"].to(self.device) if src.get("valid") is not None else None
        seg = dice_bce_loss(s["logits"], targets, valid)
        losses: dict[str, Any] = {"seg": seg}
        t = None
        if self.discriminators and phase != "segmenter":
            tgt = self.target()
            t = self._pass(tgt["images"], tgt["conditions"], grad=phase == "adversarial")
        if move_segmenter:
            loss = seg
            if phase == "adversarial" and t is not None:
                for level, d in self.discriminators.items():
                    d.requires_grad_(False)  # the segmenter's step leaves them be
                    fooled = self._judge(level, t, detach=False)
                    adv = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
                    losses[f"adv_{level}"] = adv
                    loss = loss + self.alphas[level] * adv
                    d.requires_grad_(True)
            opt = self.optimizers[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
            opt.step()
            losses["loss"] = loss
        else:
            losses["loss"] = seg
        if t is not None:
            losses.update(self._discriminator_step(s, t, targets, valid))
        return {k: float(v.detach()) if hasattr(v, "detach") else float(v)
                for k, v in losses.items()}

    def _discriminator_step(self, s: dict, t: dict, targets: Any, valid: Any) -> dict:
        """Source 1, target 0 for each discriminator; the shape one sees the source's true
        masks (the segmenter's answer where a pixel is not annotated) as real."""
        import torch
        import torch.nn.functional as F

        total, out = 0.0, {}
        for level in self.discriminators:
            mask = None
            if level == AdaptLevel.SHAPE:
                p = torch.softmax(s["logits"].detach(), 1)[:, 1]
                mask = targets.float() if valid is None else torch.where(valid > 0.5,
                                                                         targets.float(), p)
            real = self._judge(level, s, detach=True, mask=mask)
            fake = self._judge(level, t, detach=True)
            loss = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                    + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))) / 2
            out[f"d_{level}"] = loss
            total = total + loss
        opt = self.optimizers[1]
        opt.zero_grad(set_to_none=True)
        total.backward()  # type: ignore[union-attr]
        opt.step()
        return out


def simulator_source(seed: int = 0, progress: Progress | None = None,
                     should_stop: ShouldStop | None = None) -> tuple[Callable[[], dict], Any]:
    """Labelled batches from simulated slides (what the bundled model was trained on), and
    the bank they come from; used when the user gives no labelled rows."""
    from .renal import make_batches
    from .renal_data import build_patch_bank

    seeds = list(range(SOURCE_SEED0 + SOURCE_SLIDES * seed,
                       SOURCE_SEED0 + SOURCE_SLIDES * (seed + 1)))
    bank = build_patch_bank(seeds, size=SOURCE_SLIDE_SIZE, biopsy_fraction=0.3,
                            progress=progress, should_stop=should_stop)
    return make_batches(bank, 4, seed=seed), bank


def run_adapt(base: Any, base_name: str, targets: TargetImages, out: str | Path,
              options: AdaptOptions, *, source: list | None = None, val: list | None = None,
              max_steps: int | None = None, started: float | None = None,
              progress: Progress | None = None, should_stop: ShouldStop | None = None,
              on_validate: Callable[[dict], None] | None = None) -> TrainResult:
    """Adapt a copy of ``base`` (left unchanged) to ``targets`` and save it to ``out``.

    Parameters
    ----------
    base : torch.nn.Module
        The renal model to start from; it is copied, never changed.
    base_name : str
        How the checkpoint names the start.
    targets : TargetImages
        The unlabelled images of the user's slides.
    out : str or path-like
        The checkpoint to write (every few minutes and at the end).
    options : AdaptOptions
        Budget, discriminator levels, schedule; recorded in the checkpoint.
    source : list of Annotation, optional
        Labelled rows (partial labels); None or empty: simulated slides
        (:func:`simulator_source`).
    val : list of Annotation, optional
        Labelled rows scored as training goes; the best weights are kept.
    max_steps : int, optional
        A step budget as well as the time (the first reached ends the run).
    started : float, optional
        ``time.perf_counter()`` when the run began (reading the targets counts).
    progress, should_stop : callable, optional
        The run contract: a stop keeps the best model so far (the last without ``val``).
    on_validate : callable, optional
        Called with each validation's history entry.

    Returns
    -------
    TrainResult
        Its ``model`` the adapted copy, its ``recipe`` what the checkpoint records.

    Raises
    ------
    OmnisegInputError
        A base model that is not a renal Omni-Seg+ network.
    """
    import torch

    from ..checkpoints import save_checkpoint
    from ..predict.stain_norm import references_of_images
    from .annotations import summarize
    from .finetune_renal import evaluate_annotations, make_finetune_batches

    started = time.perf_counter() if started is None else started
    if not hasattr(base, "feature_maps"):
        raise OmnisegInputError(f"{base_name} is not a kidney Omni-Seg+ model; adaptation "
                                "needs one")
    torch.manual_seed(options.seed)
    model = copy.deepcopy(base).float().train()
    if source:
        next_source = make_finetune_batches(source, batch=options.batch, crop=options.crop,
                                            seed=options.seed)
        source_images = [a.image for a in source]
        stains = sorted({a.stain for a in source if a.stain})
        source_words = (f"{len(source)} annotated patches of {', '.join(sorted(summarize(source)))}"
                        + (f" ({', '.join(stains)})" if stains else ""))
    else:
        next_source, bank = simulator_source(options.seed, progress, should_stop)
        source_images = list(bank.images[: 64])
        source_words = (f"{SOURCE_SLIDES} simulated slides ({SOURCE_SLIDE_SIZE} px at 40x, "
                        f"{len(bank)} patches), the bundled model's training data")
    stain_reference = references_of_images(source_images)
    targets = _normalised_targets(targets, options.normalise_stain, stain_reference)
    discriminators = make_discriminators(options.levels, float(getattr(model, "width", 1.0)))
    phases = Phases(options, started=started, minutes=options.minutes, max_steps=max_steps)
    step = AdversarialStep(model, discriminators, next_source,
                           TargetSampler(targets, options.batch, options.crop, options.seed),
                           phases, lr=options.lr)
    recipe = {"trained_on": f"adapted to {targets.description}; source {source_words}",
              "base_model": base_name,
              "base_trained_on": (getattr(base, "omniseg_metadata", {}) or {}).get(
                  "trained_on", ""),
              "adaptation": {"options": options.metadata(), "targets": targets.summary(),
                             "source": source_words},
              "stain_reference": stain_reference,
              "normalise_stain": options.normalise_stain,
              "validation_patches": len(val or [])}

    def save(steps: int) -> None:
        save_checkpoint(model, out, **recipe, steps=steps,
                        training_seconds=round(time.perf_counter() - started, 1))

    engine = {} if options.validate_every is None else {"validate_every":
                                                        options.validate_every}
    result = run_training(step, minutes=options.minutes, max_steps=max_steps, started=started,
                          score=(lambda: evaluate_annotations(model, val)["mean_dice"])
                          if val else None, on_validate=on_validate, checkpoint=save,
                          checkpoint_at_end=False, progress=progress, should_stop=should_stop,
                          **engine)
    result.model = model
    result.recipe = {**recipe, "steps": result.steps, "stopped": result.stopped,
                     "best_val_dice": result.best_score, "history": result.history}
    save_checkpoint(model, out, **result.recipe, **_familiarity(model, source_images, targets),
                    training_seconds=round(time.perf_counter() - started, 1))
    return result


def _normalised_targets(targets: TargetImages, method: str, stain_reference: dict
                        ) -> TargetImages:
    """``targets`` with each image's stain mapped to the source's (``method``), or as they are
    for "none"; an image with too little tissue to fit is kept as it is."""
    from ..predict.stain_norm import StainStatistics, normaliser_for

    if StainNormalisation(method) == StainNormalisation.NONE:
        return targets
    if str(method) not in stain_reference:
        raise OmnisegInputError("the source images hold too little tissue to fit a stain "
                                f"reference, so {method} normalisation cannot be used")
    reference = StainStatistics.from_dict(stain_reference[str(method)])
    images = []
    for image in targets.images:
        try:
            images.append(normaliser_for([image], reference)(image))
        except OmnisegInputError:
            images.append(image)
    return dataclasses.replace(targets, images=images)


def _familiarity(model: Any, source_images: list, targets: TargetImages) -> dict:
    """The adapted model's familiarity record: crops of its source and of its target images
    on tissue (what it was trained for), each image a group."""
    from ..predict.familiarity import FIT_PATCHES, familiarity_metadata, random_crops
    from ..predict.tissue_mask import tissue_pixels

    images = [np.asarray(x)[..., :3] for x in [*source_images, *targets.images]]
    per = -(-2 * FIT_PATCHES // max(len(images), 1))
    crops = random_crops(images, 256, per)
    groups = np.arange(len(crops)) // per
    keep = np.asarray([tissue_pixels(c).mean() >= 0.5 for c in crops], bool)
    return familiarity_metadata(model, crops[keep], groups[keep]) if keep.any() else {}
