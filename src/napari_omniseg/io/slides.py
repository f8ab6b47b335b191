"""Whole-slide images as lazy pyramids of dask arrays.

Opening a slide reads metadata only: each pyramid level is a dask array over tifffile's zarr
store, so pixels are decoded tile by tile when a chunk is computed. Flat images (a plain TIFF,
PNG or JPEG) get a pyramid built lazily by 2x area averaging.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from .. import vocab
from ..errors import MissingPixelSizeError, OmnisegInputError, short_reason

SLIDE_SUFFIXES = (".tif", ".tiff", ".svs", ".png", ".jpg", ".jpeg")
_FLAT_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Built pyramids stop once a level would be smaller than this many pixels on its short side.
_MIN_LEVEL_SIZE = 256
#: Chunk size used where the file itself imposes none (flat images).
_CHUNK = 1024
#: Pixel sizes outside this range (um/px) are screen resolutions such as 72 dpi, not microscopy.
_PLAUSIBLE_MPP = (0.02, 50.0)


@dataclass
class Slide:
    """A whole-slide image as a pyramid of lazy RGB levels.

    Attributes
    ----------
    levels : list of dask.array.Array
        One ``(Y, X, 3)`` uint8 array per level, level 0 the finest.
    mpp : float or None
        Micrometres per pixel at level 0, or None when the file does not say.
    magnification : float or None
        Objective power at level 0 (from the file, else derived from ``mpp``).
    downsamples : list of float
        Downsample factor of each level relative to level 0.
    path : pathlib.Path or None
        File the slide was read from.
    source : str
        Which layout the pyramid came from, for messages (``"OME-TIFF SubIFD pyramid"``).
    stored_levels : int or None
        How many of the levels the file holds (the rest are computed from them); None: all.
    """

    levels: list[da.Array]
    mpp: float | None
    magnification: float | None
    downsamples: list[float]
    path: Path | None = None
    source: str = ""
    stored_levels: int | None = None
    _handles: list[Any] = field(default_factory=list, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """Height and width of level 0 in pixels."""
        h, w = self.levels[0].shape[:2]
        return int(h), int(w)

    def require_mpp(self) -> float:
        """Return the pixel size, or say in one sentence how to provide it."""
        if self.mpp is None:
            name = self.path.name if self.path else "this slide"
            raise MissingPixelSizeError(
                f"{name} has no pixel size; pass mpp= (the --mpp flag, or the µm/px field "
                "of the widget), e.g. 0.25 for a 40x scan"
            )
        return self.mpp

    def level_mpp(self, level: int) -> float:
        """Micrometres per pixel of a pyramid level."""
        return self.require_mpp() * self.downsamples[level]

    def close(self) -> None:
        """Release the open file handles behind the levels."""
        for h in self._handles:
            h.close()
        self._handles.clear()


def open_slide(path: str | os.PathLike, mpp: float | None = None) -> Slide:
    """Open a whole-slide image as a lazy pyramid.

    Supported: pyramidal TIFF, OME-TIFF (levels as SubIFDs or as separate series), Aperio SVS,
    and flat TIFF / PNG / JPEG (a pyramid is built lazily by downsampling).

    Parameters
    ----------
    path : str or os.PathLike
        The slide file.
    mpp : float, optional
        Micrometres per pixel at full resolution. Overrides what the file says; needed when the
        file carries no pixel size.

    Returns
    -------
    Slide
        Levels as dask arrays; no pixel data has been read.

    Raises
    ------
    OmnisegInputError
        With one sentence saying what is wrong with the file and what to do.
    """
    path = Path(path)
    if mpp is not None and not (mpp > 0 and np.isfinite(mpp)):
        raise OmnisegInputError(f"mpp must be a positive number of µm per pixel, got {mpp}")
    if not path.exists():
        raise OmnisegInputError(f"{path} does not exist; check the path")
    if path.is_dir():
        raise OmnisegInputError(f"{path} is a folder; open a slide file inside it")
    suffix = path.suffix.lower()
    if suffix not in SLIDE_SUFFIXES:
        raise OmnisegInputError(
            f"{path.name} is not a slide format this plugin reads; use one of "
            + ", ".join(SLIDE_SUFFIXES)
        )
    slide = _open_flat_image(path) if suffix in _FLAT_SUFFIXES else _open_tiff(path)
    if mpp is not None:
        slide.mpp = float(mpp)
        slide.magnification = None
    if slide.magnification is not None and slide.mpp is not None:
        implied = vocab.magnification_of_mpp(slide.mpp)
        if not implied / 2.5 <= slide.magnification <= implied * 2.5:
            # the pixel size is measured by the scanner; an objective power that disagrees
            # with it this much is a typing error, and would pick the wrong working level
            warnings.warn(f"{path.name}: the file says {slide.magnification:g}x but "
                          f"{slide.mpp:g} µm/px, which is {implied:.3g}x; using the pixel size",
                          stacklevel=2)
            slide.magnification = None
    elif slide.magnification is not None and not 1 <= slide.magnification <= 100:
        warnings.warn(f"{path.name}: objective power {slide.magnification:g}x is not a "
                      "microscope's; it is ignored", stacklevel=2)
        slide.magnification = None
    if slide.magnification is None and slide.mpp is not None:
        slide.magnification = vocab.magnification_of_mpp(slide.mpp)
    return slide


# ---------------------------------------------------------------------------------------------
# Flat images


def _open_flat_image(path: Path) -> Slide:
    from PIL import Image, UnidentifiedImageError

    # PNG and JPEG cannot be read by tiles, so the pixels are decoded once here; a truncated
    # file then fails now, with a clear message, instead of later inside the viewer.
    try:
        with Image.open(path) as im:
            info = dict(im.info)
            im.load()
            arr = np.asarray(im.convert("RGB") if im.mode in ("P", "CMYK", "YCbCr") else im)
    except UnidentifiedImageError:
        raise OmnisegInputError(
            f"{path.name} is not a readable {path.suffix.lstrip('.').upper()} image; "
            "check that the file is what its name says"
        ) from None
    except (OSError, SyntaxError) as e:
        raise OmnisegInputError(
            f"{path.name} could not be decoded ({short_reason(e)}); the file is probably truncated "
            "or damaged, copy it again"
        ) from None
    arr = _as_rgb(arr, "YXS" if arr.ndim == 3 else "YX", path.name)
    level0 = da.from_array(arr, chunks=(_CHUNK, _CHUNK, 3))
    mpp = None
    dpi = info.get("dpi")
    if dpi and dpi[0]:
        mpp = _plausible_mpp(25400.0 / float(dpi[0]))
    return _assemble([level0], mpp, None, path, f"flat {path.suffix.lstrip('.')}")


def _assemble(
    levels: list[da.Array], mpp: float | None, mag: float | None, path: Path, source: str,
    handles: list[Any] | None = None,
) -> Slide:
    """A Slide from the file's levels; a single level gets a pyramid built by downsampling."""
    stored = len(levels)
    if len(levels) == 1:
        while min(levels[-1].shape[:2]) // 2 >= _MIN_LEVEL_SIZE:
            levels.append(_downsample2(levels[-1]))
        if len(levels) > 1:
            source += " (pyramid built by downsampling)"
    return Slide(
        levels=levels,
        mpp=mpp,
        magnification=mag,
        downsamples=_downsamples(levels),
        path=path,
        source=source,
        stored_levels=stored,
        _handles=handles or [],
    )


