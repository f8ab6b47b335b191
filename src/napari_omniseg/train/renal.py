"""The recipe of the bundled renal model: simulated slides in four stains, every tissue at its
optimal and neighbouring magnifications, strong colour and spatial augmentation."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import vocab
from ..run import Progress, ShouldStop
from .metrics import PooledDice
from .renal_data import ConditionSampler, PatchBank, build_patch_bank

#: Seeds of training slides start here; evaluation uses seeds below it.
TRAIN_SEED0 = 10_000


def make_batches(bank: PatchBank, batch: int, seed: int = 0, augment: bool = True):
    """A ``next_batch()`` callable drawing augmented (image, mask, tissue, scale) batches."""
    import torch

    from .augment import colour, spatial

    sampler = ConditionSampler(bank, seed=seed)
    gen = torch.Generator().manual_seed(seed)

    def next_batch():
        draws = [sampler.draw() for _ in range(batch)]
        idx = [d[0] for d in draws]
        images = torch.from_numpy(bank.images[idx]).permute(0, 3, 1, 2).float().div_(255)
        masks = torch.from_numpy(np.stack([bank.mask(i, t) for i, t, _ in draws])).float()
        if augment:
            images, masks = spatial(images, masks, gen)
            images = colour(images, gen)
        tids = torch.tensor([t for _, t, _ in draws])
        sids = torch.tensor([vocab.scale_id(m) for _, _, m in draws])
        return {"images": images, "targets": masks, "conditions": (tids, sids)}

    return next_batch


def train_renal(
    out: str | os.PathLike,
    minutes: float = 90.0,
    slides: int = 80,
    width: float = 0.5,
    batch: int = 8,
    lr: float = 2e-3,
    slide_size: int = 4096,
    bank_path: str | os.PathLike | None = None,
    biopsy_fraction: float = 0.3,
    half: bool = False,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> Any:
    """Train the renal Omni-Seg+ model on simulated slides and write its checkpoint.

    The checkpoint is written every few minutes and at the end, always through a temporary
    file, so a stop leaves a usable model. ``half=True`` stores the final weights in float16
    (the bundled checkpoint).

    Returns
    -------
    TrainResult
        Its ``model`` the network, its ``recipe`` the recipe and timings stored in the
        checkpoint's metadata.
    """
    import torch

    from ..checkpoints import pick_device, save_checkpoint
    from ..nets.omniseg import OmniSegPlus
    from .engine import SegmentationStep, train_and_save
    from .losses import dice_bce_loss

    t0 = time.perf_counter()
    seeds = list(range(TRAIN_SEED0, TRAIN_SEED0 + slides))
    if bank_path is not None and Path(bank_path).exists():
        bank = PatchBank.load(bank_path)
    else:
        bank = build_patch_bank(seeds, size=slide_size, progress=progress,
                                should_stop=should_stop, biopsy_fraction=biopsy_fraction)
        if bank_path is not None:
            bank.save(bank_path)
    t_data = time.perf_counter() - t0
    torch.manual_seed(0)
    device = pick_device()
    model = OmniSegPlus(width=width).to(device)
    recipe = {
        "trained_on": f"{slides} simulated slides ({slide_size} px at 40x, seeds "
                      f"{seeds[0]}-{seeds[-1]}, stains drawn from {list(vocab.STAINS)}, "
                      f"{biopsy_fraction:.0%} of them needle biopsies with glass)",
        "patches": int(len(bank)),
        "width": width,
        "batch": batch,
        "lr": lr,
        "loss": "Dice + BCE on two one-hot channels, weight 1.2 on a 2 px ring outside objects",
        "augmentation": "flips, rotation, +-10% zoom; optical-density stain mix/scale, "
                        "brightness, blur, noise",
        "sampling": "tissue weights dt .15, pt .1, cap .15, tuft .1, ves .2, ptc .3; optimal "
                    "magnification p=0.7 else a neighbouring one; patch containing the tissue "
                    "p=0.8",
        "device": str(device),
    }
    step = SegmentationStep(model, make_batches(bank, batch), dice_bce_loss, lr=lr)

    def save(meta: dict, final: bool) -> None:
        save_checkpoint(model, out, half=half and final, **meta)  # float16: the last only

    return train_and_save(step, save, recipe, started=t0, data_seconds=t_data, model=model,
                          minutes=minutes, progress=progress, should_stop=should_stop)


def evaluation_seeds(n: int, size: int = 4096, start: int = 1) -> list[int]:
    """The first ``n`` held-out seeds whose slide holds a whole artery and a whole glomerulus.

    Chosen from the layout alone (nothing is rendered), so that every tissue has ground truth;
    the seeds lie below the training range.
    """
    from ..simulate.renal_layout import RenalLayout

    side_um = size * 0.25
    seeds, seed = [], start
    while len(seeds) < n and seed < TRAIN_SEED0:
        lay = RenalLayout(seed)
        inside = lambda y, x, r: r < y < side_um - r and r < x < side_um - r  # noqa: E731
        arts = [a for a in lay.arteries(0, 0, side_um, side_um)
                if inside(a.cy, a.cx, a.r_out * a.ecc)]
        gloms = [g for g in lay.glomeruli(0, 0, side_um, side_um)
                 if inside(g.cy, g.cx, g.r_cap)]
        if arts and gloms:
            seeds.append(seed)
        seed += 1
    return seeds


def evaluate_simulated(model, seeds: list[int], stains: tuple[str, ...] = tuple(vocab.STAINS),
                       size: int = 4096, tissues: tuple[str, ...] = vocab.TISSUE_CODES,
                       bf16: bool = False) -> dict:
    """Dice of each tissue at its optimal magnification on simulated held-out slides.

    Returns
    -------
    dict
        ``{stain: {tissue: dice}}``; Dice pools all pixels of all slides of that stain.
    """
    from ..predict.tiling import predict_array
    from ..simulate.renal import simulate_renal

    out: dict[str, dict[str, float]] = {}
    for stain in stains:
        pooled = PooledDice(tissues)
        for seed in seeds:
            s = simulate_renal(size, size, stain=stain, seed=seed)
            by_mag: dict[int, list[str]] = {}
            for code in tissues:
                by_mag.setdefault(vocab.tissue(code).optimal_magnification, []).append(code)
            for mag, codes in by_mag.items():
                level = s.level_for(mag)
                conds = [(vocab.tissue(c).task_id, vocab.scale_id(mag)) for c in codes]
                probs = predict_array(model, s.image[level], conds, bf16=bf16)
                for code, p in zip(codes, probs):
                    pooled.add(code, p > 0.5, s.masks[code][level] > 0)
        out[stain] = pooled.scores()
    return out


def evaluate_simulated_slides(model, seeds: list[int],
                              stains: tuple[str, ...] = tuple(vocab.STAINS), size: int = 4096,
                              quality: int = 90) -> dict:
    """Dice as users get it: simulated slides written as JPEG OME-TIFF pyramids, then
    :func:`~napari_omniseg.open_slide` and :func:`~napari_omniseg.predict.slide.segment_slide`
    (tile engine, glass mask, bfloat16 on CPU), each tissue at its optimal magnification.

    Returns
    -------
    dict
        ``{stain: {tissue: dice}}``; Dice pools all pixels of all slides of that stain.
    """
    import tempfile

    import tifffile

    from ..io.slides import open_slide
    from ..predict.slide import segment_slide
    from ..simulate.renal import write_renal_slide

    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="omniseg-eval-") as tmp:
        for stain in stains:
            pooled = PooledDice(vocab.TISSUE_CODES)
            for seed in seeds:
                image, masks = write_renal_slide(
                    Path(tmp) / f"{stain}{seed}.ome.tif", size, size, stain=stain, seed=seed,
                    masks_path=Path(tmp) / f"{stain}{seed}_masks.ome.tif", quality=quality)
                slide = open_slide(image)
                pred = segment_slide(slide, ("all",), None, model)
                with tifffile.TiffFile(masks) as tif:
                    truth = [lv.asarray() > 0 for lv in tif.series[0].levels]
                for t in vocab.TISSUES:
                    level = vocab.MAGNIFICATIONS[::-1].index(t.optimal_magnification)
                    pooled.add(t.code, pred[t.code][level].compute() > 0,
                               truth[level][t.task_id])
            out[stain] = pooled.scores()
    return out


def dice_table(scores: dict) -> str:
    """A Markdown table of :func:`evaluate_simulated` results."""
    tissues = list(next(iter(scores.values())))
    lines = ["| stain | " + " | ".join(tissues) + " |", "|---|" + "---:|" * len(tissues)]
    for stain, row in scores.items():
        lines.append(f"| {stain} | " + " | ".join(f"{row[t]:.3f}" for t in tissues) + " |")
    return "\n".join(lines)
