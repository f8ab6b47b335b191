"""Where the tissue is on a slide: a coarse mask that keeps predictions off the glass.

A network that sees a tile that is mostly glass next to a biopsy edge can call blobs of glass
"artery" or "capsule". Glass is easy to recognise from a thumbnail: bright and unsaturated, and
connected to the outside. Lumens, Bowman's space and vessel lumens are bright too, but they are
enclosed by tissue, so filling the holes of the tissue mask keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.slides import Slide

#: Largest stored level side worth reading for the mask; slides without one this small skip it.
MAX_THUMBNAIL_SIDE = 4096
#: The mask itself is computed on at most this many pixels per side...
MASK_SIDE = 2048
#: ...and with pixels of at least this size (µm): glass and tissue differ at a coarse scale.
MASK_PIXEL_UM = 4.0
#: Tissue is grown by this much, so objects cut by the biopsy edge keep their outline.
MARGIN_UM = 30.0
#: Specks smaller than this are dust, not tissue.
MIN_TISSUE_AREA_UM2 = 40_000.0


def tissue_pixels(rgb: np.ndarray) -> np.ndarray:
    """Pixels that are not bright, unsaturated glass (saturation > 18 or mean < 200)."""
    # channel by channel: numpy reductions over a last axis of three are several times slower
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    saturation = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    return (saturation > 18) | (r.astype(np.uint16) + g + b < 600)


@dataclass
class TissueMask:
    """A boolean tissue mask on a coarse level of a slide.

    Attributes
    ----------
    mask : numpy.ndarray
        ``(Y, X)`` bool, True on tissue (holes filled, grown by :data:`MARGIN_UM`).
    downsample : float
        Level-0 pixels per mask pixel.
    inner : numpy.ndarray or None
        The tissue before it was grown: between it and ``mask`` lies the margin, where only
        pixels that look stained (and their close neighbours) keep predictions
        (:func:`keep_in_margin`); None keeps the whole margin.
    """

    mask: np.ndarray
    downsample: float
    inner: np.ndarray | None = None

    def crop(self, y0: float, x0: float, step: float, size: int, inner: bool = False
             ) -> np.ndarray:
        """The mask (``inner``: the ungrown one) sampled on a ``size`` x ``size`` grid
        starting at level-0 ``(y0, x0)``.

        ``step`` is the level-0 distance between grid points; points off the slide are glass.
        """
        mask = self.inner if inner and self.inner is not None else self.mask
        idx = (np.arange(size) + 0.5) * step
        rows = np.floor((y0 + idx) / self.downsample).astype(int)
        cols = np.floor((x0 + idx) / self.downsample).astype(int)
        h, w = mask.shape
        vr, vc = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
        out = np.zeros((size, size), bool)
        out[np.ix_(vr, vc)] = mask[np.ix_(rows[vr], cols[vc])]
        return out


#: In the margin, predictions stay this many working pixels around stained pixels (a cut
#: object's outline), and go on glass beyond: the glass strip along a biopsy's edge was once
#: called artery.
MARGIN_KEEP_PX = 4


def keep_in_margin(on_tissue: np.ndarray, inner: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Where a tile's predictions are kept: inside the (ungrown) tissue, and in the margin
    only near pixels that look stained (:func:`tissue_pixels`)."""
    from scipy import ndimage

    band = on_tissue & ~inner
    if not band.any():
        return on_tissue
    stained = ndimage.binary_dilation(tissue_pixels(rgb), iterations=MARGIN_KEEP_PX)
    return on_tissue & (inner | stained)


def tissue_mask(slide: Slide, max_side: int = MAX_THUMBNAIL_SIDE) -> TissueMask | None:
    """Compute the tissue mask from the coarsest stored level, or None when that is too big.

    The level must be at most ``max_side`` pixels on each side so that reading it stays cheap
    (a fraction of a second for a pyramidal slide). Levels computed from level 0 are not used:
    reading them would read the whole slide.
    """
    from scipy import ndimage
    from skimage.morphology import disk

    k = (slide.stored_levels or len(slide.levels)) - 1
    level = slide.levels[k]
    if max(level.shape[:2]) > max_side:
        return None
    level_mpp = (slide.mpp or 0.25) * float(slide.downsamples[k])
    step = max(-(-max(level.shape[:2]) // MASK_SIDE), int(MASK_PIXEL_UM // level_mpp), 1)
    thumb = np.asarray(level[::step, ::step].compute(scheduler="synchronous"))
    ds = float(slide.downsamples[k]) * step
    mpp = level_mpp * step
    tissue = ndimage.binary_closing(tissue_pixels(thumb), structure=disk(1), border_value=0)
    tissue = ndimage.binary_fill_holes(tissue)
    labels, _ = ndimage.label(tissue)
    # a small image (a field of view, a crop) is no bigger than a speck of dust on a slide:
    # there, a speck is small against the image itself
    big = np.bincount(labels.ravel()) >= min(MIN_TISSUE_AREA_UM2 / mpp ** 2, 0.02 * tissue.size)
    big[0] = False
    inner = big[labels]
    # grown by a distance, not a structuring element: any margin at the same small cost
    tissue = ndimage.distance_transform_edt(~inner) <= max(1.0, MARGIN_UM / mpp)
    return TissueMask(tissue, ds, inner)