def _downsample2(a: da.Array) -> da.Array:
    """2x area-average downsampling of a (Y, X, C) uint8 dask array."""
    h, w = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
    a = a[:h, :w]
    # coarsen needs chunks divisible by 2
    chunks = tuple(max(2, (c // 2) * 2) for c in (a.chunksize[0], a.chunksize[1]))
    a = a.rechunk((chunks[0], chunks[1], a.shape[2]))
    out = da.coarsen(np.mean, a.astype(np.float32), {0: 2, 1: 2}, trim_excess=True)
    return da.round(out).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# TIFF family


def _open_tiff(path: Path) -> Slide:
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except tifffile.TiffFileError:
        raise OmnisegInputError(
            f"{path.name} is not a TIFF file although its name says so; check that it was "
            "exported or copied correctly"
        ) from None
    except (OSError, ValueError, IndexError, struct.error) as e:
        raise OmnisegInputError(
            f"{path.name} could not be read ({short_reason(e)}); the file is probably truncated or "
            "damaged, copy it again"
        ) from None
    try:
        return _slide_from_tiff(tif, path)
    except BaseException:
        tif.close()
        raise


def _slide_from_tiff(tif: Any, path: Path) -> Slide:
    try:
        series_list = tif.series
    except Exception as e:  # tifffile raises many kinds on damaged structures
        raise OmnisegInputError(
            f"{path.name} has a damaged TIFF structure ({short_reason(e)}); copy the file again"
        ) from None
    if not series_list:
        raise OmnisegInputError(f"{path.name} holds no image; check the file")

    if len(series_list[0].levels) > 1:
        kind = "Aperio SVS" if tif.is_svs else "OME-TIFF" if tif.is_ome else "pyramidal TIFF"
        source = kind if tif.is_svs else f"{kind} SubIFD pyramid" if tif.is_ome else kind
        level_series = [(0, i) for i in range(len(series_list[0].levels))]
    else:
        level_series = _pyramid_series(series_list)
        kind = "Aperio SVS" if tif.is_svs else "OME-TIFF" if tif.is_ome else "TIFF"
        source = f"{kind} series pyramid" if len(level_series) > 1 and not tif.is_svs else kind

    check_not_truncated(tif, series_list, level_series, path)
    levels = [_level_array(tif, s, lv, path) for s, lv in level_series]

    mpp, mag = tiff_pixel_size(tif)
    return _assemble(levels, mpp, mag, path, source, handles=[tif])


def _pyramid_series(series_list: list[Any]) -> list[tuple[int, int]]:
    """Series that are successive resolutions of series 0 (levels stored as separate images).

    Label, macro and thumbnail images are skipped: a level must keep the baseline's aspect
    ratio, be tiled like it, and be smaller than the level before.
    """
    base = series_list[0]
    by, bx = _yx(base.shape, base.axes)
    tiled = base.pages[0].is_tiled if base.pages and base.pages[0] is not None else False
    out = [(0, 0)]
    prev = by
    for i, s in enumerate(series_list[1:], start=1):
        try:
            y, x = _yx(s.shape, s.axes)
            page = s.pages[0]
        except (ValueError, IndexError):
            continue
        same_aspect = abs((by / y) / (bx / x) - 1) < 0.05
        if same_aspect and y < prev and (page is None or page.is_tiled == tiled):
            out.append((i, 0))
            prev = y
    return out


def _yx(shape: tuple[int, ...], axes: str) -> tuple[int, int]:
    return shape[axes.index("Y")], shape[axes.index("X")]


def check_not_truncated(tif: Any, series_list: list[Any], level_series: list, path: Path) -> None:
    """Compare where each level's tiles end with the file size, from metadata only."""
    size = os.path.getsize(path)
    for s, lv in level_series:
        for page in series_list[s].levels[lv].pages:
            if page is None:
                continue
            offsets = getattr(page, "dataoffsets", ())
            counts = getattr(page, "databytecounts", ())
            if offsets and counts and max(o + c for o, c in zip(offsets, counts)) > size:
                raise OmnisegInputError(
                    f"{path.name} is truncated: its image data runs past the end of the file; "
                    "copy the file again"
                )


def _level_array(tif: Any, series: int, level: int, path: Path) -> da.Array:
    import zarr

    s = tif.series[series].levels[level]
    axes = s.axes
    # tiles a sparse file leaves out are glass, not black tissue
    store = tif.series[series].aszarr(level=level,
                                      fillvalue=255 if s.dtype == np.uint8 else None)
    arr = da.from_zarr(zarr.open_array(store, mode="r"))
    # Squeeze singleton axes the pyramid does not use (SVS adds Z=1, OME may add T/Z/C=1).
    keep = []
    for i, ax in enumerate(axes):
        if ax in "YXS" or arr.shape[i] != 1:
            keep.append(ax)
    index = tuple(0 if (ax not in "YXS" and arr.shape[i] == 1) else slice(None)
                  for i, ax in enumerate(axes))
    arr = arr[index]
    return _as_rgb(arr, "".join(keep), path.name)


def _as_rgb(arr: Any, axes: str, name: str) -> Any:
    """Return a (Y, X, 3) uint8 view of an image, or explain why it is not an RGB slide."""
    if axes == "CYX" and arr.shape[0] in (3, 4):
        arr = arr.transpose(1, 2, 0)
        axes = "YXS"
    if axes == "YX":
        raise OmnisegInputError(
            f"{name} is a single-channel (grayscale) image; the kidney models need an RGB "
            "brightfield scan (a grayscale stack may be an MRI volume: open it as a volume)"
        )
    if axes != "YXS" or arr.shape[-1] not in (3, 4):
        nch = arr.shape[-1] if axes.endswith("S") else (arr.shape[0] if arr.ndim == 3 else "?")
        raise OmnisegInputError(
            f"{name} has {nch} channels (axes {axes}); the kidney models need an RGB "
            "brightfield scan with 3 channels"
        )
    if arr.shape[-1] == 4:
        arr = arr[..., :3]  # alpha carries nothing a stain model can use
    if arr.dtype != np.uint8:
        if arr.dtype == np.uint16:
            arr = (arr // 257).astype(np.uint8)
        else:
            raise OmnisegInputError(
                f"{name} stores pixels as {arr.dtype}; the kidney models need 8-bit RGB"
            )
    return arr


def _downsamples(levels: list[da.Array]) -> list[float]:
    h0, w0 = levels[0].shape[:2]
    return [float((h0 / lv.shape[0] + w0 / lv.shape[1]) / 2) for lv in levels]


# ---------------------------------------------------------------------------------------------
# Pixel size


def tiff_pixel_size(tif: Any) -> tuple[float | None, float | None]:
    """Micrometres per pixel and objective power from OME, Aperio or TIFF resolution tags."""
    if tif.is_ome and tif.ome_metadata:
        mpp, mag = _ome_pixel_size(tif.ome_metadata)
        if mpp is not None:
            return mpp, mag
    page = tif.pages.first
    if tif.is_svs:
        desc = page.description
        mpp = _float_after(desc, r"\bMPP\s*=\s*")
        mag = _float_after(desc, r"\bAppMag\s*=\s*")
        if mpp is not None:
            return _plausible_mpp(mpp), mag
    return _resolution_tag_mpp(page), None


def _ome_pixel_size(xml: str) -> tuple[float | None, float | None]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None
    mpp = mag = None
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        if tag == "Pixels" and mpp is None and el.get("PhysicalSizeX"):
            unit = el.get("PhysicalSizeXUnit", "µm")
            size = _metadata_number(el.get("PhysicalSizeX"), "PhysicalSizeX")
            if unit not in _UNIT_TO_UM:
                warnings.warn(f"pixel size unit {unit!r} is not a length unit this plugin "
                              "knows; the pixel size is ignored (give it as µm/px)", stacklevel=2)
            elif size is not None:
                mpp = _plausible_mpp(size * _UNIT_TO_UM[unit])
        elif tag == "Objective" and mag is None and el.get("NominalMagnification"):
            mag = _metadata_number(el.get("NominalMagnification"), "NominalMagnification")
    return mpp, mag


def _metadata_number(text: str | None, what: str) -> float | None:
    """A positive finite number from the file's metadata, else None (with a warning)."""
    try:
        v = float(text or "")
    except ValueError:
        v = float("nan")
    if v > 0 and np.isfinite(v):
        return v
    warnings.warn(f"{what} {text!r} in the file is not a positive number; it is ignored",
                  stacklevel=3)
    return None


_UNIT_TO_UM = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6, "Å": 1e-4}


def _resolution_tag_mpp(page: Any) -> float | None:
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    num, den = tags["XResolution"].value
    unit = int(tags["ResolutionUnit"].value)
    if not num or not den:
        return None
    per_unit = num / den  # pixels per unit
    um_per_unit = {2: 25400.0, 3: 10000.0}.get(unit)
    if um_per_unit is None:
        return None
    return _plausible_mpp(um_per_unit / per_unit)


def _plausible_mpp(mpp: float) -> float | None:
    return float(mpp) if _PLAUSIBLE_MPP[0] <= mpp <= _PLAUSIBLE_MPP[1] else None


def _float_after(text: str, pattern: str) -> float | None:
    m = re.search(pattern + r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)", text or "")
    return float(m.group(1)) if m else None

