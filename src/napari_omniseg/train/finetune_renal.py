"""Fine-tune the renal model on a user's partial annotations, and score it on annotated patches.

The model in use is never touched: training runs on a copy, keeps the weights with the best
validation Dice seen so far (the "last good" model), and hands them back at the end.

Semi-supervision (Omni-Seg+): for the tissues a patch is *not* annotated for, the starting
model's confident answers at those tissues' optimal magnifications, at the annotated patch's
location, are used as extra (pseudo-labelled) samples; and the network is asked to give the
same answer for two colour augmentations of the same patch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import vocab
from .annotations import Annotation, draw_evenly, pad_to, sampling_pools, targets_and_valid
from .engine import TrainResult, finetune_copy, with_default_budget
from .metrics import dice, hausdorff95

#: Pseudo-labels count only where the starting model is this sure (p below 1-x or above x).
PSEUDO_CONFIDENCE = 0.8
#: Smallest side of a pseudo-labelled view (the annotated patch seen at a lower power).
MIN_PSEUDO_SIDE = 64


#: Synthetic pairs: their share of a batch once they join (their loss weight is
#: :data:`~napari_omniseg.train.losses.SYNTHETIC_WEIGHT`).
SYNTHETIC_FRACTION = 0.25


def make_finetune_batches(annotations: list[Annotation], batch: int = 8, crop: int = 256,
                          seed: int = 0, augment: bool = True,
                          pseudo: list[Annotation] | None = None, pseudo_fraction: float = 0.3,
                          consistency: bool = False,
                          synthetic: list[Annotation] | None = None,
                          synthetic_joined: Any = None, disjoint_p: float = 0.0):
    """``next_batch()`` for :func:`~napari_omniseg.train.engine.run_training`.

    Tissues are drawn evenly, then an annotation of that tissue, then a crop around one of its
    known pixels. ``valid`` marks known pixels (padding and pixels rotated in from outside are
    unknown). A ``pseudo_fraction`` of each batch comes from ``pseudo`` when given. Once
    ``synthetic_joined()`` says so (after a warm-up on real pairs alone), a
    :data:`SYNTHETIC_FRACTION` of each batch comes from ``synthetic``, weighted
    :data:`~napari_omniseg.train.losses.SYNTHETIC_WEIGHT` in the loss (``sample_weight``).

    With probability ``disjoint_p`` an annotated sample is asked instead for a tissue that
    never shares a pixel with its own (:func:`~napari_omniseg.vocab.disjoint_tissues`) at the
    same magnification: the painted pixels are then known negatives and everything else is
    unknown (a painted tubule is no artery). Only tissues trained at that magnification
    (their optimal one or a neighbour) are asked.
    """
    import torch

    from .augment import colour, spatial
    from .losses import SYNTHETIC_WEIGHT
    from .renal_data import neighbouring_magnifications

    rng, gen, pools = sampling_pools(annotations, "tissue", seed)

    def cut(a: Annotation):
        ky, kx = np.nonzero(a.known)
        j = int(rng.integers(len(ky)))
        h, w = a.mask.shape
        y0 = int(np.clip(ky[j] - crop // 2, 0, max(0, h - crop)))
        x0 = int(np.clip(kx[j] - crop // 2, 0, max(0, w - crop)))
        sl = (slice(y0, y0 + crop), slice(x0, x0 + crop))
        img = pad_to(a.image[sl], crop, "reflect")
        code = pad_to((a.mask[sl] & a.known[sl]).astype(np.uint8) + 2 * a.known[sl], crop,
                       "constant")
        return img, code

    def disjoint_at(a: Annotation) -> tuple[str, ...]:
        key = (a.tissue, float(a.magnification))
        if key not in asked_instead:
            asked_instead[key] = tuple(
                t for t in vocab.disjoint_tissues(a.tissue)
                if round(a.magnification) in neighbouring_magnifications(
                    vocab.tissue(t).optimal_magnification))
        return asked_instead[key] if (a.mask & a.known).any() else ()

    asked_instead: dict[tuple[str, float], tuple[str, ...]] = {}

    def next_batch():
        images, codes, tids, sids, weights = [], [], [], [], []
        joined = bool(synthetic) and (synthetic_joined is None or synthetic_joined())
        for _ in range(batch):
            weights.append(1.0)
            if joined and rng.random() < SYNTHETIC_FRACTION:
                a = synthetic[int(rng.integers(len(synthetic)))]
                weights[-1] = SYNTHETIC_WEIGHT
            elif pseudo and rng.random() < pseudo_fraction:
                a = pseudo[int(rng.integers(len(pseudo)))]
            else:
                a = draw_evenly(rng, pools)
                others = disjoint_at(a) if disjoint_p else ()
                if others and rng.random() < disjoint_p:
                    painted = a.mask & a.known
                    a = dataclasses.replace(a, tissue=others[int(rng.integers(len(others)))],
                                            mask=np.zeros_like(painted), known=painted)
            img, code = cut(a)
            images.append(img)
            codes.append(code)
            tids.append(vocab.tissue(a.tissue).task_id)
            sids.append(vocab.scale_id(a.magnification))
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255)
        # mask and known travel together through the spatial transform: code = mask + 2 known
        c = torch.from_numpy(np.stack(codes)).float()
        x2 = None
        if augment:
            x, c = spatial(x, c, gen)
            if consistency:
                x2 = colour(x, gen)
            x = colour(x, gen)
        out = {"images": x, **targets_and_valid(c),
               "conditions": (torch.tensor(tids), torch.tensor(sids))}
        if x2 is not None:
            out["images2"] = x2
        if synthetic:
            out["sample_weight"] = torch.tensor(weights)
        return out

    return next_batch


def pseudo_labels(model, annotations: list[Annotation], bf16: bool | None = None
                  ) -> list[Annotation]:
    """Samples for the tissues each patch is not annotated for, labelled by ``model``.

    For every other tissue whose optimal magnification is at most the patch's, the patch is seen
    at that magnification (downsampled, at least :data:`MIN_PSEUDO_SIDE` pixels) and the model's
    answer there becomes the label; only confident pixels are known.
    """
    from skimage.transform import resize

    from ..checkpoints import model_and_precision
    from ..predict.tiling import predict_array

    model, bf16 = model_and_precision(model, "renal", bf16)
    out = []
    for a in annotations:
        for t in vocab.TISSUES:
            if t.code == a.tissue or t.optimal_magnification > a.magnification:
                continue
            f = t.optimal_magnification / a.magnification
            h, w = (int(round(s * f)) for s in a.mask.shape)
            if min(h, w) < MIN_PSEUDO_SIDE:
                continue
            view = a.image if f == 1 else (resize(a.image, (h, w), order=1, anti_aliasing=True,
                                                  preserve_range=True) + 0.5).astype(np.uint8)
            cond = (t.task_id, vocab.scale_id(t.optimal_magnification))
            p = predict_array(model, view, [cond], tile=256, overlap=64, bf16=bf16)[0]
            known = (p > PSEUDO_CONFIDENCE) | (p < 1 - PSEUDO_CONFIDENCE)
            if known.any():
                out.append(Annotation(view, p > 0.5, known, t.code, t.optimal_magnification,
                                      name=f"{a.name} ({t.code} pseudo-label)", stain=a.stain))
    return out


def evaluate_annotations(model, annotations: list[Annotation], bf16: bool | None = None,
                         normalise_stain: str = "none") -> dict:
    """Per-tissue Dice and 95% Hausdorff distance (µm) on fully annotated patches.

    Each patch is segmented for its tissue at its magnification; scores are means over patches
    (Hausdorff over the patches where both masks are non-empty). ``normalise_stain``
    ("reinhard", "macenko") maps each patch's colours to the model's training stain first
    (fitted on the patch itself; a patch with too little tissue to fit is left as it is).

    Returns
    -------
    dict
        ``{"tissues": {code: {"dice", "hd95_um", "patches"}}, "mean_dice": float}``.
    """
    from ..checkpoints import model_and_precision
    from ..predict.tiling import predict_array

    model, bf16 = model_and_precision(model, "renal", bf16)
    normalise = _patch_normaliser(model, normalise_stain)
    scores: dict[str, dict[str, list[float]]] = {}
    for a in annotations:
        cond = (vocab.tissue(a.tissue).task_id, vocab.scale_id(a.magnification))
        pred = predict_array(model, normalise(a.image), [cond], tile=256, overlap=64,
                             bf16=bf16)[0] > 0.5
        pred, truth = pred & a.known, a.mask & a.known
        s = scores.setdefault(a.tissue, {"dice": [], "hd95_um": []})
        s["dice"].append(dice(pred, truth))
        s["hd95_um"].append(hausdorff95(pred, truth, vocab.mpp_of_magnification(a.magnification)))
    table = {}
    for code in [t for t in vocab.TISSUE_CODES if t in scores]:
        d, h = scores[code]["dice"], [x for x in scores[code]["hd95_um"] if np.isfinite(x)]
        table[code] = {"dice": round(float(np.mean(d)), 4),
                       "hd95_um": round(float(np.mean(h)), 2) if h else None,
                       "patches": len(d)}
    mean = float(np.mean([v["dice"] for v in table.values()])) if table else float("nan")
    return {"tissues": table, "mean_dice": round(mean, 4)}


def _patch_normaliser(model: Any, method: str) -> Callable[[np.ndarray], np.ndarray]:
    """Each image mapped to the model's training stain on its own statistics, or as it is."""
    from ..choices import StainNormalisation
    from ..errors import OmnisegInputError
    from ..predict.stain_norm import normaliser_for, reference_of

    if StainNormalisation(method) == StainNormalisation.NONE:
        return lambda image: image
    reference = reference_of(model, method)

    def normalise(image: np.ndarray) -> np.ndarray:
        try:
            return normaliser_for([image], reference)(image)
        except OmnisegInputError:  # too little tissue to fit: nothing to map
            return image

    return normalise


