"""Stain normalisation: map an image's colours to a reference stain before segmenting.

A normaliser is *fitted* once per image or slide (on its tissue pixels) and then *applied*
pixel by pixel, so a slide read tile by tile gets the same colours as one pass over it (no
seams). Two classic methods (see :class:`~napari_omniseg.choices.StainNormalisation`):

- Reinhard: the CIELAB mean and standard deviation of each channel are matched;
- Macenko: the two stain vectors are the extreme angles of the optical densities projected on
  their plane of largest variance; concentrations are rescaled to the reference's 99th
  percentile and recombined with the reference's stain vectors.

A reference is a small dict of numbers, so checkpoints can carry the stain they were trained
on (:func:`reference_of`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..choices import StainNormalisation
from ..errors import OmnisegInputError
from .tissue_mask import tissue_pixels

#: Optical density (summed over channels) below this is glass, not stain (Macenko's beta, on
#: the sum: a faint eosin absorbs little red, and a per-channel floor dropped all of it).
OD_FLOOR = 0.15
#: Percentile of the projected angles taken as the two stain directions (Macenko's alpha).
ANGLE_PERCENTILE = 1.0
#: Fewest tissue pixels a fit accepts.
MIN_PIXELS = 500
#: Pixels a fit samples at most (the statistics settle long before).
MAX_FIT_PIXELS = 200_000


def _tissue_sample(images: list[np.ndarray], seed: int = 0) -> np.ndarray:
    """Up to :data:`MAX_FIT_PIXELS` tissue pixels ``(n, 3)`` uint8 of some RGB images."""
    rng = np.random.default_rng(seed)
    pixels = [im[..., :3][tissue_pixels(im[..., :3])] for im in images]
    sample = np.concatenate(pixels) if pixels else np.zeros((0, 3), np.uint8)
    if len(sample) < MIN_PIXELS:
        raise OmnisegInputError("too little tissue to fit a stain normalisation "
                                f"({len(sample)} pixels; at least {MIN_PIXELS})")
    if len(sample) > MAX_FIT_PIXELS:
        sample = sample[rng.choice(len(sample), MAX_FIT_PIXELS, replace=False)]
    return sample


def _lab(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(rgb.reshape(-1, 1, 3).astype(np.float32) / 255).reshape(-1, 3)


def _optical_density(rgb: np.ndarray) -> np.ndarray:
    return -np.log((rgb.reshape(-1, 3).astype(np.float32) + 1) / 256)


def _stain_vectors(od: np.ndarray) -> np.ndarray:
    """Macenko's two unit stain vectors ``(3, 2)``, the more haematoxylin-like (bluer) first."""
    od = od[od.sum(1) > OD_FLOOR]
    if len(od) < MIN_PIXELS:
        raise OmnisegInputError("too little stained tissue to fit a Macenko normalisation")
    _, vecs = np.linalg.eigh(np.cov(od.T))
    plane = vecs[:, 1:3]  # the two largest eigenvalues
    plane = plane * np.sign(plane.sum(0, keepdims=True) + 1e-12)  # point into positive OD
    proj = od @ plane
    angle = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(angle, [ANGLE_PERCENTILE, 100 - ANGLE_PERCENTILE])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    # haematoxylin absorbs red most (its OD is largest in R relative to B)
    first, second = (v1, v2) if v1[0] / (v1[2] + 1e-6) > v2[0] / (v2[2] + 1e-6) else (v2, v1)
    m = np.stack([first, second], 1)
    m = m / np.linalg.norm(m, axis=0, keepdims=True)
    if float(m[:, 0] @ m[:, 1]) > 0.995:  # one stain only: its amounts would be arbitrary
        raise OmnisegInputError("the image's two stains cannot be told apart for a Macenko "
                                "normalisation; try Reinhard")
    return m


