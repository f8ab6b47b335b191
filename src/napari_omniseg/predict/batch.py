"""Segment many slides or volumes to files, on this machine or (slides) on a dask.distributed
cluster."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import failure_sentence
from ..io.atomic import file_stem
from ..run import Progress, ShouldStop, Stopped, report, scaled

#: Tile rows an engine keeps while masks are written: a band of 512 slide rows is at most four
#: rows of network tiles at 40x, plus the rows shared with the next band.
_WRITING_CACHE_ROWS = 8


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
                           mpp: float | None = None, progress: Progress | None = None,
                           stem: str | None = None, should_stop: ShouldStop | None = None,
                           normalise_stain: str = "none") -> dict:
    """Segment one slide and write one pyramidal OME-TIFF mask per tissue, named
    ``<stem>_<tissue>.ome.tif`` (``stem``: the slide's file stem by default). A stop leaves no
    file (:func:`~napari_omniseg.io.export.write_mask_pyramids`). ``normalise_stain``: see
    :func:`~napari_omniseg.predict.slide.make_engines`.

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
    masks = segment_slide(slide, tissues, magnification, model, cache_rows=_WRITING_CACHE_ROWS,
                          normalise_stain=normalise_stain)
    stem = stem or file_stem(path)
    outs = {code: Path(out_dir) / f"{stem}_{code}.ome.tif" for code in masks}
    try:
        jobs = [(outs[code], levels, f"{code} mask of {path.name}")
                for code, levels in masks.items()]
        pixels = write_mask_pyramids(jobs, mpp0, progress=progress, should_stop=should_stop)
    finally:
        slide.close()
    return {code: {
        "mask": str(outs[code]),
        "magnification": magnification or vocab.tissue(code).optimal_magnification,
        "area_mm2": n * mpp0 * mpp0 / 1e6,
    } for code, n in zip(masks, pixels)}


def unfamiliar_warning(path: str | os.PathLike, tissues: Sequence[str],
                       magnification: float | None, model, mpp: float | None = None,
                       normalise_stain: str = "none") -> str:
    """One sentence when the slide looks unlike the model's training data, else ""
    (:mod:`~napari_omniseg.predict.familiarity`; a model without a record is not judged)."""
    from ..io.slides import open_slide
    from .familiarity import check_slide, familiarity_of
    from .slide import make_engines

    if familiarity_of(model) is None:
        return ""
    slide = open_slide(path, mpp=mpp)
    try:
        return check_slide(make_engines(slide, tissues, magnification, model,
                                        normalise_stain=normalise_stain), model)
    finally:
        slide.close()


def _segment_and_check(path, tissues, magnification, model, out_dir, mpp, stem,
                       normalise_stain, progress=None, should_stop=None) -> tuple[dict, str]:
    """One slide's mask files and the warning that it looks unlike the training data."""
    result = segment_slide_to_files(path, tissues, magnification, model, out_dir, mpp,
                                    progress=progress, stem=stem, should_stop=should_stop,
                                    normalise_stain=normalise_stain)
    return result, unfamiliar_warning(path, tissues, magnification, model, mpp,
                                      normalise_stain)


def _run_one(path, tissues, magnification, model_ref, out_dir, mpp, stem, normalise_stain):
    """Cluster task: load the model where the task runs, then segment one slide."""
    from ..checkpoints import load_model

    return _segment_and_check(path, tissues, magnification, load_model(model_ref), out_dir,
                              mpp, stem, normalise_stain)


def segment_slides(paths: Sequence[str | os.PathLike], tissues: Sequence[str],
                   magnification: float | None, model_ref: str | os.PathLike,
                   out_dir: str | os.PathLike, mpp: float | None = None,
                   scheduler: str | None = None, progress: Progress | None = None,
                   should_stop: ShouldStop | None = None, normalise_stain: str = "none"
                   ) -> dict:
    """Segment every slide; a slide that fails is reported and the others go on.

    Parameters
    ----------
    paths : sequence of path-like
        The slides.
    tissues : sequence of str
        Tissue codes, or ``("all",)``.
    magnification : float, optional
        One working magnification for all tissues; None: each tissue's optimal one.
    model_ref : str or path-like
        A checkpoint path or a bundled name (each worker loads it).
    out_dir : str or path-like
        Where the masks and each slide's summary go.
    mpp : float, optional
        µm per pixel for slides that do not say.
    scheduler : str, optional
        Address of a dask.distributed scheduler (or a ``Client``); one task per slide. None runs
        here, one slide after another, keeping the run contract.
    progress, should_stop : callable, optional
        The run contract: a stop ends the batch and leaves no partial file.
    normalise_stain : str
        "reinhard" or "macenko": each slide's colours mapped to the model's training stain
        first; "none" (default): as they are.

    Returns
    -------
    dict
        ``{"slides": {path: per-tissue results}, "failed": {path: reason}, "warnings": {path:
        sentence}}``, the warnings for slides that look unlike the model's training data
        (:mod:`~napari_omniseg.predict.familiarity`).
    """
    slides: dict[str, dict] = {}
    failed: dict[str, str] = {}
    stems = output_stems(paths)
    if scheduler is None:
        from ..checkpoints import load_model

        model = load_model(model_ref)
        for i, p in enumerate(paths):
            # the bar moves inside each slide: 1000 steps a slide
            within = scaled(progress, i * 1000, 1000, len(paths) * 1000, f"{Path(p).name}: ")
            _each_file(p, slides, failed, functools.partial(
                _segment_and_check, p, tissues, magnification, model, out_dir, mpp,
                stems[i], normalise_stain, progress=within, should_stop=should_stop))
            report(progress, (i + 1) * 1000, len(paths) * 1000, f"{Path(p).name} done")
        return _with_warnings(slides, failed)

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
                             str(out_dir), mpp, stem, str(normalise_stain), pure=False): str(p)
               for p, stem in zip(paths, stems)}
    for i, fut in enumerate(as_completed(futures)):
        p = futures[fut]
        _each_file(p, slides, failed, fut.result)
        report(progress, i + 1, len(paths), f"{Path(p).name} done")
    if not isinstance(scheduler, Client):
        client.close()
    return _with_warnings(slides, failed)


