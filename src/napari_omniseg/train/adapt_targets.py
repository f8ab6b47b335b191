"""The unlabelled images adaptation learns from: read from a slide, a folder, a CSV or napari
layers, checked, and sampled as tissue crops at the magnifications the model works at."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import vocab
from ..errors import OmnisegInputError
from .annotations import nearest_magnification

#: Image files a target folder may hold; files named ``*_mask.*`` are masks and are skipped.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Magnifications a whole slide is sampled at: every tissue's optimal one.
SLIDE_MAGNIFICATIONS = tuple(sorted({t.optimal_magnification for t in vocab.TISSUES}))
#: A crop counts as tissue when at least this share of its pixels is not glass.
MIN_TISSUE_SHARE = 0.5
#: Volume files are fetal MRI, which adaptation does not cover.
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".mha", ".nrrd")


@dataclass
class TargetImages:
    """Unlabelled RGB images of the user's slides, each at a known magnification.

    Attributes
    ----------
    images : list of numpy.ndarray
        ``(H, W, 3)`` uint8, each at least one training crop a side.
    magnifications : list of int
        The objective power of each (one of the model's four).
    names : list of str
        Where each came from, for messages and the checkpoint.
    description : str
        What the whole set is, in words.
    """

    images: list[np.ndarray] = field(default_factory=list)
    magnifications: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    description: str = ""

    def __len__(self) -> int:
        return len(self.images)

    def summary(self) -> dict:
        """Counts per magnification, for checkpoint metadata."""
        mags = [int(m) for m in self.magnifications]
        return {"description": self.description, "images": len(self),
                "per_magnification": {str(m): mags.count(m) for m in sorted(set(mags))}}


def check_target_image(image: np.ndarray, name: str, crop: int) -> np.ndarray:
    """``image`` as ``(H, W, 3)`` uint8, or one sentence saying why it cannot be a target.

    Raises
    ------
    OmnisegInputError
        A grayscale image or a volume, or an image smaller than one training crop.
    """
    a = np.asarray(image)
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 1):
        raise OmnisegInputError(f"{name} is grayscale; adaptation learns from RGB brightfield "
                                "images of kidney slides")
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise OmnisegInputError(f"{name} has shape {a.shape}, a volume or stack, not an RGB "
                                "image; adaptation covers kidney slides, not fetal MRI")
    if min(a.shape[:2]) < crop:
        raise OmnisegInputError(f"{name} is {a.shape[0]} x {a.shape[1]} pixels, smaller than "
                                f"one training patch ({crop} x {crop})")
    if a.dtype != np.uint8:
        hi = float(a.max()) if a.size else 0.0
        a = np.clip(a / (hi / 255 if hi > 255 else 1), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a[..., :3])


def targets_from_arrays(images: Sequence[np.ndarray], magnifications: Sequence[float],
                        names: Sequence[str], crop: int, description: str = "") -> TargetImages:
    """Checked targets from arrays (napari layers, files already read).

    Raises
    ------
    OmnisegInputError
        No images, or one that :func:`check_target_image` refuses, or one without tissue.
    """
    from ..predict.tissue_mask import tissue_pixels

    if not images:
        raise OmnisegInputError("no target images: give at least one unlabelled RGB image")
    out = TargetImages(description=description or f"{len(images)} images")
    for image, mag, name in zip(images, magnifications, names):
        a = check_target_image(image, name, crop)
        if tissue_pixels(a).mean() < 0.05:
            raise OmnisegInputError(f"{name} shows no tissue (it is nearly all glass)")
        out.images.append(a)
        out.magnifications.append(nearest_magnification(mag))
        out.names.append(name)
    _warn_if_single(out)
    return out


def _warn_if_single(targets: TargetImages) -> None:
    if len(targets) == 1:
        warnings.warn(f"only one target image ({targets.names[0]}): adaptation may learn its "
                      "quirks rather than its stain; add more images of the same slides if "
                      "you can", stacklevel=3)


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("L", "1", "I", "I;16", "F"):
                return np.asarray(im)
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, UnidentifiedImageError) as e:
        raise OmnisegInputError(f"cannot read {path.name}: {e}") from None


def targets_from_path(path: str | os.PathLike, *, crop: int = 256,
                      magnification: float | None = None, mpp: float | None = None,
                      per_magnification: int = 24, seed: int = 0) -> TargetImages:
    """Targets from a slide, a folder of images, or a CSV with an ``image`` column.

    Parameters
    ----------
    path : str or path-like
        A slide file (sampled as ``per_magnification`` tissue crops at each tissue's optimal
        magnification), a folder of images (``*_mask.*`` files skipped) or a CSV (columns
        ``image`` and optionally ``magnification`` or ``mpp``; a ``mask`` column is ignored;
        paths relative to the CSV).
    crop : int
        The training crop side: smaller images are refused.
    magnification, mpp : float, optional
        The images' objective power or pixel size when the files do not say (a folder's
        images, a CSV without those columns, a slide without a pixel size).
    per_magnification : int
        Crops read from a slide at each magnification.
    seed : int
        Where on a slide the crops are taken.

    Returns
    -------
    TargetImages
        Checked images at known magnifications.

    Raises
    ------
    OmnisegInputError
        One sentence: a missing path, a volume, grayscale images, images smaller than one
        crop, a slide without tissue, or no way to know the magnification.
    """
    p = Path(path)
    if not p.exists():
        raise OmnisegInputError(f"{p} does not exist; check the path")
    if p.name.lower().endswith(VOLUME_SUFFIXES):
        raise OmnisegInputError(f"{p.name} is a volume; adaptation covers kidney slides, not "
                                "fetal MRI")
    if mpp is not None and magnification is None:
        magnification = vocab.magnification_of_mpp(mpp)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES
                       and not f.stem.endswith("_mask"))
        if not files:
            raise OmnisegInputError(f"{p} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        if magnification is None:
            raise OmnisegInputError(f"the images in {p.name} carry no magnification; give it "
                                    "(--magnification, e.g. 10) or their µm/px (--mpp)")
        return targets_from_arrays([_read_rgb(f) for f in files], [magnification] * len(files),
                                   [f.name for f in files], crop,
                                   f"{len(files)} images of folder {p.name}")
    if p.suffix.lower() == ".csv":
        return _targets_from_csv(p, crop, magnification)
    return targets_from_slide(p, crop=crop, magnification=magnification, mpp=mpp,
                              per_magnification=per_magnification, seed=seed)


def _targets_from_csv(path: Path, crop: int, magnification: float | None) -> TargetImages:
    from ..io.manifest import number, read_rows

    rows = read_rows(path, {"image"})
    images, mags, names = [], [], []
    for line, row in rows:
        where = f"{path.name} line {line}"
        if row.get("magnification"):
            mag = number(row["magnification"], "magnification", where)
        elif row.get("mpp"):
            mag = vocab.magnification_of_mpp(number(row["mpp"], "mpp", where))
        elif magnification is not None:
            mag = magnification
        else:
            raise OmnisegInputError(f"{where}: no magnification; add a magnification or mpp "
                                    "column, or give --magnification")
        images.append(_read_rgb(path.parent / row["image"]))
        mags.append(mag)
        names.append(row["image"])
    return targets_from_arrays(images, mags, names, crop, f"{len(rows)} images of {path.name}")


def targets_from_slide(path: str | os.PathLike, *, crop: int = 256,
                       magnification: float | None = None, mpp: float | None = None,
                       per_magnification: int = 24, seed: int = 0) -> TargetImages:
    """Tissue crops of one slide at each of :data:`SLIDE_MAGNIFICATIONS` it can be read at.

    Raises
    ------
    OmnisegInputError
        No pixel size, no tissue, or a slide too small for one crop.
    """
    from ..io.slides import open_slide

    slide = open_slide(path, mpp=mpp)
    try:
        if slide.magnification is None and magnification is not None:
            slide.magnification = float(magnification)
        if slide.magnification is None:
            slide.require_mpp()
        return sample_slide(slide, crop=crop, per_magnification=per_magnification, seed=seed,
                            name=Path(path).name)
    finally:
        slide.close()


def sample_slide(slide, *, crop: int, per_magnification: int, seed: int, name: str
                 ) -> TargetImages:
    """Random tissue crops of an open slide (with a magnification) at every optimal
    magnification up to the slide's own power (no upsampling).

    Raises
    ------
    OmnisegInputError
        No tissue, or a slide too small for one crop at any magnification.
    """
    from ..predict.slide import read_working_region
    from ..predict.tissue_mask import tissue_mask, tissue_pixels

    mag0 = float(slide.magnification)
    h0, w0 = slide.shape
    rng = np.random.default_rng([seed, 0xADA])
    mask = tissue_mask(slide)
    out = TargetImages(description=f"slide {name}: {per_magnification} tissue crops per "
                                   "magnification")
    for mag in SLIDE_MAGNIFICATIONS:
        side0 = int(round(crop * mag0 / mag))  # the crop's side in level-0 pixels
        if mag > mag0 * 1.25 or side0 > min(h0, w0):
            continue
        found, tries = 0, 0
        while found < per_magnification and tries < 20 * per_magnification:
            tries += 1
            y0 = int(rng.integers(0, h0 - side0 + 1))
            x0 = int(rng.integers(0, w0 - side0 + 1))
            if mask is not None and mask.crop(y0, x0, side0 / 32, 32).mean() < MIN_TISSUE_SHARE:
                continue
            rgb = read_working_region(slide, mag, (y0, y0 + side0, x0, x0 + side0))
            if min(rgb.shape[:2]) < crop or tissue_pixels(rgb).mean() < MIN_TISSUE_SHARE:
                continue
            out.images.append(rgb[:crop, :crop])
            out.magnifications.append(mag)
            out.names.append(f"{name} {mag}x ({y0}, {x0})")
            found += 1
    if not out.images:
        if all(crop * mag0 / m > min(h0, w0) for m in SLIDE_MAGNIFICATIONS):
            raise OmnisegInputError(f"{name} is {h0} x {w0} pixels, smaller than one training "
                                    f"patch ({crop} x {crop}) at every magnification")
        raise OmnisegInputError(f"{name} shows no tissue (it is nearly all glass)")
    _warn_if_single(out)
    return out


class TargetSampler:
    """Random flipped crops of target images, on tissue, with the tissue to ask for.

    The tissue asked of each crop is one seen at (or next to) the crop's magnification, so the
    shape discriminator judges answers the model is meant to give there.
    """

    def __init__(self, targets: TargetImages, batch: int, crop: int, seed: int = 0) -> None:
        from .renal_data import neighbouring_magnifications

        self.targets, self.batch, self.crop = targets, batch, crop
        self.rng = np.random.default_rng([seed, 0x7A9])
        self.tissues = {m: [t.task_id for t in vocab.TISSUES
                            if m in neighbouring_magnifications(t.optimal_magnification)]
                        for m in vocab.MAGNIFICATIONS}

    def _crop(self, image: np.ndarray) -> np.ndarray:
        from ..predict.tissue_mask import tissue_pixels

        h, w = image.shape[:2]
        best, share = image[:self.crop, :self.crop], -1.0
        for _ in range(8):  # the first crop mostly on tissue, else the best of eight
            y = int(self.rng.integers(0, h - self.crop + 1))
            x = int(self.rng.integers(0, w - self.crop + 1))
            c = image[y:y + self.crop, x:x + self.crop]
            s = float(tissue_pixels(c).mean())
            if s > share:
                best, share = c, s
            if s >= MIN_TISSUE_SHARE:
                break
        k = int(self.rng.integers(4))
        best = np.rot90(best, k)
        return best[:, ::-1] if self.rng.random() < 0.5 else best

    def __call__(self) -> dict:
        """``{"images": (B, 3, crop, crop) in [0, 1], "conditions": (tissue ids, scale ids)}``."""
        import torch

        idx = self.rng.integers(0, len(self.targets), self.batch)
        crops = [self._crop(self.targets.images[i]) for i in idx]
        mags = [self.targets.magnifications[i] for i in idx]
        tids = [int(self.rng.choice(self.tissues[m])) for m in mags]
        x = torch.from_numpy(np.ascontiguousarray(np.stack(crops))).permute(0, 3, 1, 2)
        return {"images": x.float().div_(255),
                "conditions": (torch.tensor(tids), torch.tensor([vocab.scale_id(m)
                                                                  for m in mags]))}
