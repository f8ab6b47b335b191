"""The recipe of the bundled renal model: simulated slides in four stains, every tissue at its
optimal and neighbouring magnifications, strong colour and spatial augmentation."""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import vocab
from ..run import Progress, ShouldStop
from ..simulate.renal_layout import RenalAnatomy
from .metrics import PooledDice
from .renal_data import TISSUE_WEIGHTS, ConditionSampler, PatchBank, build_patch_bank

#: Seeds of training slides start here; evaluation uses seeds below it.
TRAIN_SEED0 = 10_000


def make_batches(bank: PatchBank, batch: int, seed: int = 0, augment: bool = True,
                 p_optimal: float = 0.7, p_present: float = 0.8):
    """A ``next_batch()`` callable drawing augmented (image, mask, tissue, scale) batches
    (``p_optimal``, ``p_present``: :class:`~napari_omniseg.train.renal_data.ConditionSampler`)."""
    import torch

    from .augment import colour, spatial

    sampler = ConditionSampler(bank, p_optimal=p_optimal, p_present=p_present, seed=seed)
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


@dataclass(frozen=True)
class RenalRecipe:
    """How the renal model is trained; :meth:`metadata` is what its checkpoint records.

    Attributes
    ----------
    slides : int
        Simulated training slides (seeds from :data:`TRAIN_SEED0`).
    slide_size : int
        Their side in pixels at 40x.
    biopsy_fraction : float
        The share of them that are needle biopsies with glass around.
    ptc_slits, small_vessels, veins : float
        The simulator's shares of slit capillaries, of small, obliquely cut arteries and of
        veins
        (:class:`~napari_omniseg.simulate.renal_layout.RenalAnatomy`; 0: off).
    width : float
        The network's width multiplier.
    batch : int
        Patches per step.
    lr : float
        Learning rate.
    p_optimal : float
        How often a tissue is shown at its optimal magnification (else a neighbouring one).
    p_present : float
        How often the drawn patch contains the tissue.
    real_manifest : str, optional
        Annotated real patches (the fine-tuning CSV); only its ``train`` rows are used.
    real_fraction : float
        The share of each batch drawn from those rows (partial labels: only the annotated
        tissue's pixels count).
    init : str, optional
        A renal checkpoint (or ``"renal"``, the bundled one) to start from instead of a new
        network.
    stain_p, jpeg_p : float
        How often a patch is re-dyed with random stain vectors
        (:func:`~napari_omniseg.train.augment.stain_vectors`) and JPEG-compressed
        (:func:`~napari_omniseg.train.augment.jpeg`), on top of the colour jitter.
    edge_p : float
        How often a patch has a band mirrored along one or two sides, as Segment pads an
        image smaller than one tile (:func:`~napari_omniseg.train.augment.edge_reflection`).
    disjoint_p : float
        How often a real patch is asked for a tissue that never shares a pixel with its
        annotated one, its painted pixels then known negatives (cross-tissue negatives, see
        :func:`~napari_omniseg.train.finetune_renal.make_finetune_batches`).
    seed : int
        Seeds the batches' draws and augmentation and a new network's weights, so that two runs
        of one recipe differ only where asked (averaging runs of different seeds).
    """

    slides: int = 80
    slide_size: int = 4096
    biopsy_fraction: float = 0.3
    ptc_slits: float = 0.0
    small_vessels: float = 0.0
    veins: float = 0.0
    width: float = 0.5
    batch: int = 8
    lr: float = 2e-3
    p_optimal: float = 0.7
    p_present: float = 0.8
    real_manifest: str | None = None
    real_fraction: float = 0.5
    init: str | None = None
    stain_p: float = 0.0
    jpeg_p: float = 0.0
    edge_p: float = 0.0
    disjoint_p: float = 0.0
    seed: int = 0

    def anatomy(self) -> RenalAnatomy:
        """The simulator's shapes beyond its default ones."""
        return RenalAnatomy(self.ptc_slits, self.small_vessels, self.veins)

    def seeds(self) -> list[int]:
        """The simulator seeds of the training slides."""
        return list(range(TRAIN_SEED0, TRAIN_SEED0 + self.slides))

    def metadata(self) -> dict:
        """The fields, and what the code they select does, in words for the checkpoint."""
        seeds = self.seeds()
        weights = ", ".join(f"{code} {w:g}" for code, w in TISSUE_WEIGHTS.items())
        simulated = (f"{self.slides} simulated slides ({self.slide_size} px at 40x, "
                     f"seeds {seeds[0]}-{seeds[-1]}, stains drawn from "
                     f"{list(vocab.STAINS)}, {self.biopsy_fraction:.0%} of them "
                     "needle biopsies with glass"
                     + "".join(f", {d}" for d in [self.anatomy().describe()] if d) + ")")
        real = ""
        if self.real_manifest:
            real = (f"; and the 'train' rows of {Path(self.real_manifest).name} (annotated "
                    f"real patches, partial labels, {self.real_fraction:.0%} of each batch; "
                    "its 'val' rows never)")
            if self.disjoint_p:
                real += (f", {self.disjoint_p:.0%} of them asked for a tissue disjoint from "
                         "the painted one (its painted pixels known negatives)")
        augmentation = ("flips, rotation, +-10% zoom; optical-density stain mix/scale, "
                        "brightness, blur, noise")
        if self.stain_p or self.jpeg_p:
            augmentation += (f"; random stain vectors p={self.stain_p:g}, JPEG quality 30-95 "
                             f"p={self.jpeg_p:g}")
        if self.edge_p:
            augmentation += ("; edge bands mirrored as in images smaller than a tile "
                             f"p={self.edge_p:g}")
        # the manifest's name, not its path: checkpoints are shared (and one is bundled)
        fields = {**dataclasses.asdict(self),
                  "real_manifest": Path(self.real_manifest).name if self.real_manifest else None}
        return {**fields,
                "trained_on": simulated + real
                + (f"; started from {self.init}" if self.init else ""),
                "loss": "Dice + BCE on two one-hot channels, weight 1.2 on a 2 px ring outside "
                        "objects",
                "augmentation": augmentation,
                "sampling": f"tissue weights {weights}; optimal magnification "
                            f"p={self.p_optimal:g} else a neighbouring one; patch containing "
                            f"the tissue p={self.p_present:g}"}


