"""Fine-tune the renal model from block labels (label super-resolution), alone or mixed with
pixel annotations under the partial-label rule, and report how well the model's block
statistics fit the block table.

The model in use is never touched: a copy trains, the best validation weights are kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import vocab
from ..choices import LsrDistance, LsrLoss
from .annotations import Annotation
from .block_labels import BlockAnnotation, BlockTable
from .engine import SegmentationStep, TrainResult, run_training, with_default_budget


@dataclass(frozen=True)
class BlockOptions:
    """How block labels train: the loss, its distance, the sd scale alpha, the group size K,
    the weight of the block loss beside a pixel loss, and the crop side in pixels."""

    loss: LsrLoss = LsrLoss.INTRA_INTER
    distance: LsrDistance = LsrDistance.NLL
    alpha: float = 0.8
    group_size: int = 8
    weight: float = 1.0
    crop: int = 256

    def metadata(self) -> dict:
        """The options as the checkpoint records them."""
        return {"loss": str(self.loss), "distance": str(self.distance), "alpha": self.alpha,
                "group_size": self.group_size, "weight": self.weight, "crop": self.crop}


def make_block_batches(blocks: list[BlockAnnotation], batch: int = 8, crop: int = 256,
                       seed: int = 0, augment: bool = True):
    """``next_batch()`` of block-labelled crops: ``images`` ``(N, 3, S, S)``, ``blocks``
    ``(N, S/b, S/b)`` classes (0 unlabelled), ``tissues`` codes, ``conditions`` and
    ``block_size`` b.

    A batch takes one block size (drawn by how many images have it); each crop is a whole
    number of blocks aligned to the block grid, holds at least one labelled block, and is
    flipped and turned by multiples of 90 degrees (which keep the grid) and colour-jittered.
    """
    import torch

    from .augment import colour

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    by_size: dict[int, list[BlockAnnotation]] = {}
    for a in blocks:
        by_size.setdefault(a.block_size, []).append(a)
    sizes = sorted(by_size)
    weights = np.array([len(by_size[s]) for s in sizes], float)

    def cut(a: BlockAnnotation, n: int) -> tuple[np.ndarray, np.ndarray]:
        b = a.block_size
        hb, wb = a.blocks.shape
        ky, kx = np.nonzero(a.blocks)
        j = int(rng.integers(len(ky)))
        y0 = int(np.clip(ky[j] - int(rng.integers(n)), 0, max(0, hb - n)))
        x0 = int(np.clip(kx[j] - int(rng.integers(n)), 0, max(0, wb - n)))
        z = np.zeros((n, n), np.int64)
        zz = a.blocks[y0:y0 + n, x0:x0 + n]
        z[:zz.shape[0], :zz.shape[1]] = zz
        img = a.image[y0 * b:(y0 + n) * b, x0 * b:(x0 + n) * b]
        if img.shape[:2] != (n * b, n * b):
            img = np.pad(img, ((0, n * b - img.shape[0]), (0, n * b - img.shape[1]), (0, 0)),
                         mode="reflect")
        if augment:
            k = int(rng.integers(4))
            img, z = np.rot90(img, k), np.rot90(z, k)
            if rng.integers(2):
                img, z = img[:, ::-1], z[:, ::-1]
        return np.ascontiguousarray(img), np.ascontiguousarray(z)

    def next_batch() -> dict:
        b = sizes[int(rng.choice(len(sizes), p=weights / weights.sum()))]
        pool = by_size[b]
        n = max(1, crop // b)
        images, grids, tissues, sids = [], [], [], []
        by_tissue: dict[str, list[BlockAnnotation]] = {}
        for a in pool:
            by_tissue.setdefault(a.tissue, []).append(a)
        codes = sorted(by_tissue)
        for _ in range(batch):
            group = by_tissue[codes[int(rng.integers(len(codes)))]]
            a = group[int(rng.integers(len(group)))]
            img, z = cut(a, n)
            images.append(img)
            grids.append(z)
            tissues.append(a.tissue)
            sids.append(vocab.scale_id(a.magnification))
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255)
        if augment:
            x = colour(x, gen)
        tids = torch.tensor([vocab.tissue(t).task_id for t in tissues])
        return {"images": x, "blocks": torch.from_numpy(np.stack(grids)), "tissues": tissues,
                "conditions": (tids, torch.tensor(sids)), "block_size": b}

    return next_batch


def table_tensors(table: BlockTable, tissues: list[str], blocks: Any) -> tuple[Any, Any, Any]:
    """Per labelled block of a batch (``blocks`` ``(N, h, w)``): its key (tissue and class),
    and the table's mean and sd, each 1-D in the order of ``blocks > 0``."""
    import torch

    idx = torch.nonzero(blocks > 0)
    classes = blocks[idx[:, 0], idx[:, 1], idx[:, 2]]
    rows = [table.lookup(tissues[int(i)], int(c)) for i, c in zip(idx[:, 0], classes)]
    eta = torch.tensor([r[0] for r in rows], dtype=torch.float32)
    sd = torch.tensor([r[1] for r in rows], dtype=torch.float32)
    keys = torch.tensor([vocab.tissue(tissues[int(i)]).task_id * 1000 + int(c)
                         for i, c in zip(idx[:, 0], classes)])
    return keys, eta, sd


