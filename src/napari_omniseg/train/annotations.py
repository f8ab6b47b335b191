"""Partial annotations: where one tissue is, and where that is known at all.

The rule of Omni-Seg and CoNeMOS: a sample teaches the network only about the tissue it is
annotated for, and only where the annotation is known. Painted pixels are known to be the tissue;
unpainted pixels are *unknown*, except inside regions the annotator marks as fully annotated,
where unpainted means background.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import vocab
from ..errors import OmnisegInputError

#: Context kept around the known pixels when an annotation is cut out of a large layer.
MARGIN = 64


@dataclass
class Annotation:
    """One image patch annotated for one tissue.

    Attributes
    ----------
    image, mask, known : numpy.ndarray
        ``(H, W, 3)`` uint8 RGB; ``(H, W)`` bool, the tissue is here; ``(H, W)`` bool, the
        label is known (painted, or inside a fully annotated region): only known pixels count.
    tissue, magnification
        Tissue code; objective power of the image.
    name, stain : str
        For summaries.
    """

    image: np.ndarray
    mask: np.ndarray
    known: np.ndarray
    tissue: str
    magnification: float
    name: str = ""
    stain: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3:
            raise OmnisegInputError(f"{self.name or 'the image'} must be RGB (H, W, 3), got "
                                    f"shape {self.image.shape}")
        if self.mask.shape != self.image.shape[:2] or self.known.shape != self.mask.shape:
            raise OmnisegInputError(
                f"the labels of {self.name or 'the image'} ({self.mask.shape}) do not match "
                f"the image ({self.image.shape[:2]})")
        self.tissue = vocab.tissue(self.tissue).code
        vocab.scale_id(self.magnification)


def annotation_from_layers(
    image: np.ndarray,
    labels: np.ndarray,
    tissue: str,
    magnification: float,
    annotated: bool | np.ndarray = False,
    name: str = "",
) -> Annotation:
    """An annotation from an RGB ``(H, W, 3)`` image and a labels array of the same size
    (every non-zero label is the ``tissue``), cut to the known pixels plus :data:`MARGIN` of
    context; the inputs are not modified.

    ``magnification`` is the image's objective power (the nearest of 5, 10, 20, 40 is used);
    ``annotated`` is as in :func:`painted_and_known`; ``name`` is shown in summaries.
    """
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.shape[:2] != labels.shape[:2]:
        raise OmnisegInputError(f"labels {labels.shape} and image {image.shape[:2]} differ in "
                                "size; pick a labels layer drawn on this image")
    mask, known = painted_and_known(labels, annotated, name)
    sl = box_around(known, MARGIN)
    return Annotation(np.array(image[sl][..., :3]), mask[sl].copy(), known[sl].copy(), tissue,
                      nearest_magnification(magnification), name=name)


def painted_and_known(labels: np.ndarray, annotated: bool | np.ndarray, name: str = ""
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Where the structure is painted (any non-zero label) and where the label is known:
    painted pixels, plus everything (``annotated=True``) or a fully annotated region (a
    boolean array). Any dimension.

    Raises
    ------
    OmnisegInputError
        When nothing is known: nothing to learn from.
    """
    mask = labels != 0
    if isinstance(annotated, np.ndarray):
        known = mask | annotated.astype(bool)
    else:
        known = np.ones_like(mask) if annotated else mask.copy()
    if not known.any():
        raise OmnisegInputError(f"{name or 'this labels layer'} has nothing painted and no fully "
                                "annotated region: nothing to learn from")
    return mask, known


