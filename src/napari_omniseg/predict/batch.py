"""Segment many slides to files, on this machine or on a dask.distributed cluster."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from ..errors import failure_sentence

ProgressFn = Callable[[int, int, str], None]
#: Tile rows an engine keeps while masks are written: a band of 512 slide rows is at most four
#: rows of network tiles at 40x, plus the rows shared with the next band.
_WRITING_CACHE_ROWS = 8


def file_stem(path: str | os.PathLike) -> str:
    """The file name without its extension, double ones included: ``a/x.ome.tif`` -> ``x``,
    ``v.nii.gz`` -> ``v``."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif", ".nii.gz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def output_stems(paths: Sequence[str | os.PathLike]) -> list[str]:
    """One distinct output stem per input file, in order: files that share a stem
    (``x/tiny.tif`` and ``y/tiny.ome.tif``) get ``tiny``, ``tiny-2``, ... so that no file's
    masks overwrite another's."""
    taken: set[str] = set()
    stems = []
    for p in paths:
        stem, n = file_stem(p), 1
        while (stem if n == 1 else f"{stem}-{n}") in taken:
            n += 1
        stems.append(stem if n == 1 else f"{stem}-{n}")
        taken.add(stems[-1])
    return stems


def segment_slide_to_files(path: str | os.PathLike, tissues: Sequence[str],
                           magnification: float | None, model, out_dir: str | os.PathLike,
                           mpp: float | None = None, progress: ProgressFn | None = None,
                           stem: str | None = None) -> dict:
    """Segment one slide and write one pyramidal OME-TIFF mask per tissue.

    Files are named ``<stem>_<tissue>.ome.tif``; ``stem`` defaults to the slide's file stem.

    Returns
    -------
    dict
        Per tissue: mask file, working magnification and area in mm².
    """
    from .. import vocab
    from ..io.export import write_mask_pyramids
    from ..io.slides import open_slide
    from .slide import segment_slide

    path = Path(path)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    slide = open_slide(path, mpp=mpp)
    mpp0 = slide.require_mpp()
    # files are written band by band, all tissues in step: the engines keep only the tiles
    # around the band being written, so memory does not grow with the slide
    masks = segment_slide(slide, tissues, magnification, model, cache_rows=_WRITING_CACHE_ROWS)
    stem = stem or file_stem(path)
    outs = {code: Path(out_dir) / f"{stem}_{code}.ome.tif" for code in masks}
    try:
        jobs = [(outs[code], levels, f"{code} mask of {path.name}")
                for code, levels in masks.items()]
        pixels = write_mask_pyramids(jobs, mpp0, progress=progress)
    finally:
        slide.close()
    return {code: {
        "mask": str(outs[code]),
        "magnification": magnification or vocab.tissue(code).optimal_magnification,
        "area_mm2": n * mpp0 * mpp0 / 1e6,
    } for code, n in zip(masks, pixels)}


def _run_one(path, tissues, magnification, model_ref, out_dir, mpp, stem):
    """Cluster task: load the model where the task runs, then segment one slide."""
    from ..models import load_model

    model = load_model(model_ref)
    return segment_slide_to_files(path, tissues, magnification, model, out_dir, mpp, stem=stem)


def segment_slides(paths: Sequence[str | os.PathLike], tissues: Sequence[str],
                   magnification: float | None, model_ref: str | os.PathLike,
                   out_dir: str | os.PathLike, mpp: float | None = None,
                   scheduler: str | None = None, progress: ProgressFn | None = None) -> dict:
    """Segment every slide; a slide that fails is reported and the others go on.

    Parameters
    ----------
    scheduler : str, optional
        Address of a dask.distributed scheduler (or a ``Client``); one task per slide. None runs
        here, one slide after another.

    Returns
    -------
    dict
        ``{"slides": {path: per-tissue results}, "failed": {path: reason}}``.
    """
    slides: dict[str, dict] = {}
    failed: dict[str, str] = {}
    stems = output_stems(paths)
    if scheduler is None:
        from ..models import load_model

        model = load_model(model_ref)
        for i, p in enumerate(paths):
            within = None
            if progress is not None:  # the bar moves inside each slide: 1000 steps a slide
                def within(done, total, message, i=i, name=Path(p).name):
                    progress(i * 1000 + int(1000 * done / max(total, 1)), len(paths) * 1000,
                             f"{name}: {message}")
            try:
                slides[str(p)] = segment_slide_to_files(p, tissues, magnification, model, out_dir,
                                                        mpp, progress=within, stem=stems[i])
            except Exception as e:  # noqa: BLE001 (one slide's failure; the batch goes on)
                failed[str(p)] = failure_sentence(Path(p).name, e)
            if progress is not None:
                progress((i + 1) * 1000, len(paths) * 1000, f"{Path(p).name} done")
        return {"slides": slides, "failed": failed}

    from distributed import Client, as_completed

    if isinstance(scheduler, Client):
        client = scheduler
    else:
        try:
            client = Client(scheduler, timeout=10)
        except (OSError, TimeoutError, ValueError) as e:
            from ..errors import OmnisegInputError, short_reason

            raise OmnisegInputError(f"cannot reach the dask scheduler at {scheduler} "
                                    f"({short_reason(e)}); is it running?") from None
    futures = {client.submit(_run_one, str(p), list(tissues), magnification, str(model_ref),
                             str(out_dir), mpp, stem, pure=False): str(p)
               for p, stem in zip(paths, stems)}
    for i, fut in enumerate(as_completed(futures)):
        p = futures[fut]
        try:
            slides[p] = fut.result()
        except Exception as e:  # noqa: BLE001 (reported per slide; the others go on)
            failed[p] = failure_sentence(Path(p).name, e)
        if progress is not None:
            progress(i + 1, len(paths), f"{Path(p).name} done")
    if not isinstance(scheduler, Client):
        client.close()
    return {"slides": slides, "failed": failed}