def finetune(model, train: list[Annotation], val: list[Annotation] | None = None, *,
             lr: float = 1e-3, batch: int = 8, semi_supervised: bool = False,
             consistency_weight: float = 1.0, seed: int = 0,
             synthetic: list[Annotation] | None = None, synthetic_after: float = 0.5,
             **engine: Any) -> TrainResult:
    """Fine-tune a copy of ``model`` (left unchanged) on partial annotations.

    ``val`` patches (fully annotated) are scored as the engine validates, and the best weights
    are kept. ``semi_supervised`` adds pseudo-labelled samples of the other tissues and the
    two-view consistency loss. ``engine`` are :func:`~napari_omniseg.train.engine.run_training`'s
    keywords (budget, default 10 minutes, counting the pseudo-labels and validation;
    ``validate_every``, ``progress``, ``should_stop``, ``on_validate``). ``synthetic`` pairs
    (:func:`~napari_omniseg.train.synthesis.synthetic_annotations`) join the batches once
    ``synthetic_after`` of the time budget has passed (the paper's warm-up: half), at the
    paper's weight 0.03.
    """
    from .losses import dice_bce_loss

    start = time.perf_counter()
    pseudo = pseudo_labels(model, train) if semi_supervised else None
    engine = with_default_budget(engine)
    joined: Callable[[], bool] | None = None
    if synthetic and engine.get("minutes"):
        join_at = start + synthetic_after * engine["minutes"] * 60

        def joined_yet() -> bool:
            return time.perf_counter() >= join_at

        joined = joined_yet

    batches = make_finetune_batches(train, batch=batch, seed=seed, pseudo=pseudo,
                                    consistency=semi_supervised, synthetic=synthetic,
                                    synthetic_joined=joined)
    return finetune_copy(
        model, batches, dice_bce_loss,
        (lambda m: evaluate_annotations(m, val)["mean_dice"]) if val else None, started=start,
        lr=lr, consistency_weight=consistency_weight if semi_supervised else 0.0, **engine)


