"""Mask files in, exports and measurements out: what ``omniseg export`` and ``omniseg
quantify`` do, one slide's masks at a time; a slide that fails is reported and the rest go on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import OmnisegInputError, failure_sentence
from ..io.atomic import file_stem
from ..io.labels import LabelImage, open_labels, tissue_in_name, write_label_pyramid
from ..run import Progress, ShouldStop, Stopped, report, scaled

FORMATS = ("geojson", "ome-tiff", "csv")


def slide_stem(path: str | os.PathLike) -> str:
    """The slide a mask file belongs to: ``x_ptc.ome.tif`` and ``x_dt.ome.tif`` are ``x``'s."""
    stem = file_stem(path)
    code = tissue_in_name(stem)
    if code and stem.lower().endswith("_" + code):
        return stem[: -len(code) - 1]
    return stem


def open_mask_files(paths: Sequence[str | os.PathLike], mpp: float | None = None
                    ) -> tuple[dict[str, list[LabelImage]], dict[str, str]]:
    """Open mask files grouped by slide; returns the groups and the files that failed."""
    groups: dict[str, list[LabelImage]] = {}
    failed: dict[str, str] = {}
    for p in paths:
        try:
            images = open_labels(p, mpp=mpp)
        except OmnisegInputError as e:
            failed[str(p)] = str(e)
            continue
        groups.setdefault(slide_stem(p), []).extend(images)
    return groups, failed


def export_masks(paths: Sequence[str | os.PathLike], fmt: str, out_dir: str | os.PathLike,
                 mpp: float | None = None, object_type: str = "detection",
                 min_area_um2: float | None = None, progress: Progress | None = None,
                 should_stop: ShouldStop | None = None) -> dict:
    """Export mask files of one or more slides.

    Parameters
    ----------
    paths : sequence of path-like
        Mask files (``omniseg segment``'s, the simulator's, painted label images).
    fmt : {"geojson", "ome-tiff", "csv"}
        ``<slide>.geojson`` (all the slide's masks in one QuPath file), one pyramidal
        ``<mask>.ome.tif`` per mask, or ``<slide>_objects.csv``.
    out_dir : str or path-like
        Where the files go.
    mpp : float, optional
        µm per pixel for files that do not say.
    object_type : {"detection", "annotation"}
        QuPath's object type of the GeoJSON features: one per object, or one per tissue.
    min_area_um2 : float, optional
        Smallest object written to GeoJSON and CSV (µm²); None: each tissue's default
        (:func:`~napari_omniseg.quantify.measure.min_object_um2`).
    progress, should_stop : callable, optional
        The run contract; a stop leaves no partial file.

    Returns
    -------
    dict
        ``{"written": [paths], "failed": {input: reason}}``.
    """
    from .geojson import write_geojson
    from .measure import write_object_csv

    if fmt not in FORMATS:
        raise OmnisegInputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups, failed = open_mask_files(paths, mpp)
    inputs = {Path(p).resolve() for p in paths}
    written: list[str] = []
    for i, (stem, images) in enumerate(groups.items()):
        part = scaled(progress, i * 1000, 1000, len(groups) * 1000, f"{stem}: ")
        try:
            if fmt == "geojson":
                target = out_dir / f"{stem}.geojson"
                write_geojson(target, images, object_type, min_area_um2=min_area_um2,
                              progress=part, should_stop=should_stop)
                written.append(str(target))
            elif fmt == "csv":
                target = out_dir / f"{stem}_objects.csv"
                write_object_csv(target, images, min_area_um2=min_area_um2, progress=part,
                                 should_stop=should_stop)
                written.append(str(target))
            else:
                for im in images:
                    name = f"{stem}_{im.tissue}" if im.tissue else file_stem(im.name)
                    target = out_dir / f"{name}.ome.tif"
                    if target.resolve() in inputs:
                        raise OmnisegInputError(f"{target.name} would overwrite an input; "
                                                "choose another output folder")
                    write_label_pyramid(target, im, progress=part, should_stop=should_stop)
                    written.append(str(target))
        except Stopped:
            raise
        except Exception as e:
            failed[stem] = failure_sentence(stem, e)
        finally:
            for im in images:
                im.close()
        report(progress, (i + 1) * 1000, len(groups) * 1000, f"{stem} done")
    return {"written": written, "failed": failed}