class BlockStep(SegmentationStep):
    """One AdamW step on block labels (the LSR loss) and, when given, pixel annotations
    (Dice + BCE over known pixels), for :func:`~napari_omniseg.train.engine.run_training`;
    the optimiser, precision and forward pass are :class:`SegmentationStep`'s."""

    def __init__(self, model: Any, block_batches: Any, table: BlockTable,
                 options: BlockOptions, pixel_batches: Any = None, lr: float = 1e-3,
                 bf16: bool | None = None) -> None:
        from .losses import dice_bce_loss

        super().__init__(model, pixel_batches, dice_bce_loss, lr=lr, bf16=bf16)
        self.block_batches, self.table, self.options = block_batches, table, options

    def _logits(self, images: Any, conditions: tuple) -> Any:
        return self._forward(images, [c.to(self.device) for c in conditions])

    def block_loss(self, batch: dict) -> Any:
        """The LSR loss of a block batch."""
        import torch

        from .lsr import block_statistics, lsr_loss

        prob = torch.softmax(self._logits(batch["images"], batch["conditions"]), 1)[:, 1]
        mu, var = block_statistics(prob, batch["block_size"])
        labelled = (batch["blocks"] > 0).to(self.device)
        keys, eta, sd = table_tensors(self.table, batch["tissues"], batch["blocks"])
        o = self.options
        return lsr_loss(mu[labelled], var[labelled], keys.to(self.device),
                        eta.to(self.device), sd.to(self.device), kind=o.loss,
                        form=o.distance, alpha=o.alpha, group_size=o.group_size)

    def __call__(self) -> dict[str, float]:
        """One step; returns the block, pixel and total losses."""
        import torch

        out: dict[str, float] = {}
        loss = self.options.weight * self.block_loss(self.block_batches())
        out["block_loss"] = float(loss.detach())
        if self.next_batch is not None:
            b = self.next_batch()
            pixel = self.loss_fn(self._logits(b["images"], b["conditions"]),
                                 b["targets"].to(self.device), b["valid"].to(self.device))
            out["pixel_loss"] = float(pixel.detach())
            loss = loss + pixel
        opt = self.optimizers[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        opt.step()
        out["loss"] = float(loss.detach())
        return out


def finetune_blocks(model: Any, blocks: list[BlockAnnotation], table: BlockTable,
                    pixels: list[Annotation] | None = None, val: list[Annotation] | None = None,
                    *, options: BlockOptions | None = None, lr: float = 1e-3, batch: int = 8,
                    seed: int = 0, **engine: Any) -> TrainResult:
    """Fine-tune a copy of ``model`` (left unchanged) on block labels.

    Parameters
    ----------
    model : torch.nn.Module
        A renal Omni-Seg+ model.
    blocks : list of BlockAnnotation
        The block-labelled images.
    table : BlockTable
        p(fraction | class) for every class they use.
    pixels : list of Annotation, optional
        Pixel annotations trained beside them (half of each batch).
    val : list of Annotation, optional
        Fully annotated patches scored as training goes; the best weights are kept.
    options : BlockOptions, optional
        Loss, distance, alpha, group size.
    engine
        :func:`~napari_omniseg.train.engine.run_training`'s keywords (default 10 minutes).

    Returns
    -------
    TrainResult
        Its ``model`` the trained copy.
    """
    import copy

    import torch

    from .finetune_renal import evaluate_annotations, make_finetune_batches

    options = options or BlockOptions()
    table.check_covers(blocks)
    start = time.perf_counter()
    torch.manual_seed(seed)
    student = copy.deepcopy(model).float()
    n_pixel = batch // 2 if pixels else 0
    step = BlockStep(student, make_block_batches(blocks, batch - n_pixel, options.crop, seed),
                     table, options, lr=lr,
                     pixel_batches=make_finetune_batches(pixels, batch=n_pixel, seed=seed)
                     if pixels else None)
    engine = with_default_budget(engine)
    engine.setdefault("started", start)
    result = run_training(step, score=(lambda: evaluate_annotations(student, val)["mean_dice"])
                          if val else None, **engine)
    result.model = student
    return result


def fit_report(model: Any, blocks: list[BlockAnnotation], table: BlockTable,
               bf16: bool | None = None) -> list[dict]:
    """Per (tissue, block class): the table's mean and sd of the tissue fraction against the
    mean and sd of the model's predicted fractions over the labelled blocks of that class.

    Returns
    -------
    list of dict
        ``{"tissue", "block_class", "blocks", "target_mean", "target_sd", "predicted_mean",
        "predicted_sd"}``, sorted by tissue and class.
    """
    from ..checkpoints import model_and_precision
    from ..predict.tiling import predict_array
    from .block_labels import block_fractions

    model, bf16 = model_and_precision(model, "renal", bf16)
    found: dict[tuple[str, int], list[float]] = {}
    for a in blocks:
        cond = (vocab.tissue(a.tissue).task_id, vocab.scale_id(a.magnification))
        prob = predict_array(model, a.image, [cond], tile=256, overlap=64, bf16=bf16)[0]
        frac = block_fractions(prob > 0.5, a.block_size)
        for (i, j) in zip(*np.nonzero(a.blocks)):
            found.setdefault((a.tissue, int(a.blocks[i, j])), []).append(float(frac[i, j]))
    out = []
    for (tissue, cls), fr in sorted(found.items()):
        mean, sd = table.lookup(tissue, cls)
        out.append({"tissue": tissue, "block_class": cls, "blocks": len(fr),
                    "target_mean": round(mean, 4), "target_sd": round(sd, 4),
                    "predicted_mean": round(float(np.mean(fr)), 4),
                    "predicted_sd": round(float(np.std(fr)), 4)})
    return out


def save_block_finetuned(result: TrainResult, path: Any, base: str,
                         blocks: list[BlockAnnotation], table: BlockTable,
                         options: BlockOptions, pixels: list[Annotation] | None = None,
                         val: list[Annotation] | None = None) -> Any:
    """Write the model with what it learnt from: block images, classes, the table, options."""
    from ..checkpoints import save_checkpoint
    from .finetune_renal import run_metadata

    clicks = int(sum((a.blocks > 0).sum() for a in blocks))
    words = f"fine-tuned on block labels of {len(blocks)} images ({clicks} labelled blocks)"
    if pixels:
        words += f" and {len(pixels)} pixel-annotated patches"
    return save_checkpoint(
        result.model, path, trained_on=words,
        tissues_trained=sorted({a.tissue for a in blocks} | {a.tissue for a in pixels or []}),
        block_labels={"images": len(blocks), "labelled_blocks": clicks,
                      "block_sizes": sorted({a.block_size for a in blocks}),
                      "options": options.metadata(),
                      "table": [[t, c, m, s] for (t, c), (m, s) in sorted(table.rows.items())]},
        validation_patches=len(val or []), **run_metadata(result, base))