def box_around(known: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The bounding box of the known pixels (or voxels) grown by ``margin``, inside the array."""
    box = []
    for axis, n in enumerate(known.shape):
        idx = np.flatnonzero(known.any(axis=tuple(a for a in range(known.ndim) if a != axis)))
        box.append(slice(max(0, idx[0] - margin), min(n, idx[-1] + 1 + margin)))
    return tuple(box)


def at_optimal_magnification(a: Annotation, min_side: int = 64) -> Annotation:
    """The annotation seen at its tissue's optimal magnification, when the image is finer.

    Omni-Seg+ learns each tissue at its optimal magnification, and Segment's "auto" runs it
    there; a PT annotation painted at 40x is therefore shrunk to 10x. Known pixels shrink
    conservatively (a coarse pixel is known only if all it covers is known); the tissue is
    where more than half of the covered known pixels are painted. Annotations already at or
    below the optimal magnification, or that would become smaller than ``min_side`` pixels,
    are returned unchanged.
    """
    from skimage.transform import resize

    target = vocab.tissue(a.tissue).optimal_magnification
    if a.magnification <= target:
        return a
    h, w = (int(round(n * target / a.magnification)) for n in a.mask.shape)
    if min(h, w) < min_side:
        return a

    def shrink(x: np.ndarray) -> np.ndarray:
        return resize(x.astype(np.float32), (h, w), order=1, anti_aliasing=True,
                      preserve_range=True)

    known_frac = shrink(a.known)
    painted = shrink(a.mask & a.known)
    known = known_frac > 0.99
    mask = known & (painted > 0.5 * np.maximum(known_frac, 1e-6))
    image = (resize(a.image, (h, w), order=1, anti_aliasing=True, preserve_range=True)
             + 0.5).astype(np.uint8)
    return Annotation(image, mask, known, a.tissue, target, name=a.name, stain=a.stain,
                      extra=dict(a.extra, painted_at=a.magnification))


def pad_to(x: np.ndarray, size: int, mode: str) -> np.ndarray:
    """``x`` padded at its bottom and right to at least ``size`` x ``size`` (other axes as they
    are) with numpy's ``mode``; "reflect" falls back to "edge" when the pad exceeds the side
    (a reflection needs pixels to mirror)."""
    ph, pw = max(0, size - x.shape[0]), max(0, size - x.shape[1])
    if not (ph or pw):
        return x
    pad = ((0, ph), (0, pw)) + ((0, 0),) * (x.ndim - 2)
    reflect = mode == "reflect" and min(x.shape[:2]) > max(ph, pw)
    return np.pad(x, pad, mode="reflect" if reflect else mode)  # type: ignore[call-overload]


def tissues_without_background(annotations: list[Annotation]) -> list[str]:
    """Tissues whose annotations know no background pixel anywhere: painted positives only.

    Trained so, a tissue learns that everything is that tissue (PT strokes once spread PT over
    67% of a tile, glass and glomerulus included), so callers warn before training.
    """
    has_background: dict[str, bool] = {}
    for a in annotations:
        code = annotation_target(a)
        has_background[code] = has_background.get(code, False) or bool((a.known & ~a.mask).any())
    return [code for code, known in has_background.items() if not known]


def annotation_target(a: Any) -> str:
    """What an annotation shows: a renal tissue code, or a fetal region code."""
    return getattr(a, "tissue", None) or a.region


def no_background_sentence(codes: list[str]) -> str:
    """What to tell the person about :func:`tissues_without_background`'s tissues (or fetal
    regions, painted in 3D: there, only the whole layer can say where background is)."""
    renal = all(c in vocab.TISSUE_CODES for c in codes)
    names = ", ".join(vocab.tissue(c).label if c in vocab.TISSUE_CODES
                      else vocab.fetal_region(c).name for c in codes)
    how = ("draw a rectangle on a Shapes layer around a field you painted completely and "
           "choose 'inside shapes of' it in the row, or choose 'whole layer' when everything "
           "unpainted is background" if renal else
           "choose 'whole layer' when everything unpainted is background")
    return (f"{names} has only painted pixels and no known background, so the model would "
            f"learn that everything is this tissue; {how}")


def nearest_magnification(magnification: float) -> int:
    """The known objective power nearest (in log scale) to ``magnification``."""
    m = float(magnification)
    if not m > 0:
        raise OmnisegInputError(f"magnification must be positive, got {magnification}")
    return min(vocab.MAGNIFICATIONS, key=lambda k: abs(np.log(k / m)))


def read_manifest(path: str | os.PathLike, split_column: str | None = "split"
                  ) -> dict[str, list[Annotation]]:
    """Annotations listed in a CSV (columns image, mask, tissue, stain, magnification).

    Each mask annotates its whole image for its tissue (unpainted = background). Paths are
    relative to the CSV. Returns the rows grouped by ``split_column`` (all under ``"train"``
    when the column is absent or None).
    """
    from ..io.manifest import number, read_grouped

    def annotation(row: dict[str, str], where: str) -> Annotation:
        try:
            vocab.tissue(row["tissue"])
        except OmnisegInputError as e:
            raise OmnisegInputError(f"{where}: {e}") from None
        magnification = number(row["magnification"], "magnification", where)
        if not 1 <= magnification <= 100:
            raise OmnisegInputError(f"{where}: magnification {row['magnification']} is not a "
                                    "microscope objective's (1x to 100x)")
        image = imread_rgb(Path(path).parent / row["image"], where, rgb=False)
        mask = imread_rgb(Path(path).parent / row["mask"], where, rgb=False)
        if image.ndim == 2:
            raise OmnisegInputError(f"{where}: {row['image']} is a grayscale image; the "
                                    "kidney models learn from RGB brightfield patches")
        ann = annotation_from_layers(image[..., :3], mask[..., 0] if mask.ndim == 3 else mask,
                                     row["tissue"], magnification, annotated=True,
                                     name=row["image"])
        ann.stain = row.get("stain", "")
        return ann

    return read_grouped(path, {"image", "mask", "tissue", "magnification"}, split_column,
                        annotation)


def imread_rgb(path: str | os.PathLike, where: str, rgb: bool = True) -> np.ndarray:
    """An image file as an array: RGB (alpha and palettes dropped), or with ``rgb=False``
    single-channel images kept as they are; one sentence naming ``where`` if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            keep = ("RGB",) if rgb else ("L", "1", "I", "RGB")
            return np.asarray(im if im.mode in keep else im.convert("RGB"))
    except (OSError, ValueError, UnidentifiedImageError) as e:
        raise OmnisegInputError(f"{where}: cannot read {e}") from None


