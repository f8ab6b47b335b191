"""Visium spots over a slide: where they are, and what share of each spot each tissue covers.

A Visium capture area has 55 µm spots 100 µm apart centre to centre on a hexagonal grid. The
spots come from Space Ranger's output (``tissue_positions.csv`` or the header-less
``tissue_positions_list.csv``, with ``scalefactors_json.json``), or are laid out here over the
tissue. Space Ranger's ``spot_diameter_fullres`` is the 65 µm theoretical spot (the fiducial
pitch); the capture spot is 55 µm, so it is scaled by 55/65.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OmnisegInputError
from ..io.labels import LabelImage
from ..run import Progress, ShouldStop, check_stop, report

SPOT_DIAMETER_UM = 55.0
SPOT_PITCH_UM = 100.0
#: Space Ranger's spot_diameter_fullres describes a spot of this size.
SPACERANGER_SPOT_UM = 65.0
#: Percentages are computed on the coarsest level where a spot is at least this many pixels
#: across (a 55 µm spot at 10x), not at 40x: 16 times fewer pixels, 0.2 percentage points
#: from the 40x figures on average, 1.2 at most (docs/export.md).
MIN_SPOT_PIXELS = 48
_POSITION_COLUMNS = ("barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres",
                     "pxl_col_in_fullres")


@dataclass
class Spots:
    """Spot centres in level-0 pixels and their diameter.

    Attributes
    ----------
    rows, cols : numpy.ndarray
        Centres (level-0 pixels, from the slide's top-left corner).
    diameter : float
        Spot diameter in level-0 pixels.
    barcodes : list of str
        Space Ranger barcodes, or ``"spot-<i>"`` for a laid-out grid.
    skipped : int
        Spots of the positions file that lie outside the slide (left out).
    """

    rows: np.ndarray
    cols: np.ndarray
    diameter: float
    barcodes: list[str]
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.rows)


def hexagonal_spots(shape: tuple[int, int], mpp: float, tissue: Any = None,
                    pitch_um: float = SPOT_PITCH_UM, diameter_um: float = SPOT_DIAMETER_UM
                    ) -> Spots:
    """A hexagonal grid of spots over a slide of ``shape`` level-0 pixels.

    ``tissue`` (a :class:`~napari_omniseg.predict.tissue_mask.TissueMask`) keeps only spots
    whose centre lies on tissue; without it the grid covers the whole slide.
    """
    pitch = pitch_um / mpp
    row_step = pitch * math.sqrt(3) / 2
    r = diameter_um / mpp / 2
    rows, cols = [], []
    for i, y in enumerate(np.arange(r, shape[0] - r + 1e-9, row_step)):
        x0 = r + (pitch / 2 if i % 2 else 0.0)
        xs = np.arange(x0, shape[1] - r + 1e-9, pitch)
        rows.append(np.full(len(xs), y))
        cols.append(xs)
    ys = np.concatenate(rows) if rows else np.zeros(0)
    xs = np.concatenate(cols) if cols else np.zeros(0)
    if tissue is not None and len(ys):
        m = tissue.mask
        on = m[np.minimum((ys / tissue.downsample).astype(int), m.shape[0] - 1),
               np.minimum((xs / tissue.downsample).astype(int), m.shape[1] - 1)]
        ys, xs = ys[on], xs[on]
    return Spots(ys, xs, 2 * r, [f"spot-{i}" for i in range(len(ys))])


def read_spaceranger_spots(positions: str | os.PathLike, shape: tuple[int, int],
                           scalefactors: str | os.PathLike | None = None,
                           in_tissue_only: bool = True, mpp: float | None = None) -> Spots:
    """Spots from Space Ranger's ``tissue_positions(.csv|_list.csv)``.

    Parameters
    ----------
    positions : path-like
        The positions file (with or without a header line).
    shape : (int, int)
        Level-0 shape of the slide the spots lie on; spots outside it are skipped and counted.
    scalefactors : path-like, optional
        ``scalefactors_json.json``; default: the one beside ``positions``. Without one, the
        spot size comes from ``mpp``.
    in_tissue_only : bool
        Keep only spots Space Ranger marked as over tissue.
    """
    positions = Path(positions)
    rows = _position_rows(positions)
    sf_path = Path(scalefactors) if scalefactors else positions.with_name(
        "scalefactors_json.json")
    if sf_path.is_file():
        try:
            full = float(json.loads(sf_path.read_text())["spot_diameter_fullres"])
        except (ValueError, KeyError, TypeError):
            raise OmnisegInputError(f"{sf_path.name} has no spot_diameter_fullres; is it Space "
                                    "Ranger's scalefactors_json.json?") from None
        if not (math.isfinite(full) and full > 0):  # 0 made every percentage 0.0
            raise OmnisegInputError(f"{sf_path.name} gives a spot diameter of {full:g} pixels; "
                                    "it must be a positive number")
        diameter = full * SPOT_DIAMETER_UM / SPACERANGER_SPOT_UM
    elif mpp:
        diameter = SPOT_DIAMETER_UM / mpp
    else:
        raise OmnisegInputError(f"no scalefactors_json.json beside {positions.name} and no "
                                "pixel size: the spot size is unknown")
    keep = [r for r in rows if r["in_tissue"] == 1 or not in_tissue_only]
    ys = np.array([r["pxl_row_in_fullres"] for r in keep], float)
    xs = np.array([r["pxl_col_in_fullres"] for r in keep], float)
    inside = (ys >= 0) & (xs >= 0) & (ys < shape[0]) & (xs < shape[1])
    if keep and not inside.any():
        raise OmnisegInputError(f"all {len(keep)} spots of {positions.name} lie outside the "
                                f"slide ({shape[1]} x {shape[0]} px); are these the positions "
                                "of this slide, at full resolution?")
    return Spots(ys[inside], xs[inside], diameter,
                 [r["barcode"] for r, ok in zip(keep, inside) if ok],
                 skipped=int((~inside).sum()))


def _position_rows(path: Path) -> list[dict]:
    try:
        # utf-8-sig: Excel saves CSV with a byte-order mark before "barcode"
        with open(path, newline="", encoding="utf-8-sig") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise OmnisegInputError(f"{path.name} could not be read ({e.__class__.__name__})") from None
    if lines and lines[0][:1] == ["barcode"]:
        header, lines = lines[0], lines[1:]
        if not set(_POSITION_COLUMNS) <= set(header):
            missing = sorted(set(_POSITION_COLUMNS) - set(header))
            raise OmnisegInputError(f"{path.name} lacks the columns {', '.join(missing)}; a "
                                    "Space Ranger positions file has " +
                                    ", ".join(_POSITION_COLUMNS))
        idx = [header.index(c) for c in _POSITION_COLUMNS]
    else:
        idx = list(range(len(_POSITION_COLUMNS)))
    out = []
    for k, line in enumerate(lines):
        if not line:
            continue
        try:
            vals = [line[i] for i in idx]
            out.append({"barcode": vals[0], "in_tissue": int(vals[1]),
                        "pxl_row_in_fullres": float(vals[4]),
                        "pxl_col_in_fullres": float(vals[5])})
        except (IndexError, ValueError):
            raise OmnisegInputError(
                f"line {k + 1} of {path.name} is not a Space Ranger spot (columns "
                f"{', '.join(_POSITION_COLUMNS)})") from None
    if not out:
        raise OmnisegInputError(f"{path.name} lists no spots")
    return out


def spot_level(image: LabelImage, diameter: float) -> int:
    """The coarsest level of ``image`` where a spot is still :data:`MIN_SPOT_PIXELS` across."""
    h0 = image.shape[0]
    best = 0
    for k, lv in enumerate(image.levels):
        if diameter * lv.shape[0] / h0 >= MIN_SPOT_PIXELS:
            best = k
    return best


def spot_percentages(images: Sequence[LabelImage], spots: Spots, level: int | None = None,
                     progress: Progress | None = None, should_stop: ShouldStop | None = None
                     ) -> dict[str, np.ndarray]:
    """Per spot, the percentage of its disc each tissue covers.

    Parameters
    ----------
    images : sequence of LabelImage
        One-tissue masks, or vocabulary label images, of one slide.
    spots : Spots
        Centres and diameter in level-0 pixels.
    level : int, optional
        Pyramid level to measure on (default :func:`spot_level`).

    Returns
    -------
    dict
        Class name -> percentages (0-100), one per spot. A pixel is in a spot when its
        centre lies in the disc.
    """
    out: dict[str, np.ndarray] = {}
    n_steps = max(1, len(images))
    for k, im in enumerate(images):
        lv_index = spot_level(im, spots.diameter) if level is None else level
        lv = im.levels[lv_index]
        f = lv.shape[0] / im.shape[0]
        ys, xs, r = spots.rows * f, spots.cols * f, spots.diameter * f / 2
        order = np.argsort(ys)
        band = 4096  # rows of the level read at a time, plus the spots' reach
        counts: dict[int, np.ndarray] = {}
        area = np.zeros(len(ys))
        pos = 0
        while pos < len(order):
            check_stop(should_stop)
            y_top = ys[order[pos]] - r
            members = []
            while pos < len(order) and ys[order[pos]] - r < y_top + band:
                members.append(order[pos])
                pos += 1
            y0 = max(0, int(math.floor(y_top)))
            y1 = min(lv.shape[0], int(math.ceil(max(ys[members]) + r)) + 1)
            from .polygons import read_band

            rows = read_band(lv, y0, y1)
            for i in members:
                vals, n_in = _disc_values(rows, ys[i] - y0, xs[i], r)
                area[i] = n_in
                for v, c in zip(*np.unique(vals[vals != 0], return_counts=True)):
                    counts.setdefault(int(v), np.zeros(len(ys)))[i] = c
        names = {v: im.label_class(v).name for v in counts}
        if im.tissue:
            names.setdefault(1, im.label_class(1).name)
        for v, name in names.items():
            pct = 100.0 * counts.get(v, np.zeros(len(ys))) / np.maximum(area, 1)
            out[name] = out.get(name, 0) + pct
        report(progress, k + 1, n_steps, f"{im.name}: {len(ys)} spots")
    return out


def _disc_values(rows: np.ndarray, cy: float, cx: float, r: float) -> tuple[np.ndarray, int]:
    """Label values of the pixels whose centres lie within ``r`` of ``(cy, cx)`` (pixels off
    the image count as background)."""
    y0, y1 = int(math.floor(cy - r)), int(math.ceil(cy + r)) + 1
    x0, x1 = int(math.floor(cx - r)), int(math.ceil(cx + r)) + 1
    yy, xx = np.mgrid[y0:y1, x0:x1]
    disc = (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= r * r
    on = disc & (yy >= 0) & (yy < rows.shape[0]) & (xx >= 0) & (xx < rows.shape[1])
    return rows[yy[on], xx[on]], int(disc.sum())


def spot_rows(spots: Spots, percentages: dict[str, np.ndarray], mpp: float | None
              ) -> list[dict]:
    """CSV rows: barcode, centre (pixels, and µm when known), then each tissue's percentage."""
    rows = []
    for i in range(len(spots)):
        row: dict[str, Any] = {"barcode": spots.barcodes[i],
                               "row px": round(float(spots.rows[i]), 2),
                               "col px": round(float(spots.cols[i]), 2)}
        if mpp:
            row["y um"] = round(float(spots.rows[i]) * mpp, 2)
            row["x um"] = round(float(spots.cols[i]) * mpp, 2)
        for name, pct in percentages.items():
            row[f"{name} %"] = round(float(pct[i]), 3)
        rows.append(row)
    return rows


def correlate(values: dict[str, float], table: str | os.PathLike, column: str,
              key: str = "barcode") -> dict[str, float]:
    """Pearson and Spearman correlation between per-spot ``values`` (barcode -> number) and
    ``column`` of a user's CSV table keyed by ``key`` (e.g. deconvolution proportions)."""
    path = Path(table)
    if not path.is_file():
        raise OmnisegInputError(f"{path} does not exist; give the table to correlate with")
    try:
        # utf-8-sig: Excel saves CSV with a byte-order mark before the first column's name
        with open(path, newline="", encoding="utf-8-sig") as f:
            theirs = _table_column(path, csv.DictReader(f), column, key)
    except UnicodeDecodeError:
        raise OmnisegInputError(f"{path.name} is not a text (CSV) table") from None
    from scipy import stats

    common = [b for b in values if b in theirs]
    if len(common) < 3:
        raise OmnisegInputError(f"only {len(common)} spots of {path.name} match the spots' "
                                "barcodes; correlation needs at least 3")
    a = np.array([values[b] for b in common])
    b = np.array([theirs[b] for b in common])
    if np.ptp(a) == 0 or np.ptp(b) == 0:  # a constant column has no correlation (NaN)
        which = "the spots' percentages" if np.ptp(a) == 0 else f"the values of {column!r}"
        raise OmnisegInputError(f"{which} are the same in every matching spot: there is no "
                                "correlation to compute")
    return {"spots": len(common), "pearson": float(stats.pearsonr(a, b)[0]),
            "spearman": float(stats.spearmanr(a, b)[0])}


def _table_column(path: Path, reader: Any, column: str, key: str) -> dict[str, float]:
    """``column`` of a CSV table by its key (finite numbers only: "nan" is a missing value)."""
    fields = reader.fieldnames or []
    first = fields[0] if fields else key
    k = key if key in fields else first  # Seurat and scanpy write barcodes unnamed
    if column not in fields:
        raise OmnisegInputError(f"{path.name} has no column {column!r}; it has "
                                f"{', '.join(fields[:12])}")
    out = {}
    for row in reader:
        try:
            v = float(row[column])
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            out[row[k]] = v
    return out