def _concentrations(od: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(vectors, od.T, rcond=None)[0].T  # (n, 2)


@dataclass(frozen=True)
class StainStatistics:
    """The colour statistics of an image, slide or training set.

    Attributes
    ----------
    method : StainNormalisation
        Which statistics these are.
    values : dict
        Reinhard: ``lab_mean``, ``lab_std`` (3 each). Macenko: ``vectors`` (3 x 2 stain
        vectors) and ``max_concentration`` (the 99th percentile of each stain's amount).
    """

    method: StainNormalisation
    values: dict

    def as_dict(self) -> dict:
        """Plain numbers, for checkpoint metadata."""
        return {"method": str(self.method), **self.values}

    @classmethod
    def from_dict(cls, d: dict) -> StainStatistics:
        """The statistics :meth:`as_dict` wrote."""
        return cls(StainNormalisation(d["method"]),
                   {k: v for k, v in d.items() if k != "method"})


def fit_stain(images: list[np.ndarray], method: StainNormalisation | str) -> StainStatistics:
    """The stain statistics of the tissue pixels of some RGB images.

    Parameters
    ----------
    images : list of numpy.ndarray
        ``(H, W, 3)`` uint8 images (a slide's thumbnail, training patches).
    method : StainNormalisation or str
        Reinhard or Macenko.

    Returns
    -------
    StainStatistics
        To normalise from (these images' colours) or to (a reference).

    Raises
    ------
    OmnisegInputError
        Too little tissue in the images to fit.
    """
    method = StainNormalisation(method)
    sample = _tissue_sample(images)
    if method == StainNormalisation.REINHARD:
        lab = _lab(sample).astype(np.float64)
        return StainStatistics(method, {"lab_mean": lab.mean(0).round(4).tolist(),
                                        "lab_std": lab.std(0).round(4).tolist()})
    if method == StainNormalisation.MACENKO:
        od = _optical_density(sample)
        vectors = _stain_vectors(od)
        conc = _concentrations(od, vectors).astype(np.float64)
        return StainStatistics(method, {
            "vectors": vectors.astype(np.float64).round(5).tolist(),
            "max_concentration": np.percentile(conc, 99, axis=0).round(5).tolist()})
    raise OmnisegInputError("stain normalisation 'none' has nothing to fit")


@dataclass(frozen=True)
class StainNormaliser:
    """A fitted map from one image's stain to a reference's, applied pixel by pixel."""

    source: StainStatistics
    reference: StainStatistics

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb`` ``(..., 3)`` uint8 in the reference's colours; glass stays glass."""
        from skimage.color import lab2rgb

        shape = rgb.shape
        flat = rgb[..., :3].reshape(-1, 3)
        s, r = self.source.values, self.reference.values
        if self.source.method == StainNormalisation.REINHARD:
            lab = _lab(flat)
            lab = ((lab - np.array(s["lab_mean"])) / np.maximum(np.array(s["lab_std"]), 1e-3)
                   * np.array(r["lab_std"]) + np.array(r["lab_mean"]))
            with warnings.catch_warnings():  # out-of-gamut colours are clipped, as wanted
                warnings.simplefilter("ignore", UserWarning)
                out = lab2rgb(lab.reshape(-1, 1, 3)).reshape(-1, 3) * 255
        else:
            conc = _concentrations(_optical_density(flat), np.array(s["vectors"]))
            conc *= np.array(r["max_concentration"]) / np.maximum(
                np.array(s["max_concentration"]), 1e-6)
            out = 256 * np.exp(-conc @ np.array(r["vectors"]).T) - 1
        out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
        # glass carries no stain to map; keeping it exactly keeps the tissue mask unchanged
        glass = ~tissue_pixels(flat)
        out[glass] = flat[glass]
        return out.reshape((*shape[:-1], 3))


def normaliser_for(images: list[np.ndarray], reference: StainStatistics) -> StainNormaliser:
    """Fit ``images``' stain (the method of ``reference``) and map it to ``reference``."""
    return StainNormaliser(fit_stain(images, reference.method), reference)


def reference_of(model: Any, method: StainNormalisation | str) -> StainStatistics:
    """The stain a model was trained on, as its checkpoint records it.

    Checkpoints written by fine-tuning and adaptation carry the statistics of their training
    images (``stain_reference``); the bundled model, trained on simulated slides of four stains,
    takes the simulator's H&E, the stain most real training sets share.

    Raises
    ------
    OmnisegInputError
        A method of "none".
    """
    method = StainNormalisation(method)
    if method == StainNormalisation.NONE:
        raise OmnisegInputError("stain normalisation 'none' has no reference")
    meta = getattr(model, "omniseg_metadata", {}) or {}
    stored = (meta.get("stain_reference") or {}).get(str(method))
    if stored:
        return StainStatistics.from_dict(stored)
    return simulator_reference(method)


def simulator_reference(method: StainNormalisation | str) -> StainStatistics:
    """The statistics of a simulated H&E slide (the bundled model's training stain)."""
    from ..simulate.renal import simulate_renal

    s = simulate_renal(1024, 1024, stain="he", seed=3)
    return fit_stain([np.asarray(s.image[1])], method)


def references_of_images(images: list[np.ndarray]) -> dict:
    """Both methods' statistics of training images, for a checkpoint's ``stain_reference``
    (empty when the images hold too little tissue)."""
    out = {}
    for method in (StainNormalisation.REINHARD, StainNormalisation.MACENKO):
        try:
            out[str(method)] = fit_stain(images, method).as_dict()
        except OmnisegInputError:
            continue
    return out


#: A slide's stain is fitted on its coarsest level with at most this many pixels a side.
FIT_LEVEL_MAX_SIDE = 2048


def normalised_slide(slide: Any, reference: StainStatistics) -> Any:
    """The slide with every level's colours mapped to ``reference``, lazily.

    The slide's own statistics are fitted once on a coarse level (at most
    :data:`FIT_LEVEL_MAX_SIDE` pixels a side, else the coarsest), so every tile is mapped the
    same way.

    Raises
    ------
    OmnisegInputError
        Too little tissue on the slide to fit.
    """
    import dataclasses

    sides = [max(lv.shape[:2]) for lv in slide.levels]
    fitting = [k for k, s in enumerate(sides) if s <= FIT_LEVEL_MAX_SIDE]
    level = fitting[0] if fitting else len(sides) - 1
    thumb = np.asarray(slide.levels[level].compute(scheduler="synchronous"))
    normalise = normaliser_for([thumb], reference)
    levels = [lv.map_blocks(normalise, dtype=np.uint8) for lv in slide.levels]
    return dataclasses.replace(slide, levels=levels, _handles=slide._handles)
