"""The one training engine: budget, learning-rate schedule, validation, keep-best, checkpoints,
progress and Stop, around a pluggable step.

A *step* (:class:`TrainingStep`) has ``networks`` (``{name: module}``: what keep-best
snapshots), ``optimizers`` (each param group's starting ``lr`` is scaled by the schedule) and
``__call__() -> {"loss": ..., other named losses}``, one optimisation step.
:class:`SegmentationStep` trains every segmenter; a GAN or adversarial step owns several networks
and optimisers and runs the same way.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..checkpoints import default_bf16
from ..run import Progress, ShouldStop


class TrainingStep(Protocol):
    """What :func:`run_training` trains: any object with these three members plugs in."""

    #: The networks trained, by name: what keep-best snapshots and checkpoints save.
    networks: dict[str, Any]
    #: Their optimisers; the schedule scales each param group from its own starting rate.
    optimizers: list[Any]

    def __call__(self) -> dict[str, float]:
        """One optimisation step; ``{"loss": main loss, other named losses}``."""
        ...

#: Steps over which the learning rate ramps up from zero.
WARMUP_STEPS = 50
#: Shortest training a time budget leaves after preparation (seconds).
MIN_TRAINING_SECONDS = 3.0


@dataclass
class TrainResult:
    """What a training run did: optimiser ``steps``, wall time since the caller started
    (``seconds``), the main loss of every step (``losses``), whether Stop ended it
    (``stopped``), the validation score of the weights kept (``best_score``), the trained
    network when a copy was trained (``model``), the ``history`` widgets plot:
    ``{"step", "seconds", <each named loss: recent mean>, "val_dice"}`` at each validation, and
    for a run that saved its networks the ``recipe`` with the run's facts, as the checkpoint
    records it."""

    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    recipe: dict = field(default_factory=dict)
    stopped: bool = False
    best_score: float | None = None
    model: Any = None


def learning_rate_factor(step: int, fraction: float, warmup: int = WARMUP_STEPS) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from 1 to 0 over the budget."""
    return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(fraction, 1.0)))