def _with_warnings(checked: dict, failed: dict) -> dict:
    """The batch summary from ``{path: (results, warning)}``: ``slides``, ``failed`` and
    ``warnings`` (the slides that look unlike the model's training data)."""
    slides = {p: r for p, (r, _) in checked.items()}
    warnings = {p: w for p, (_, w) in checked.items() if w}
    return {"slides": slides, "failed": failed, "warnings": warnings}


def _each_file(path, results: dict, failed: dict, work) -> None:
    """``results[path] = work()``; a failure is one sentence in ``failed`` and the batch goes
    on. A stop (Ctrl-C, Stop) is not a failure: it ends the batch."""
    try:
        results[str(path)] = work()
    except Exception as e:
        if isinstance(e, Stopped):
            raise
        failed[str(path)] = failure_sentence(Path(path).name, e)


def segment_volume_to_files(path: str | os.PathLike, regions: Sequence[str], model,
                            out_dir: str | os.PathLike, stem: str, flips: bool = True,
                            clean_up: bool = True, progress: Progress | None = None,
                            should_stop: ShouldStop | None = None) -> dict:
    """Segment one volume and write one NIfTI mask per region (``<stem>_<region>.nii.gz``).

    Returns
    -------
    dict
        Per region: mask file and volume in ml.
    """
    import numpy as np

    from ..io.export import save_nifti
    from ..io.volumes import open_volume
    from .volume import segment_volume

    vol = open_volume(path)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    masks = segment_volume(vol, regions, model, flips=flips, clean_up=clean_up,
                           progress=progress, should_stop=should_stop)
    voxel_ml = float(np.prod(vol.spacing)) / 1000.0
    result = {}
    for code, m in masks.items():
        arr = np.asarray(m.compute(scheduler="synchronous"))
        out = save_nifti(arr, vol.affine, Path(out_dir) / f"{stem}_{code}.nii.gz", np.uint8)
        result[code] = {"mask": str(out), "volume_ml": float(arr.sum()) * voxel_ml}
    return result


def segment_volumes(paths: Sequence[str | os.PathLike], regions: Sequence[str],
                    model_ref, out_dir: str | os.PathLike, flips: bool = True,
                    clean_up: bool = True, progress: Progress | None = None,
                    should_stop: ShouldStop | None = None) -> dict:
    """Segment every volume (:func:`segment_volume_to_files`); a volume that fails is reported
    and the others go on.

    Parameters
    ----------
    paths : sequence of path-like
        The volumes.
    regions : sequence of str
        Region codes, or ``("all",)``.
    model_ref : str or path-like
        A checkpoint path or a bundled name.
    out_dir : str or path-like
        Where the masks and each volume's summary go.
    flips, clean_up : bool
        As :func:`~napari_omniseg.segment_volume`'s.
    progress, should_stop : callable, optional
        The run contract: a stop ends the batch and leaves no partial file.

    Returns
    -------
    dict
        ``{"volumes": {path: per-region results}, "failed": {path: reason}}``.
    """
    from ..checkpoints import load_model

    model = load_model(model_ref)
    volumes: dict[str, dict] = {}
    failed: dict[str, str] = {}
    for i, (p, stem) in enumerate(zip(paths, output_stems(paths))):
        within = scaled(progress, i * 1000, 1000, len(paths) * 1000, f"{Path(p).name}: ")
        _each_file(p, volumes, failed, functools.partial(
            segment_volume_to_files, p, regions, model, out_dir, stem, flips, clean_up, within,
            should_stop))
        report(progress, (i + 1) * 1000, len(paths) * 1000, f"{Path(p).name} done")
    return {"volumes": volumes, "failed": failed}
