"""The robot user of interactive segmentation: given the truth, each stroke is a disk at the
interior point of the largest current error region (a missed region gets a tissue stroke, a
false one a background stroke), followed by an update (:class:`~.correct.Corrector`).

Strokes are learned on one patch and scored on that patch's known pixels, from the given model
each time; the latency of an update is from the stroke to the updated mask.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .. import vocab
from ..run import Progress, ShouldStop, report
from .correct import BACKGROUND, TISSUE, UNKNOWN, CorrectionOptions, Corrector
from .metrics import dice

#: Stroke counts at which the robot's Dice is reported (those up to the asked number).
REPORTED = (0, 1, 2, 5, 10, 20, 50, 100)


def next_stroke(pred: np.ndarray, truth: np.ndarray, known: np.ndarray, radius: int = 4
                ) -> tuple[np.ndarray, int] | None:
    """Where the robot paints next, and with which label.

    Parameters
    ----------
    pred, truth, known : numpy.ndarray
        ``(H, W)`` bool: the current mask, the true mask, where the truth is known.
    radius : int
        Disk radius in pixels; the disk is kept inside its error region, so every painted
        pixel has the label painted.

    Returns
    -------
    (numpy.ndarray, int) or None
        The painted pixels ``(H, W)`` bool and :data:`~.correct.TISSUE` or
        :data:`~.correct.BACKGROUND`; None when nothing known is wrong.
    """
    from scipy import ndimage

    best: tuple[int, np.ndarray, int] | None = None
    for wrong, label in ((truth & ~pred & known, TISSUE), (pred & ~truth & known, BACKGROUND)):
        regions, n = ndimage.label(wrong)
        if not n:
            continue
        sizes = np.bincount(regions.ravel())[1:]
        k = int(np.argmax(sizes))
        if best is None or sizes[k] > best[0]:
            best = (int(sizes[k]), regions == k + 1, label)
    if best is None:
        return None
    _, region, label = best
    inside = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    cy, cx = np.unravel_index(int(np.argmax(inside)), region.shape)
    yy, xx = np.ogrid[:region.shape[0], :region.shape[1]]
    disk = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2) & region
    return disk, label


def robot_patch(corrector: Corrector, key: Any, truth: np.ndarray, known: np.ndarray,
                strokes: int, radius: int = 4, should_stop: ShouldStop | None = None
                ) -> tuple[list[float], list[float]]:
    """Dice after 0..``strokes`` strokes on one kept view, and each update's seconds."""
    labels = np.full(truth.shape, UNKNOWN, np.int8)
    pred = corrector.probability(key, corrector.update()) > 0.5
    dices, seconds = [dice(pred & known, truth & known)], []
    for _ in range(strokes):
        stroke = next_stroke(pred, truth, known, radius)
        if stroke is None:  # nothing left to correct: the mask stays
            dices.append(dices[-1])
            continue
        t0 = time.perf_counter()
        disk, label = stroke
        labels[disk] = label
        corrector.set_strokes(key, labels)
        pred = corrector.probability(key, corrector.update(should_stop)) > 0.5
        seconds.append(time.perf_counter() - t0)
        dices.append(dice(pred & known, truth & known))
    return dices, seconds


def robot_evaluate(model: Any, annotations: list, strokes: int, *, radius: int = 4,
                   options: CorrectionOptions | None = None, progress: Progress | None = None,
                   should_stop: ShouldStop | None = None) -> dict:
    """The robot user on every annotated patch, each from ``model``.

    Parameters
    ----------
    model : torch.nn.Module or str
        The model each patch starts from (a checkpoint path or bundled name too).
    annotations : list of Annotation
        Patches with their truth and known pixels.
    strokes : int
        Strokes per patch.
    radius : int
        Stroke disk radius in working pixels.
    options : CorrectionOptions, optional
        How each update learns.
    progress, should_stop : callable, optional
        The run contract, once per patch.

    Returns
    -------
    dict
        ``{"strokes": [0, 1, 2, 5, ...], "mean_dice": [...], "per_tissue": {code: [...]},
        "latency_s": {"median": m, "max": x}, "radius_px": r, "patches": n}``: means over
        patches after each stroke count (per tissue, then over tissues).
    """
    from ..checkpoints import model_and_precision

    model, bf16 = model_and_precision(model, "renal", None)
    counts = [c for c in REPORTED if c <= strokes]
    if strokes not in counts:
        counts.append(strokes)
    per_tissue: dict[str, list[list[float]]] = {}
    seconds: list[float] = []
    for i, a in enumerate(annotations):
        report(progress, i, len(annotations), f"{a.name or a.tissue}: robot strokes")
        corrector = Corrector(model, a.tissue, a.magnification, options, bf16=bf16)
        corrector.add_view(0, a.image, should_stop)
        dices, took = robot_patch(corrector, 0, a.mask, a.known, strokes, radius, should_stop)
        per_tissue.setdefault(a.tissue, []).append([dices[c] for c in counts])
        seconds += took
    report(progress, len(annotations), len(annotations), "robot done")
    table = {code: [round(float(v), 4) for v in np.mean(rows, axis=0)]
             for code in vocab.TISSUE_CODES if (rows := per_tissue.get(code))}
    mean = np.mean(list(table.values()), axis=0) if table else np.full(len(counts), np.nan)
    return {"strokes": counts, "mean_dice": [round(float(v), 4) for v in mean],
            "per_tissue": table,
            "latency_s": {"median": round(float(np.median(seconds)), 3) if seconds else None,
                          "max": round(float(np.max(seconds)), 3) if seconds else None},
            "radius_px": radius, "patches": len(annotations)}