def run_training(
    step: TrainingStep,
    *,
    minutes: float | None = None,
    max_steps: int | None = None,
    started: float | None = None,
    score: Callable[[], float] | None = None,
    validate_every: float = 60.0,
    on_validate: Callable[[dict], None] | None = None,
    checkpoint: Callable[[int], object] | None = None,
    checkpoint_every: float = 300.0,
    checkpoint_at_end: bool = True,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> TrainResult:
    """Run ``step`` (see the module docstring) until the budget is spent or Stop.

    The budget is ``minutes`` (from ``started``, ``time.perf_counter()`` when the caller began
    preparing; default now) or ``max_steps``; the learning rate follows
    :func:`learning_rate_factor` over it. ``score()`` (higher is better) runs before the first
    step, every ``validate_every`` seconds and at the end, and the networks end with the best
    weights; ``on_validate`` gets each history entry. ``checkpoint(step)`` runs every
    ``checkpoint_every`` seconds and at the end (unless ``checkpoint_at_end`` is False: the
    caller writes the final file itself, with the run's facts). ``progress`` and
    ``should_stop`` are the run contract (total 1000 for a time budget); Stop ends the run
    after the step in progress.
    """
    if minutes is None and max_steps is None:
        raise ValueError("give a time budget (minutes) or a step budget (max_steps)")
    started = time.perf_counter() if started is None else started
    result = TrainResult()
    best: dict = {"score": None, "state": None}
    recent: dict[str, list[float]] = {}

    def validate() -> None:
        entry: dict = {"step": result.steps, "seconds": round(time.perf_counter() - started, 1)}
        entry.update({k: sum(v[-50:]) / len(v[-50:]) if v else None for k, v in recent.items()}
                     or {"loss": None})
        entry["val_dice"] = None
        if score is not None:
            _set_training(step, False)
            entry["val_dice"] = value = score()
            _set_training(step, True)
            if best["score"] is None or value > best["score"]:
                best.update(score=value, state=_snapshot(step))
        result.history.append(entry)
        if on_validate is not None:
            on_validate(entry)

    for opt in step.optimizers:
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
    _set_training(step, True)
    if score is not None:
        validate()
    t0 = time.perf_counter()
    budget_s = None
    if minutes is not None:
        budget_s = max(MIN_TRAINING_SECONDS, minutes * 60 - (t0 - started))
    last_report = last_validation = last_checkpoint = t0
    while True:
        elapsed = time.perf_counter() - t0
        frac = elapsed / budget_s if budget_s is not None else result.steps / (max_steps or 1)
        if frac >= 1 or (max_steps is not None and result.steps >= max_steps):
            break
        if should_stop is not None and should_stop():
            result.stopped = True
            break
        factor = learning_rate_factor(result.steps, frac)
        for opt in step.optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * factor
        losses = step()
        result.steps += 1
        result.losses.append(losses["loss"])
        for name, value in losses.items():
            recent.setdefault(name, []).append(value)
            del recent[name][:-50]
        now = time.perf_counter()
        if progress is not None and now - last_report > 1.0:
            tail = recent["loss"][-20:]
            progress(int(1000 * min(frac, 1)) if budget_s is not None else result.steps,
                     1000 if budget_s is not None else (max_steps or 0),
                     f"step {result.steps}, loss {sum(tail) / len(tail):.3f}")
            last_report = now
        if now - last_validation > validate_every:
            validate()
            last_validation = time.perf_counter()
        if checkpoint is not None and now - last_checkpoint > checkpoint_every:
            checkpoint(result.steps)
            last_checkpoint = time.perf_counter()
    validate()
    if best["state"] is not None:
        for name, net in step.networks.items():
            net.load_state_dict(best["state"][name])
        result.best_score = best["score"]
    _set_training(step, False)
    result.seconds = time.perf_counter() - started
    if checkpoint is not None and checkpoint_at_end:
        checkpoint(result.steps)
    return result


def _set_training(step: Any, mode: bool) -> None:
    for net in step.networks.values():
        net.train(mode)


def _snapshot(step: Any) -> dict:
    return {name: copy.deepcopy(net.state_dict()) for name, net in step.networks.items()}


class SegmentationStep:
    """One AdamW step of a conditional segmenter, ``model(images, *conditions)``.

    ``next_batch()`` returns ``images``, ``targets``, ``conditions`` (``(tissue_ids,
    scale_ids)`` for Omni-Seg+, ``(region_ids,)`` for CoNeMOS) and optionally ``valid`` (known
    pixels) and ``images2`` (another augmentation: ``consistency_weight`` weighs the squared
    difference of the two views' foreground probabilities). The loss is ``loss_fn(logits,
    targets, valid)``; ``bf16`` autocast defaults to
    :func:`~napari_omniseg.checkpoints.default_bf16`.
    """

    def __init__(self, model: Any, next_batch: Callable[[], dict], loss_fn: Callable, *,
                 lr: float = 1e-3, weight_decay: float = 1e-4, bf16: bool | None = None,
                 consistency_weight: float = 1.0) -> None:
        import torch

        self.model, self.next_batch, self.loss_fn = model, next_batch, loss_fn
        self.device = next(model.parameters()).device
        self.bf16 = default_bf16(self.device) if bf16 is None else bf16
        self.consistency_weight = consistency_weight
        self.networks = {"model": model}
        self.optimizers = [torch.optim.AdamW(model.parameters(), lr=lr,
                                             weight_decay=weight_decay)]

    def _forward(self, images, conditions):
        import torch

        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.model(images.to(self.device), *conditions).float()

    def __call__(self) -> dict[str, float]:
        """One optimisation step on the next batch; returns the step's losses."""
        import torch
        import torch.nn.functional as F

        dev = self.device
        batch = self.next_batch()
        conditions = [c.to(dev) for c in batch["conditions"]]
        valid = batch["valid"].to(dev) if batch.get("valid") is not None else None
        logits = self._forward(batch["images"], conditions)
        if batch.get("sample_weight") is not None:  # synthetic pairs weigh less
            loss = self.loss_fn(logits, batch["targets"].to(dev), valid,
                                sample_weight=batch["sample_weight"])
        else:
            loss = self.loss_fn(logits, batch["targets"].to(dev), valid)
        if batch.get("images2") is not None:
            logits2 = self._forward(batch["images2"], conditions)
            p1 = torch.softmax(logits, dim=1)[:, 1]
            p2 = torch.softmax(logits2, dim=1)[:, 1]
            loss = loss + self.consistency_weight * F.mse_loss(p1, p2)
        opt = self.optimizers[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        opt.step()
        return {"loss": loss.item()}


def train_and_save(step: TrainingStep, save: Callable[[dict, bool], object], recipe: dict, *,
                   started: float, data_seconds: float = 0.0, model: Any = None,
                   **engine: Any) -> TrainResult:
    """Run a from-scratch recipe's step and save its networks every few minutes and at the end
    (a stop leaves a usable model): ``save(metadata, final)`` writes the checkpoint(s) with
    ``recipe`` plus the run's facts (steps, data and training seconds, stopped, final losses).
    The result carries that ``recipe`` and ``model`` (the network trained, if given)."""
    import numpy as np

    def facts(steps: int) -> dict:
        now = time.perf_counter()
        return dict(recipe, steps=steps, data_seconds=round(data_seconds, 1),
                    training_seconds=round(now - started - data_seconds, 1),
                    seconds=round(now - started, 1))

    result = run_training(step, started=started, **engine, checkpoint_at_end=False,
                          checkpoint=lambda n: save(facts(n), False))
    last = result.history[-1] if result.history else {}
    result.recipe = dict(facts(result.steps), stopped=result.stopped,
                         final_loss=float(np.mean(result.losses[-50:])) if result.losses
                         else None,
                         final_losses={k: v for k, v in last.items() if k != "step"})
    save(result.recipe, True)
    result.model = model
    return result


#: Fine-tuning budget when the caller gives none (minutes).
DEFAULT_FINETUNE_MINUTES = 10.0


def with_default_budget(engine: dict) -> dict:
    """:func:`run_training` keywords with :data:`DEFAULT_FINETUNE_MINUTES` when neither
    ``minutes`` nor ``max_steps`` is given."""
    if "minutes" not in engine and engine.get("max_steps") is None:
        return {**engine, "minutes": DEFAULT_FINETUNE_MINUTES}
    return engine


def finetune_copy(model: Any, next_batch: Callable[[], dict], loss_fn: Callable,
                  score: Callable[[Any], float] | None, *, started: float, lr: float,
                  consistency_weight: float = 0.0, **engine: Any) -> TrainResult:
    """Train a copy of ``model`` (left unchanged) with :class:`SegmentationStep`, keeping the
    best validation ``score(model)``; ``engine`` are :func:`run_training`'s keywords."""
    student = copy.deepcopy(model)
    step = SegmentationStep(student, next_batch, loss_fn, lr=lr,
                            consistency_weight=consistency_weight)
    result = run_training(step, started=started,
                          score=None if score is None else (lambda: score(student)), **engine)
    result.model = student
    return result
