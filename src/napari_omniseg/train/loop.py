"""One training loop for every conditional segmenter, with progress, stop and checkpoint hooks."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

ProgressFn = Callable[[int, int, str], None]


@dataclass
class TrainResult:
    """What a run did.

    Attributes
    ----------
    steps : int
        Optimiser steps taken.
    seconds : float
        Wall time of the loop.
    losses : list of float
        Loss of every step.
    stopped : bool
        True when ``should_stop`` ended the run early.
    """

    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    stopped: bool = False


def train_loop(
    model,
    next_batch: Callable[[], tuple],
    loss_fn: Callable,
    *,
    minutes: float | None = None,
    max_steps: int | None = None,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    bf16: bool = True,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
    checkpoint_every: float = 300.0,
    consistency_weight: float = 1.0,
) -> TrainResult:
    """Train ``model`` with AdamW and a cosine schedule over a time or step budget.

    Parameters
    ----------
    model : torch.nn.Module
        Called as ``model(images, *conditions)``.
    next_batch : callable
        Returns a dict with ``images``, ``targets``, ``conditions`` (a tuple passed to the model
        after the images: ``(tissue_ids, scale_ids)`` for Omni-Seg+, ``(region_ids,)`` for
        CoNeMOS) and optionally ``valid`` (pixels whose label is known) and ``images2`` (a second
        augmentation of the same images, for a consistency loss).
    loss_fn : callable
        ``loss_fn(logits, targets, valid)``.
    minutes, max_steps : float, int
        Budget; the learning rate follows a cosine over whichever is given (time wins if both).
    bf16 : bool
        bfloat16 autocast (about 3x faster on CPUs with AMX; the loss is computed in fp32).
    progress : callable, optional
        ``progress(done, total, message)`` about once a second; total is 1000 for time budgets.
    should_stop : callable, optional
        Polled every step; the model keeps its last weights and ``stopped`` is set.
    on_checkpoint : callable, optional
        Called with the step number every ``checkpoint_every`` seconds and at the end.
    consistency_weight : float
        Weight of the mean squared difference between the foreground probabilities of
        ``images`` and ``images2`` when batches carry both.
    """
    import torch
    import torch.nn.functional as F

    if minutes is None and max_steps is None:
        raise ValueError("give a time budget (minutes) or a step budget (max_steps)")
    dev = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    budget_s = minutes * 60 if minutes is not None else None
    result = TrainResult()
    t0 = last_report = last_ckpt = time.perf_counter()
    model.train()
    while True:
        elapsed = time.perf_counter() - t0
        frac = elapsed / budget_s if budget_s is not None else result.steps / max_steps
        if frac >= 1 or (max_steps is not None and result.steps >= max_steps):
            break
        if should_stop is not None and should_stop():
            result.stopped = True
            break
        warm = min(1.0, (result.steps + 1) / 50)
        for group in opt.param_groups:
            group["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        batch = next_batch()
        images, targets = batch["images"].to(dev), batch["targets"].to(dev)
        conditions = [c.to(dev) for c in batch["conditions"]]
        valid = batch["valid"].to(dev) if batch.get("valid") is not None else None
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(images, *conditions)
        loss = loss_fn(logits.float(), targets, valid)
        if batch.get("images2") is not None:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                logits2 = model(batch["images2"].to(dev), *conditions)
            p1 = torch.softmax(logits.float(), dim=1)[:, 1]
            p2 = torch.softmax(logits2.float(), dim=1)[:, 1]
            loss = loss + consistency_weight * F.mse_loss(p1, p2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        result.steps += 1
        result.losses.append(loss.item())
        now = time.perf_counter()
        if progress is not None and now - last_report > 1.0:
            recent = result.losses[-20:]
            progress(int(1000 * min(frac, 1)), 1000,
                     f"step {result.steps}, loss {sum(recent) / len(recent):.3f}")
            last_report = now
        if on_checkpoint is not None and now - last_ckpt > checkpoint_every:
            on_checkpoint(result.steps)
            last_ckpt = now
    result.seconds = time.perf_counter() - t0
    model.eval()
    if on_checkpoint is not None:
        on_checkpoint(result.steps)
    return result