def geojson_beside_masks(result: dict, out_dir: str | os.PathLike,
                         progress: Progress | None = None,
                         should_stop: ShouldStop | None = None) -> dict:
    """After ``omniseg segment``: one QuPath GeoJSON per slide from its mask files, named like
    the masks' slide stem; adds ``"geojson"`` to each slide's results."""
    from .geojson import write_geojson

    slides = result["slides"]
    for i, (slide, tissues) in enumerate(slides.items()):
        masks = [t["mask"] for t in tissues.values()]
        if not masks:
            continue
        target = Path(out_dir) / f"{slide_stem(masks[0])}.geojson"
        images: list = []
        try:
            images = [im for m in masks for im in open_labels(m)]
            write_geojson(target, images, progress=scaled(
                progress, i, 1, len(slides), "GeoJSON: "), should_stop=should_stop)
            result.setdefault("geojson", {})[slide] = str(target)
        except Stopped:
            raise
        except Exception as e:
            result.setdefault("failed", {})[slide] = failure_sentence(target.name, e)
        finally:
            for im in images:
                im.close()
    return result


def quantify_files(paths: Sequence[str | os.PathLike], out_csv: str | os.PathLike,
                   slide: str | os.PathLike | None = None, spots: str | None = None,
                   mpp: float | None = None, min_area_um2: float | None = None,
                   progress: Progress | None = None, should_stop: ShouldStop | None = None
                   ) -> dict:
    """Measure mask files into one CSV.

    Without ``spots``: one row per slide and tissue (area, objects, density per mm² of tissue
    when ``slide`` (the image) is given, object sizes). With ``spots`` (``"hex"`` for a laid-out
    grid, or Space Ranger's positions file): one row per spot with each tissue's percentage;
    the masks must then be of one slide.

    Parameters
    ----------
    paths : sequence of path-like
        Mask files.
    out_csv : str or path-like
        The table to write.
    slide : str or path-like, optional
        The slide image: tissue area for densities, and the grid of the spots.
    spots : str, optional
        ``"hex"`` or a Space Ranger positions file: one row per spot.
    mpp : float, optional
        µm per pixel for files that do not say.
    min_area_um2 : float, optional
        Smallest object counted (µm²); None: each tissue's default.
    progress, should_stop : callable, optional
        The run contract; a stop leaves no partial file.

    Returns
    -------
    dict
        ``{"csv": path, "rows": n, "failed": {...}}`` plus ``"skipped"`` spots outside the
        slide.
    """
    from .measure import summarize, tissue_area_mm2, write_csv

    groups, failed = open_mask_files(paths, mpp)
    if not groups:
        raise OmnisegInputError("no mask could be read: " + "; ".join(failed.values()))
    summary: dict = {"csv": str(out_csv), "failed": failed}
    image = _open_slide(slide, mpp) if slide else None
    try:
        if spots:
            if len(groups) > 1:
                raise OmnisegInputError("spots are measured on one slide's masks at a time; "
                                        f"these are of {', '.join(groups)}")
            images = next(iter(groups.values()))
            rows, skipped = _spot_rows(images, spots, image, progress, should_stop)
            summary["skipped"] = skipped
        else:
            rows = []
            tissue = tissue_area_mm2(image) if image is not None else None
            for i, (stem, images) in enumerate(groups.items()):
                part = scaled(progress, i * 1000, 1000, len(groups) * 1000, f"{stem}: ")
                found = summarize(images, tissue, min_area_um2=min_area_um2,
                                  progress=part, should_stop=should_stop)
                rows += [{"slide": stem, **s.row()} for s in found]
        summary["rows"] = write_csv(out_csv, rows)
    finally:
        for images in groups.values():
            for im in images:
                im.close()
        if image is not None:
            image.close()
    return summary


def _open_slide(path, mpp):
    from ..io.slides import open_slide

    return open_slide(path, mpp=mpp)


def _spot_rows(images: list[LabelImage], spots: str, slide, progress, should_stop):
    from ..predict.tissue_mask import tissue_mask
    from .spots import hexagonal_spots, read_spaceranger_spots, spot_percentages, spot_rows

    mpp = images[0].mpp or (slide.mpp if slide is not None else None)
    if mpp is None:
        raise OmnisegInputError(f"{images[0].name} has no pixel size, and spots are sized in "
                                "micrometres: give --mpp")
    if spots == "hex":
        where = tissue_mask(slide) if slide is not None else None
        placed = hexagonal_spots(images[0].shape, mpp, where)
    else:
        placed = read_spaceranger_spots(spots, images[0].shape, mpp=mpp)
    pct = spot_percentages(images, placed, progress=progress, should_stop=should_stop)
    return spot_rows(placed, pct, mpp), placed.skipped