def save_finetuned(result: TrainResult, path, base: str, train: list[Annotation],
                   val: list[Annotation] | None = None, semi_supervised: bool = False,
                   **extra: Any):
    """Write the fine-tuned model with what it was trained on and what it started from
    (``extra``: more metadata, e.g. the synthetic pairs it saw)."""
    from ..checkpoints import save_checkpoint
    from ..predict.familiarity import FIT_PATCHES, familiarity_metadata, random_crops
    from .annotations import summarize

    per = -(-FIT_PATCHES // max(len(train), 1))  # crops of each training image
    return save_checkpoint(
        result.model, path,
        trained_on=f"fine-tuned on {len(train)} annotated patches",
        tissues_trained=sorted({a.tissue for a in train}),
        data=summarize(train), validation_patches=len(val or []),
        semi_supervised=semi_supervised, **extra, **run_metadata(result, base),
        **familiarity_metadata(result.model, random_crops([a.image for a in train], 256, per),
                               np.arange(per * len(train)) // per))


def run_metadata(result: TrainResult, base: str) -> dict:
    """What every fine-tuned checkpoint records: its base model and how the run went."""
    base_meta = getattr(result.model, "omniseg_metadata", {}) or {}
    return {"base_model": base, "base_trained_on": base_meta.get("trained_on", ""),
            "steps": result.steps, "training_seconds": round(result.seconds, 1),
            "stopped": result.stopped, "best_val_dice": result.best_score,
            "history": result.history}
