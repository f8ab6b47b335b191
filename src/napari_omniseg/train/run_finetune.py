"""Fine-tuning as one capability: the entry point the Fine-tune widget and ``omniseg finetune``
both call (synthetic pairs, then training on a copy of the model, then the checkpoint), with its
options as one frozen dataclass whose fields are what the checkpoint records."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..choices import GENERATOR
from ..errors import OmnisegInputError
from ..run import Progress, ShouldStop
from .average import blend_with_start, check_start_share
from .task_functions import functions_of


@dataclass(frozen=True)
class FinetuneOptions:
    """How a fine-tuning run trains.

    Attributes
    ----------
    minutes : float
        The whole budget, synthetic pairs included.
    lr : float or None
        Learning rate; None: the task's default.
    semi_supervised : bool
        Pseudo-labels for the other tissues and the two-view consistency loss (kidney only).
    seed : int
        Batches, augmentation and synthetic layouts.
    synthetic : int
        Synthetic pairs per trained tissue (kidney only; 0: none), made by ``generator``.
    generator : str
        The generator of the synthetic pairs: a checkpoint path or "synthesis" (bundled).
    stains : tuple of str
        Stains of the synthetic pairs; empty: those of the training rows (else H&E).
    validate_every : float or None
        Seconds between validations; None: the engine's default.
    keep_start : float
        The share of the starting model's weights mixed back into the trained ones at the end
        (0: none; 0.5 keeps most of what the start knew of slides unlike the rows;
        :func:`~napari_omniseg.train.average.blend_with_start`).
    """

    minutes: float = 10.0
    lr: float | None = None
    semi_supervised: bool = False
    seed: int = 0
    synthetic: int = 0
    generator: str = GENERATOR
    stains: tuple[str, ...] = ()
    validate_every: float | None = None
    keep_start: float = 0.0

    def metadata(self) -> dict:
        """What the checkpoint records of the options (the generator only when it was used)."""
        out = dataclasses.asdict(self)
        if not self.synthetic:
            for key in ("generator", "stains"):
                out.pop(key)
        out["stains"] = list(out.get("stains", []))
        return out


def run_finetune(task: Any, base: Any, base_name: str, train: list, val: list | None,
                 out: str | Path, options: FinetuneOptions, *,
                 progress: Progress | None = None, should_stop: ShouldStop | None = None,
                 on_validate: Callable[[dict], None] | None = None) -> Any:
    """Fine-tune ``base`` (left unchanged) on ``train`` and save the result to ``out``.

    Synthetic pairs, when asked, are made within the first half of the budget (they join the
    batches after it).

    Parameters
    ----------
    task : Task
        The modality (:mod:`napari_omniseg.tasks`).
    base : torch.nn.Module
        The model to start from; it is copied, never changed.
    base_name : str
        How the checkpoint names the start (a bundled name or a file).
    train, val : list of annotations
        Training rows; validation rows (None or empty: none), scored as training goes, the
        best weights kept.
    out : str or path-like
        The checkpoint to write (every few minutes and at the end).
    options : FinetuneOptions
        Budget, learning rate, semi-supervision, synthetic pairs; recorded in the checkpoint.
    progress, should_stop : callable, optional
        The run contract: a stop keeps the best model so far.
    on_validate : callable, optional
        Called with each validation's history entry.

    Returns
    -------
    TrainResult
        Its ``model`` the trained copy, its ``history`` the validations.

    Raises
    ------
    OmnisegInputError
        Options the task does not offer (semi-supervision, synthetic pairs for fetal MRI), or
        a share of the start kept outside [0, 1).
    """
    check_start_share(options.keep_start)  # before training, not after it
    if options.semi_supervised and not task.semi_supervision:
        raise OmnisegInputError("semi-supervision applies to kidney patches only")
    extra: dict = {}
    if options.synthetic:
        if not task.semi_supervision:  # the generator makes kidney histology only
            raise OmnisegInputError("synthetic pairs apply to kidney patches only")
        extra["synthetic"] = _synthetic_pairs(train, options, progress, should_stop)
    engine = {} if options.validate_every is None else {"validate_every":
                                                        options.validate_every}
    result = functions_of(task).finetune(base, train, val or None, minutes=options.minutes,
                           lr=options.lr or task.lr, semi_supervised=options.semi_supervised,
                           seed=options.seed, progress=progress, should_stop=should_stop,
                           on_validate=on_validate, **engine, **extra)
    if options.keep_start:
        blend_with_start(result.model, base, options.keep_start)
        if val:  # the score kept is the blend's, the model saved
            result.best_score = functions_of(task).evaluate(result.model, val)["mean_dice"]
    meta: dict[str, Any] = {"options": options.metadata()}
    if extra:
        meta.update(synthetic_pairs=len(extra["synthetic"]), generator=str(options.generator))
    functions_of(task).save(result, out, base_name, train, val,
                            semi_supervised=options.semi_supervised, **meta)
    return result


def _synthetic_pairs(train: list, options: FinetuneOptions, progress: Progress | None,
                     should_stop: ShouldStop | None) -> list:
    from ..checkpoints import load_generator
    from .synthesis import synthetic_annotations

    g = load_generator(options.generator, device="cpu")
    tissues = sorted({a.tissue for a in train})
    stains = list(options.stains) or sorted({a.stain for a in train if a.stain}) or ["he"]
    return synthetic_annotations(g, options.synthetic, tissues, stains, seed=options.seed,
                                 progress=progress, should_stop=should_stop,
                                 seconds=options.minutes * 60 / 2)
