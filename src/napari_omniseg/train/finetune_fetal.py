"""Fine-tune the fetal CoNeMOS model on regions painted (partly) in 3D volumes.

The same partial-label rule as the renal fine-tuning: each annotation is one volume and one
region; painted voxels are that region, unpainted voxels are unknown unless the whole volume is
marked as fully annotated for the region. The loss is the soft Dice of the bundled training, on
known voxels only. Training runs on a copy and keeps the weights with the best validation Dice.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import vocab
from ..errors import OmnisegInputError
from .annotations import (
    box_around,
    draw_evenly,
    painted_and_known,
    sampling_pools,
    targets_and_valid,
)
from .engine import TrainResult, finetune_copy, with_default_budget
from .finetune_renal import run_metadata

#: Context kept around the known voxels when an annotation is cut out of a volume.
MARGIN = 24


@dataclass
class VolumeAnnotation:
    """One volume annotated for one region.

    Attributes
    ----------
    volume : numpy.ndarray
        ``(Z, Y, X)`` float32, intensities already rescaled to [0, 1] over the whole volume
        (as :func:`~napari_omniseg.predict.volume.normalize_intensity` does at inference).
    mask, known : numpy.ndarray
        ``(Z, Y, X)`` bool: the region is here; the label of this voxel is known.
    region : str
        Region code.
    name : str
        For summaries.
    """

    volume: np.ndarray
    mask: np.ndarray
    known: np.ndarray
    region: str
    name: str = ""

    def __post_init__(self) -> None:
        if self.volume.ndim != 3:
            raise OmnisegInputError(f"{self.name or 'the volume'} must be 3D, got shape "
                                    f"{self.volume.shape}")
        if self.mask.shape != self.volume.shape or self.known.shape != self.mask.shape:
            raise OmnisegInputError(
                f"the labels of {self.name or 'the volume'} {self.mask.shape} do not match the "
                f"volume {self.volume.shape}")
        self.region = vocab.fetal_region(self.region).code


def volume_annotation_from_layers(volume: np.ndarray, labels: np.ndarray, region: str,
                                  annotated: bool = False, name: str = "") -> VolumeAnnotation:
    """An annotation from a ``(Z, Y, X)`` volume (any intensity range: rescaled here by the
    0.5 / 99.5 percentiles) and a labels array of the same shape (every non-zero voxel is the
    ``region``), cut to the known voxels plus :data:`MARGIN`; the inputs are not modified.
    ``annotated=True``: the whole volume is annotated for the region (unpainted = background).
    """
    from ..predict.volume import normalize_intensity

    volume, labels = np.asarray(volume), np.asarray(labels)
    if volume.ndim != 3:
        raise OmnisegInputError(f"{name or 'the image'} is not a 3D volume (shape "
                                f"{volume.shape})")
    if labels.shape != volume.shape:
        raise OmnisegInputError(f"labels {labels.shape} and volume {volume.shape} differ in "
                                "shape; pick a labels layer drawn on this volume")
    mask, known = painted_and_known(labels, bool(annotated), name)
    sl = box_around(known, MARGIN)
    # percentiles over the whole volume, so the crop looks as it does at inference
    norm = normalize_intensity(volume.astype(np.float32))
    return VolumeAnnotation(np.ascontiguousarray(norm[sl]), mask[sl].copy(), known[sl].copy(),
                            region, name=name)


#: Values of a manifest's ``annotated`` column meaning "painted voxels only".
_PARTIAL = {"0", "false", "no", "partial"}
_COMPLETE = {"", "1", "true", "yes", "complete"}


def read_volume_manifest(path: str | os.PathLike, split_column: str | None = "split"
                         ) -> dict[str, list[VolumeAnnotation]]:
    """Annotated volumes listed in a CSV (columns image, mask, region; optional annotated).

    ``image`` and ``mask`` are volume files (NIfTI or TIFF stacks, paths relative to the CSV);
    every non-zero voxel of the mask is the region. A mask annotates its whole volume for its
    region (unpainted = background) unless the row's ``annotated`` column says ``no``, in which
    case only painted voxels are known. Returns the rows grouped by ``split_column`` (all under
    ``"train"`` when the column is absent or None).
    """
    from ..io.manifest import read_grouped
    from ..io.volumes import open_volume

    def annotation(row: dict[str, str], where: str) -> VolumeAnnotation:
        try:
            volume = np.asarray(open_volume(Path(path).parent / row["image"]).data)
            labels = np.asarray(open_volume(Path(path).parent / row["mask"]).data)
            vocab.fetal_region(row["region"])
        except (OmnisegInputError, ValueError) as e:
            raise OmnisegInputError(f"{where}: {e}") from None
        annotated = row.get("annotated", "").strip().lower()
        if annotated not in _PARTIAL | _COMPLETE:
            raise OmnisegInputError(f"{where}: annotated {row['annotated']!r} should be yes "
                                    "(the whole volume) or no (painted only)")
        return volume_annotation_from_layers(volume, labels, row["region"],
                                             annotated=annotated not in _PARTIAL,
                                             name=row["image"])

    return read_grouped(path, {"image", "mask", "region"}, split_column, annotation)


def _crop_size(shape: tuple[int, ...], crop: int) -> int:
    # the U-Net needs multiples of 16; small volumes are padded up to one crop
    return max(16, min(crop, -(-max(shape) // 16) * 16))


def make_volume_batches(annotations: list[VolumeAnnotation], batch: int = 2, crop: int = 64,
                        seed: int = 0, augment: bool = True,
                        foreground_fraction: float = 0.67):
    """``next_batch()`` for :func:`~napari_omniseg.train.engine.run_training`.

    Regions are drawn evenly, then an annotation of that region, then a crop centred on one of
    its known voxels (on a voxel of the region for ``foreground_fraction`` of crops). ``valid``
    marks known voxels; padding and voxels moved in from outside by augmentation are unknown.
    """
    import torch

    from .augment3d import intensity3d, spatial3d

    rng, gen, pools = sampling_pools(annotations, "region", seed)
    size = _crop_size(max((a.volume.shape for a in annotations), key=max), crop)

    def cut(a: VolumeAnnotation):
        fg = a.mask & a.known
        pick = fg if fg.any() and rng.random() < foreground_fraction else a.known
        zyx = np.argwhere(pick)
        c = zyx[int(rng.integers(len(zyx)))]
        sl = tuple(slice(int(np.clip(c[k] - size // 2, 0, max(0, a.mask.shape[k] - size))),
                         None) for k in range(3))
        sl = tuple(slice(s.start, s.start + size) for s in sl)
        vol, code = a.volume[sl], fg[sl].astype(np.uint8) + 2 * a.known[sl]
        pad = [(0, size - n) for n in vol.shape]
        return np.pad(vol, pad), np.pad(code, pad)

    def next_batch():
        vols, codes, ids = [], [], []
        for _ in range(batch):
            a = draw_evenly(rng, pools)
            v, c = cut(a)
            vols.append(v)
            codes.append(c)
            ids.append(vocab.fetal_region(a.region).region_id)
        v = torch.from_numpy(np.stack(vols))[:, None].float()
        c = torch.from_numpy(np.stack(codes))[:, None].float()
        if augment:
            v, c = spatial3d(v, c, gen)  # mask and known move together: code = mask + 2 known
            v = intensity3d(v, gen)
        return {"images": v, **targets_and_valid(c), "conditions": (torch.tensor(ids),)}

    return next_batch


def evaluate_volume_annotations(model, annotations: list[VolumeAnnotation],
                                bf16: bool | None = None) -> dict:
    """Per-region Dice on the known voxels of annotated volumes (mean over volumes).

    Returns
    -------
    dict
        ``{"regions": {code: {"dice", "volumes"}}, "mean_dice": float}``.
    """
    from ..checkpoints import model_and_precision
    from ..predict.volume import predict_regions
    from .metrics import dice

    model, bf16 = model_and_precision(model, "fetal", bf16)
    scores: dict[str, list[float]] = {}
    for a in annotations:
        rid = vocab.fetal_region(a.region).region_id
        prob = predict_regions(model, a.volume, [rid], bf16=bf16, normalize=False)[0]
        scores.setdefault(a.region, []).append(dice((prob > 0.5) & a.known, a.mask & a.known))
    table = {c: {"dice": round(float(np.mean(scores[c])), 4), "volumes": len(scores[c])}
             for c in vocab.FETAL_REGION_CODES if c in scores}
    mean = float(np.mean([v["dice"] for v in table.values()])) if table else float("nan")
    return {"regions": table, "mean_dice": round(mean, 4)}


def finetune_fetal(model, train: list[VolumeAnnotation],
                   val: list[VolumeAnnotation] | None = None, *, lr: float = 2e-4,
                   batch: int = 2, crop: int = 64, seed: int = 0, semi_supervised: bool = False,
                   **engine: Any) -> TrainResult:
    """Fine-tune a copy of a region-conditioned CoNeMOS model (left unchanged) on partially
    annotated volumes.

    ``val`` volumes are scored as the engine validates, and the best weights are kept.
    ``engine`` are :func:`~napari_omniseg.train.engine.run_training`'s keywords (budget,
    default 10 minutes, counting validation; ``validate_every``, ``progress``,
    ``should_stop``, ``on_validate``). Semi-supervision exists for kidney patches only.
    """
    from .losses import soft_dice_loss

    if semi_supervised:
        raise OmnisegInputError("semi-supervision applies to kidney patches, not to volumes")
    if not getattr(model, "conditioned", False):
        raise OmnisegInputError("fine-tuning on fetal volumes needs a region-conditioned "
                                "(CoNeMOS) model; this one is not")
    start = time.perf_counter()
    batches = make_volume_batches(train, batch=batch, crop=crop, seed=seed)
    return finetune_copy(
        model, batches, soft_dice_loss,
        (lambda m: evaluate_volume_annotations(m, val)["mean_dice"]) if val else None,
        started=start, lr=lr, **with_default_budget(engine))


def save_finetuned_fetal(result: TrainResult, path, base: str,
                         train: list[VolumeAnnotation],
                         val: list[VolumeAnnotation] | None = None, **_: Any):
    """Write the fine-tuned fetal model with what it was trained on and what it started from
    (keywords of the renal saver, such as ``semi_supervised``, do not apply)."""
    from ..checkpoints import save_checkpoint

    regions = sorted({a.region for a in train})
    return save_checkpoint(
        result.model, path,
        trained_on=f"fine-tuned on {len(train)} annotated volume(s)", regions_trained=regions,
        data={r: sum(a.region == r for a in train) for r in regions},
        validation_volumes=len(val or []), **run_metadata(result, base))
