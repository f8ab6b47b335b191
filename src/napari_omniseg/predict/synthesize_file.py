"""``omniseg synthesize``: a mask file in, a pyramidal OME-TIFF of synthetic histology out."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import vocab
from ..choices import GENERATOR
from ..errors import OmnisegInputError
from ..run import Progress, ShouldStop

#: The largest mask synthesised (a 64k x 64k slide region; a 12 GB RGB image).
MAX_SYNTHESIS_PIXELS = 4_000_000_000


def vocabulary_labels(images: list) -> Any:
    """One vocabulary label image (lazy) from mask images: a one-tissue 0/1 mask becomes its
    tissue's value; several masks of one slide are painted in the vocabulary's order, so a
    tuft is drawn over its capsule."""
    import dask.array as da

    out = None
    for im in sorted(images, key=lambda i: vocab.tissue(i.tissue).task_id if i.tissue else -1):
        level0 = da.asarray(im.level0)
        # a painted image keeps its own type: a cast would make 258 into 2 (PT) and -1 into
        # 255, and the values are checked against the vocabulary as they are
        value = (level0 > 0).astype("uint8") * (vocab.tissue(im.tissue).task_id + 1) \
            if im.tissue else level0
        out = value if out is None else da.where(value > 0, value, out)
    return out


def synthesize_file(mask: str | os.PathLike, out: str | os.PathLike, stain: str,
                    magnification: float | None = None, seed: int = 0,
                    generator: str | os.PathLike = GENERATOR, mpp: float | None = None,
                    progress: Progress | None = None, should_stop: ShouldStop | None = None
                    ) -> dict:
    """Synthesise histology for a mask file and write it as a pyramidal OME-TIFF with the
    mask's shape and pixel size.

    Parameters
    ----------
    mask : path-like
        A painted label image (TIFF/PNG: 1 DT, 2 PT, 3 CAP, 4 TUFT, 5 VES, 6 PTC), a mask
        written by ``omniseg segment``, or the simulator's six-mask file.
    out : str or path-like
        The OME-TIFF to write (complete or not at all).
    stain : str
        The stain to synthesise (``"he"``, ``"pas"``, ``"sil"``, ``"tri"``).
    magnification : float, optional
        Objective power of the mask's pixels; default from its pixel size.
    mpp : float, optional
        µm per pixel when the file does not say.
    seed : int
        The generator's noise; same seed, same image.
    generator : str or path-like
        A generator checkpoint, the bundled one ("synthesis"), or "prior": the simulator's
        anatomy drawn inside the painted regions, without a learned model.
    progress, should_stop : callable, optional
        The run contract, while the image is written.

    Returns
    -------
    dict
        Output file, shape, stain, magnification, seed and generator.
    """
    from ..checkpoints import load_generator
    from ..io.export import write_rgb_pyramid
    from ..io.labels import open_labels
    from .synthesize import ANATOMY_PRIOR, synthesize

    images = open_labels(mask, mpp=mpp)
    try:
        pixel = images[0].mpp
        drawn_at = pixel if magnification is None else None  # a chosen power wins
        if magnification is None:
            if pixel is None:
                raise OmnisegInputError(f"{Path(mask).name} has no pixel size: give "
                                        "--magnification (or --mpp)")
            magnification = min(vocab.MAGNIFICATIONS, key=lambda m: abs(
                vocab.magnification_of_mpp(pixel) / m - 1))
        h, w = images[0].shape
        if h * w > MAX_SYNTHESIS_PIXELS:
            raise OmnisegInputError(
                f"{Path(mask).name} is {w} x {h} pixels; synthesising more than "
                f"{MAX_SYNTHESIS_PIXELS / 1e9:.0f} gigapixels would take days on a CPU and fill "
                "the disk: crop the mask to the region you need")
        g = (ANATOMY_PRIOR if str(generator) == ANATOMY_PRIOR
             else load_generator(generator, device="cpu"))
        labels = vocabulary_labels(images)
        image = synthesize(g, labels, stain, magnification, seed=seed, name=Path(mask).name,
                           mpp=drawn_at)
        write_rgb_pyramid(out, image, pixel or vocab.mpp_of_magnification(magnification),
                          name=f"synthetic {vocab.STAINS[vocab.stain(stain)]} from "
                               f"{Path(mask).name}, seed {seed}",
                          progress=progress, should_stop=should_stop)
    finally:
        for im in images:
            im.close()
    return {"image": str(out), "shape": list(labels.shape), "stain": stain,
            "magnification": magnification, "seed": seed,
            "generator": getattr(g, "omniseg_source", str(generator))}