def summarize(annotations: list[Annotation]) -> dict:
    """Counts per tissue and known pixels, for checkpoint metadata."""
    per: dict[str, dict] = {}
    for a in annotations:
        d = per.setdefault(a.tissue, {"patches": 0, "known_pixels": 0, "tissue_pixels": 0})
        d["patches"] += 1
        d["known_pixels"] += int(a.known.sum())
        d["tissue_pixels"] += int((a.mask & a.known).sum())
    return per


def sampling_pools(annotations: list, condition: str, seed: int) -> tuple:
    """What a batch builder draws with: a numpy generator, a torch generator (both seeded) and
    the annotations grouped by their ``condition`` attribute (tissue or region), so that
    conditions are drawn evenly however many annotations each has.

    Raises
    ------
    ValueError
        When there is no annotation.
    """
    import torch

    if not annotations:
        raise ValueError("no annotations to train on")
    pools: dict[str, list] = {}
    for a in annotations:
        pools.setdefault(getattr(a, condition), []).append(a)
    return np.random.default_rng(seed), torch.Generator().manual_seed(seed), pools


def draw_evenly(rng: np.random.Generator, pools: dict) -> Any:
    """One annotation: a condition drawn evenly (in sorted order), then one of its annotations."""
    keys = sorted(pools)
    pool = pools[keys[int(rng.integers(len(keys)))]]
    return pool[int(rng.integers(len(pool)))]


def targets_and_valid(code: Any) -> dict:
    """``targets`` and ``valid`` of a batch from its ``code = mask + 2 * known`` tensor (the
    two travel as one through spatial augmentation, which interpolates: hence the rounding)."""
    c = code.round().long()
    return {"targets": (c % 2).float(), "valid": (c >= 2).float()}
