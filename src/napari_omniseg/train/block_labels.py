"""Block labels: one class per block of an image ("many / few / no capillaries here"), the
table that says what fraction of a block's pixels each class means, and their derivation from
pixel masks (label super-resolution, ``../papers`` digest section 3).

A block-label image has one pixel per block: 0 = not labelled, 1..K = the block's class. Its
block size is the side, in image pixels, of one block; the image must be a whole number of
blocks on each side, so that the two overlay exactly.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import vocab
from ..errors import OmnisegInputError

#: The smallest sd a table may give a class: a mask-estimated class whose example blocks all
#: had the same fraction would otherwise claim a certainty no block label has.
MIN_SD = 0.02


@dataclass
class BlockAnnotation:
    """An image with block labels for one tissue at one magnification.

    Attributes
    ----------
    image : np.ndarray
        ``(H, W, 3)`` uint8.
    blocks : np.ndarray
        ``(H // block_size, W // block_size)`` int; 0 = not labelled, else the block class.
    block_size : int
        Image pixels per block side.
    tissue : str
        Tissue code the classes are about.
    magnification : int
        The image's objective power.
    """

    image: np.ndarray
    blocks: np.ndarray
    block_size: int
    tissue: str
    magnification: int
    name: str = ""
    stain: str = ""

    def __post_init__(self) -> None:
        self.blocks = np.asarray(self.blocks).astype(np.int64)
        check_cover(self.image.shape[:2], self.blocks.shape, self.block_size, self.name)
        if (self.blocks < 0).any():
            raise OmnisegInputError(f"{self.name or 'a block layer'} has negative block "
                                    "classes; use 0 for unlabelled blocks and 1, 2, ... for "
                                    "classes")

    @property
    def classes(self) -> list[int]:
        """The block classes it uses (0, unlabelled, excluded)."""
        return sorted(int(c) for c in np.unique(self.blocks) if c > 0)


def check_cover(image_shape: tuple[int, ...], blocks_shape: tuple[int, ...], block_size: int,
                name: str = "") -> None:
    """Refuse a block size that does not divide the image, or blocks that do not cover it."""
    what = name or "the image"
    h, w = (int(s) for s in image_shape[:2])
    if int(block_size) < 2:
        raise OmnisegInputError(f"block size {block_size} is too small; a block is at least "
                                "2 x 2 pixels")
    if h % block_size or w % block_size:
        raise OmnisegInputError(
            f"block size {block_size} does not divide {what} ({h} x {w} pixels); crop it to "
            f"{h - h % block_size} x {w - w % block_size} or choose a block size that divides "
            "both sides")
    if tuple(blocks_shape[:2]) != (h // block_size, w // block_size):
        raise OmnisegInputError(
            f"the block labels of {what} are {blocks_shape[0]} x {blocks_shape[1]} blocks, but "
            f"{h} x {w} pixels at {block_size} px per block need {h // block_size} x "
            f"{w // block_size}: the block layer does not cover the image")


def block_fractions(mask: np.ndarray, block_size: int) -> np.ndarray:
    """The foreground fraction of each block of a 0/1 mask (its sides divisible by the size)."""
    h, w = mask.shape
    b = int(block_size)
    return (np.asarray(mask, bool).reshape(h // b, b, w // b, b).mean(axis=(1, 3)))


def classes_of_fractions(fractions: np.ndarray, bins: int) -> np.ndarray:
    """Block classes 1..``bins`` of foreground fractions: class 1 is exactly no foreground,
    the others split (0, 1] into ``bins - 1`` equal intervals."""
    if bins < 2:
        raise OmnisegInputError(f"{bins} block classes cannot tell anything apart; use 2 or more")
    f = np.asarray(fractions, float)
    upper = np.ceil(f * (bins - 1) - 1e-9).astype(np.int64)
    return np.where(f <= 0, 1, 1 + np.clip(upper, 1, bins - 1)).astype(np.int64)


@dataclass
class BlockTable:
    """p(fraction of tissue | block class): a mean and an sd per (tissue, class).

    ``rows`` maps ``(tissue, block_class)`` to ``(mean, sd)``, fractions in [0, 1].
    """

    rows: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for (tissue, cls), (mean, sd) in self.rows.items():
            vocab.tissue(tissue)
            if not 0 <= mean <= 1:
                raise OmnisegInputError(f"the block table gives {tissue} class {cls} a mean of "
                                        f"{mean:g}; means are fractions of a block, 0 to 1")
            if not sd > 0:
                raise OmnisegInputError(f"the block table gives {tissue} class {cls} an sd of "
                                        f"{sd:g}; an sd must be above 0")

    def lookup(self, tissue: str, cls: int) -> tuple[float, float]:
        """The (mean, sd) of a class; one sentence when the table lacks it."""
        try:
            return self.rows[(tissue, int(cls))]
        except KeyError:
            known = sorted(c for t, c in self.rows if t == tissue)
            raise OmnisegInputError(
                f"block class {cls} of {tissue} is not in the block table (it has "
                f"{', '.join(map(str, known)) or 'no classes'} for {tissue}); add it or "
                "estimate the table from painted blocks") from None

    def check_covers(self, annotations: list[BlockAnnotation]) -> None:
        """Refuse block labels whose classes the table does not give."""
        for a in annotations:
            for c in a.classes:
                self.lookup(a.tissue, c)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the CSV (tissue, block_class, mean, sd), complete or not at all."""
        from ..io.atomic import written_atomically

        path = Path(path)
        with written_atomically(path) as tmp, open(tmp, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["tissue", "block_class", "mean", "sd"])
            for (t, c), (m, s) in sorted(self.rows.items()):
                out.writerow([t, c, f"{m:.6g}", f"{s:.6g}"])
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> BlockTable:
        """Read a table written by :meth:`save` (or by hand)."""
        from ..io.manifest import read_rows

        rows: dict[tuple[str, int], tuple[float, float]] = {}
        name = Path(path).name
        for line, row in read_rows(path, {"tissue", "block_class", "mean", "sd"}):
            try:
                key = (vocab.tissue(row["tissue"]).code, int(row["block_class"]))
                rows[key] = (float(row["mean"]), float(row["sd"]))
                cls({key: rows[key]})  # checked here, where the line is known
            except OmnisegInputError as e:  # a ValueError too: first
                raise OmnisegInputError(f"{name} line {line}: {e}") from None
            except ValueError:
                raise OmnisegInputError(f"{name} line {line}: block_class, mean and sd must be "
                                        "numbers") from None
        return cls(rows)

    @classmethod
    def estimate(cls, examples: list[tuple[str, int, float]]) -> BlockTable:
        """The mask-estimated table: ``examples`` are ``(tissue, block_class, fraction)`` of
        fully painted blocks; each class gets their mean and sd (at least :data:`MIN_SD`)."""
        groups: dict[tuple[str, int], list[float]] = {}
        for tissue, c, f in examples:
            groups.setdefault((tissue, int(c)), []).append(float(f))
        if not groups:
            raise OmnisegInputError("no fully painted blocks to estimate the block table from")
        return cls({k: (float(np.mean(v)), max(float(np.std(v)), MIN_SD))
                    for k, v in groups.items()})


def examples_from_masks(annotations: list[BlockAnnotation], masks: list[np.ndarray]
                        ) -> list[tuple[str, int, float]]:
    """``(tissue, class, fraction)`` of every labelled block whose pixels are painted."""
    out = []
    for a, m in zip(annotations, masks):
        f = block_fractions(m, a.block_size)
        for (i, j) in zip(*np.nonzero(a.blocks)):
            out.append((a.tissue, int(a.blocks[i, j]), float(f[i, j])))
    return out


def read_block_manifest(path: str | os.PathLike, split_column: str | None = "split"
                        ) -> dict[str, list[BlockAnnotation]]:
    """Block-labelled images listed in a CSV (image, blocks, block_size, tissue,
    magnification[, stain, split]); paths relative to the CSV."""
    from ..io.manifest import number, read_grouped
    from .annotations import imread_rgb, nearest_magnification

    base = Path(path).parent

    def row_to_annotation(row: dict[str, str], where: str) -> BlockAnnotation:
        try:
            tissue = vocab.tissue(row["tissue"]).code
            image = imread_rgb(base / row["image"], where)
            blocks = _read_blocks(base / row["blocks"], where)
            size = int(number(row["block_size"], "block_size", where))
            return BlockAnnotation(image, blocks, size, tissue,
                                   nearest_magnification(number(row["magnification"],
                                                                "magnification", where)),
                                   name=row["image"], stain=row.get("stain", ""))
        except OmnisegInputError as e:
            text = str(e)
            raise OmnisegInputError(text if text.startswith(where) else f"{where}: {text}"
                                    ) from None

    return read_grouped(path, {"image", "blocks", "block_size", "tissue", "magnification"},
                        split_column, row_to_annotation)


def _read_blocks(path: Path, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except (OSError, ValueError, UnidentifiedImageError) as e:
        raise OmnisegInputError(f"{where}: cannot read {e}") from None
    if arr.ndim != 2:
        raise OmnisegInputError(f"{where}: {path.name} is not a single-channel block-label "
                                "image (one pixel per block, its value the class)")
    return arr.astype(np.int64)


def blocks_from_masks(manifest: str | os.PathLike, block_size: int, bins: int,
                      out_dir: str | os.PathLike, split_column: str = "split"
                      ) -> tuple[Path, Path]:
    """Derive block labels and a mask-estimated table from a pixel-mask manifest.

    Writes ``out_dir/blocks/<name>.png`` (one pixel per block), ``out_dir/manifest.csv`` (the
    input's rows and split column, ``blocks`` and ``block_size`` instead of ``mask``; images
    referred to where they are) and ``out_dir/table.csv``, estimated from the ``train`` rows
    only (the others are what the result is judged on); a class none of them has gets its bin's
    middle (:func:`with_bin_defaults`). Every image must be a whole number of
    blocks on each side.

    Returns
    -------
    (Path, Path)
        The manifest and the table written.
    """
    from PIL import Image

    from ..io.atomic import written_atomically
    from ..io.manifest import read_rows
    from .annotations import imread_rgb

    manifest = Path(manifest)
    out_dir = Path(out_dir)
    (out_dir / "blocks").mkdir(parents=True, exist_ok=True)
    rows = read_rows(manifest, {"image", "mask", "tissue", "magnification"})
    header = [c for c in rows[0][1] if c != "mask"] + ["blocks", "block_size"]
    written, examples = [], []
    for line, row in rows:
        where = f"{manifest.name} line {line}"
        tissue = vocab.tissue(row["tissue"]).code
        mask = imread_rgb(manifest.parent / row["mask"], where, rgb=False)
        mask = (mask[..., 0] if mask.ndim == 3 else mask) > 0
        try:
            check_cover(mask.shape, (mask.shape[0] // block_size, mask.shape[1] // block_size),
                        block_size, row["mask"])
        except OmnisegInputError as e:
            raise OmnisegInputError(f"{where}: {e}") from None
        frac = block_fractions(mask, block_size)
        classes = classes_of_fractions(frac, bins)
        target = out_dir / "blocks" / f"{line:04d}_{Path(row['mask']).stem}.png"
        with written_atomically(target) as tmp:
            Image.fromarray(classes.astype(np.uint8)).save(tmp, format="PNG")
        image = (manifest.parent / row["image"]).resolve()
        rel = os.path.relpath(image, out_dir.resolve())
        written.append({**{k: v for k, v in row.items() if k != "mask"}, "image": rel,
                        "blocks": f"blocks/{target.name}", "block_size": str(block_size)})
        if row.get(split_column, "train") in ("train", ""):
            examples += [(tissue, int(c), float(f)) for c, f in
                         zip(classes.ravel(), frac.ravel())]
    out_manifest = out_dir / "manifest.csv"
    with written_atomically(out_manifest) as tmp, open(tmp, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        wr.writeheader()
        wr.writerows(written)
    table = with_bin_defaults(BlockTable.estimate(examples), bins).save(out_dir / "table.csv")
    return out_manifest, table


def bin_interval(cls: int, bins: int) -> tuple[float, float]:
    """The fraction interval of a class of :func:`classes_of_fractions`."""
    if cls == 1:
        return 0.0, 0.0
    return (cls - 2) / (bins - 1), (cls - 1) / (bins - 1)


def with_bin_defaults(table: BlockTable, bins: int) -> BlockTable:
    """``table`` with every class 1..``bins`` of each of its tissues: a class no training
    block had gets its bin's middle and the sd of a uniform spread over the bin."""
    rows = dict(table.rows)
    for tissue in {t for t, _ in table.rows}:
        for c in range(1, bins + 1):
            lo, hi = bin_interval(c, bins)
            rows.setdefault((tissue, c), ((lo + hi) / 2, max((hi - lo) / 12 ** 0.5, MIN_SD)))
    return BlockTable(rows)


def upsampled_blocks(blocks: np.ndarray, block_size: int, table: BlockTable, tissue: str,
                     ) -> np.ndarray:
    """The low-resolution baseline: each labelled block all foreground when its class's mean
    fraction is above one half (unlabelled blocks background)."""
    lut = np.zeros(int(blocks.max()) + 1, bool)
    for c in np.unique(blocks):
        if c > 0:
            lut[c] = table.lookup(tissue, int(c))[0] > 0.5
    return np.kron(lut[blocks], np.ones((block_size, block_size), bool)).astype(bool)