def train_renal(
    out: str | os.PathLike,
    recipe: RenalRecipe | None = None,
    *,
    minutes: float = 90.0,
    bank_path: str | os.PathLike | None = None,
    half: bool = False,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> Any:
    """Train the renal Omni-Seg+ model on simulated slides and write its checkpoint.

    The checkpoint is written every few minutes and at the end, always through a temporary
    file, so a stop leaves a usable model.

    Parameters
    ----------
    out : path
        The checkpoint to write.
    recipe : RenalRecipe, optional
        The data, network and sampling (default: the bundled model's).
    minutes : float
        The training budget after the data is built.
    bank_path : path, optional
        A patch bank to reuse (built and saved there when missing).
    half : bool
        Store the final weights in float16 (the bundled checkpoint).
    progress, should_stop
        The run contract (:mod:`napari_omniseg.run`).

    Returns
    -------
    TrainResult
        Its ``model`` the network, its ``recipe`` the recipe and timings stored in the
        checkpoint's metadata.
    """
    import torch

    from ..checkpoints import load_model, pick_device, save_checkpoint
    from ..nets.omniseg import OmniSegPlus
    from .engine import SegmentationStep, train_and_save
    from .losses import dice_bce_loss

    recipe = recipe or RenalRecipe()
    t0 = time.perf_counter()
    real = _real_rows(recipe.real_manifest) if recipe.real_manifest else []  # fail early
    if bank_path is not None and Path(bank_path).exists():
        bank = PatchBank.load(bank_path)
    else:
        bank = build_patch_bank(recipe.seeds(), size=recipe.slide_size, progress=progress,
                                should_stop=should_stop,
                                biopsy_fraction=recipe.biopsy_fraction,
                                anatomy=recipe.anatomy())
        if bank_path is not None:
            bank.save(bank_path)
    t_data = time.perf_counter() - t0
    torch.manual_seed(recipe.seed)
    device = pick_device()
    if recipe.init:
        model = load_model(recipe.init, device=str(device)).float().train()
    else:
        model = OmniSegPlus(width=recipe.width).to(device)
    meta = {**recipe.metadata(), "patches": int(len(bank)), "real_patches": len(real),
            "device": str(device)}
    batches = mixed_batches(bank, real, recipe, seed=recipe.seed)
    step = SegmentationStep(model, batches, dice_bce_loss, lr=recipe.lr)

    def save(meta: dict, final: bool) -> None:
        if final:  # what Segment compares slides with (predict/familiarity.py)
            meta = {**meta, **training_familiarity(model, bank, real)}
        save_checkpoint(model, out, half=half and final, **meta)  # float16: the last only

    return train_and_save(step, save, meta, started=t0, data_seconds=t_data, model=model,
                          minutes=minutes, progress=progress, should_stop=should_stop)


def training_familiarity(model: Any, bank: PatchBank, real: list, patches: int = 512,
                         seed: int = 0) -> dict:
    """The checkpoint's familiarity record, fitted on ``patches`` training patches: simulated
    ones of the bank and, when the recipe learns from real rows, up to half crops of them."""
    from ..predict.familiarity import familiarity_metadata, random_crops

    rng = np.random.default_rng(seed)
    n_real = min(patches // 2, 4 * len(real))
    pick = np.sort(rng.permutation(len(bank))[:patches - n_real])
    images, groups = [bank.images[pick]], [np.asarray(bank.slides)[pick].astype(np.int64)]
    if n_real:
        per = -(-n_real // len(real))
        images.append(random_crops([a.image for a in real], bank.images.shape[1], per,
                                   seed)[:n_real])
        groups.append(-1 - np.arange(n_real) // per)  # one group per real image
    # slides are JPEG-compressed by their scanners: half the patches are, as in training
    import torch

    from .augment import jpeg

    x = torch.from_numpy(np.concatenate(images)).permute(0, 3, 1, 2).float().div_(255)
    x = jpeg(x, torch.Generator().manual_seed(seed), p=0.5)
    pixels = (x.permute(0, 2, 3, 1) * 255 + 0.5).to(torch.uint8).numpy()
    return familiarity_metadata(model, pixels, np.concatenate(groups), seed=seed,
                                max_patches=patches)


def _real_rows(manifest: str) -> list:
    """The ``train`` rows of an annotated manifest (never its other splits)."""
    from ..errors import OmnisegInputError
    from .annotations import read_manifest

    rows = read_manifest(manifest).get("train", [])
    if not rows:
        raise OmnisegInputError(f"{manifest} has no 'train' rows to learn from")
    return rows


def mixed_batches(bank: PatchBank, real: list, recipe: RenalRecipe, seed: int = 0):
    """``next_batch()`` of simulated patches and, when ``real`` annotations are given, a
    ``recipe.real_fraction`` of real ones (their unannotated pixels unknown), then the
    recipe's stain-vector, JPEG and edge-reflection augmentation on all of them."""
    import torch

    from .augment import edge_reflection, jpeg, stain_vectors
    from .finetune_renal import make_finetune_batches

    n_real = int(round(recipe.batch * recipe.real_fraction)) if real else 0
    n_real = min(max(n_real, 1 if real else 0), recipe.batch - 1)
    simulated = make_batches(bank, recipe.batch - n_real, seed=seed,
                             p_optimal=recipe.p_optimal, p_present=recipe.p_present)
    annotated = (make_finetune_batches(real, batch=n_real, crop=bank.images.shape[1],
                                      seed=seed, disjoint_p=recipe.disjoint_p)
                 if n_real else None)
    gen = torch.Generator().manual_seed(seed + 1)

    def next_batch():
        b = simulated()
        b["valid"] = torch.ones_like(b["targets"])
        if annotated is not None:
            r = annotated()
            b = {"images": torch.cat([b["images"], r["images"]]),
                 "targets": torch.cat([b["targets"], r["targets"]]),
                 "valid": torch.cat([b["valid"], r["valid"]]),
                 "conditions": tuple(torch.cat([a, c]) for a, c in
                                     zip(b["conditions"], r["conditions"]))}
        if recipe.stain_p:
            b["images"] = stain_vectors(b["images"], gen, p=recipe.stain_p)
        if recipe.jpeg_p:
            b["images"] = jpeg(b["images"], gen, p=recipe.jpeg_p)
        if recipe.edge_p:
            b["images"], (b["targets"], b["valid"]) = edge_reflection(
                b["images"], [b["targets"], b["valid"]], gen, p=recipe.edge_p)
        return b

    return next_batch


def evaluation_seeds(n: int, size: int = 4096, start: int = 1) -> list[int]:
    """The first ``n`` held-out seeds whose slide holds a whole artery and a whole glomerulus.

    Chosen from the layout alone (nothing is rendered), so that every tissue has ground truth;
    the seeds lie below the training range.
    """
    from ..simulate.renal_layout import RenalLayout

    side_um = size * 0.25
    seeds: list[int] = []
    seed = start
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
                       bf16: bool = False, anatomy: RenalAnatomy | None = None) -> dict:
    """Dice of each tissue at its optimal magnification on simulated held-out slides
    (``anatomy``: shapes beyond the simulator's default ones, :func:`simulate_renal`).

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
            s = simulate_renal(size, size, stain=stain, seed=seed, anatomy=anatomy)
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
                              quality: int = 90, anatomy: RenalAnatomy | None = None,
                              bf16: bool | None = None) -> dict:
    """Dice as users get it: simulated slides written as JPEG OME-TIFF pyramids, then
    :func:`~napari_omniseg.open_slide` and :func:`~napari_omniseg.predict.slide.segment_slide`
    (tile engine, glass mask, the default precision unless ``bf16`` says), each tissue at its
    optimal magnification; ``anatomy`` as :func:`evaluate_simulated`'s.

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
                    masks_path=Path(tmp) / f"{stain}{seed}_masks.ome.tif", quality=quality,
                    anatomy=anatomy)
                assert masks is not None  # asked for above
                slide = open_slide(image)
                pred = segment_slide(slide, ("all",), None, model, bf16=bf16)
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
