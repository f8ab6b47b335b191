"""Decision thresholds per tissue, chosen on annotated patches (calibration).

A renal model cuts each tissue's foreground probability at 0.5. A model that has seen few real
examples of a tissue, or one whose weights are a mean of several runs, is often right about
*where* a structure is and too unsure to cross 0.5 on real tissue (vessels, above all: the
runs of docs/training.md). Calibration scores each tissue's Dice on annotated rows at a few
thresholds and keeps, per tissue, the best one when it beats 0.5 by a clear margin. The
thresholds are folded into the network's logits
(:meth:`~napari_omniseg.nets.omniseg.OmniSegPlus.set_thresholds`), so Segment, Correct,
evaluation and export need nothing new, and the checkpoint's metadata records them.

Choose thresholds on rows that are not the ones you score on afterwards (ki-dev: the
``train`` rows, never ``val``).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import vocab
from ..errors import OmnisegInputError
from ..run import Progress, ShouldStop, check_stop, report

#: The thresholds tried (0.5 is Segment's without calibration).
GRID: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
#: Dice a threshold must gain over 0.5 on a tissue's rows to replace it: smaller gains on a
#: handful of patches are noise, and each change is a bet on data the rows do not show.
MIN_GAIN = 0.02


def choose_thresholds(model: Any, annotations: list, grid: tuple[float, ...] = GRID,
                      min_gain: float = MIN_GAIN, bf16: bool | None = None,
                      progress: Progress | None = None,
                      should_stop: ShouldStop | None = None) -> dict[str, dict]:
    """Each annotated tissue's Dice at every threshold of ``grid``, and the one chosen.

    Parameters
    ----------
    model : OmniSegPlus
        The renal model; its own thresholds are ignored (a copy's raw probabilities are cut)
        and it is not changed.
    annotations : list of Annotation
        Fully annotated patches (:func:`~napari_omniseg.train.annotations.read_manifest`);
        each is segmented for its tissue at its magnification, as evaluation does.
    grid : tuple of float
        Thresholds to try, each in (0, 1); 0.5 is always tried.
    min_gain : float
        A tissue keeps 0.5 unless its best threshold's mean Dice beats it by this much.
    bf16, progress, should_stop
        Precision (None: the device's default) and the run contract (:mod:`napari_omniseg.run`).

    Returns
    -------
    dict
        ``{code: {"threshold": p, "dice": {str(p): mean Dice}, "patches": n}}`` for every
        tissue with rows.

    Raises
    ------
    OmnisegInputError
        No annotations, or a threshold outside (0, 1).
    """
    from ..checkpoints import model_and_precision
    from ..predict.tiling import predict_array
    from .metrics import dice

    if not annotations:
        raise OmnisegInputError("calibration needs annotated patches; the rows given are empty")
    grid = tuple(sorted(set(grid) | {0.5}))
    if not all(0.0 < p < 1.0 for p in grid):
        raise OmnisegInputError(f"thresholds must lie strictly between 0 and 1, not {grid}")
    # a copy with raw probabilities: the model handed in may be segmenting meanwhile
    raw = copy.deepcopy(model)
    raw.set_thresholds({})
    raw, bf16 = model_and_precision(raw, "renal", bf16)
    scores: dict[str, dict[float, list[float]]] = {}
    for i, a in enumerate(annotations):
        check_stop(should_stop)
        cond = (vocab.tissue(a.tissue).task_id, vocab.scale_id(a.magnification))
        prob = predict_array(raw, a.image, [cond], tile=256, overlap=64, bf16=bf16)[0]
        truth = a.mask & a.known
        for p in grid:
            scores.setdefault(a.tissue, {}).setdefault(p, []).append(
                dice((prob > p) & a.known, truth))
        report(progress, i + 1, len(annotations), f"patch {i + 1} of {len(annotations)}")
    out = {}
    for code in [c for c in vocab.TISSUE_CODES if c in scores]:
        means = {p: float(np.mean(v)) for p, v in scores[code].items()}
        best = max(grid, key=lambda p: (means[p], -abs(p - 0.5)))
        chosen = best if means[best] - means[0.5] >= min_gain else 0.5
        out[code] = {"threshold": chosen, "dice": {f"{p:g}": round(m, 4) for p, m in
                                                   means.items()},
                     "patches": len(scores[code][0.5])}
    return out


def calibrated_copy(model: Any, table: dict[str, dict]) -> Any:
    """A copy of ``model`` cutting each tissue of ``table`` at its chosen threshold (the other
    tissues keep theirs); ``model`` itself is not changed (it may be the one in use)."""
    out = copy.deepcopy(model)
    out.set_thresholds({**model.thresholds(),
                        **{code: row["threshold"] for code, row in table.items()}})
    return out


def save_calibrated(model: Any, out: str | os.PathLike, table: dict[str, dict], rows: str,
                    grid: tuple[float, ...] = GRID, min_gain: float = MIN_GAIN) -> Path:
    """Write a calibrated model with its starting model's training facts and the calibration
    record (``rows``: what the thresholds were chosen on, in words)."""
    from ..checkpoints import save_checkpoint, training_facts

    record = {"rows": rows, "grid": list(grid), "min_gain": min_gain, "tissues": table}
    meta = training_facts(getattr(model, "omniseg_metadata", {}) or {})
    return save_checkpoint(model, out, **{**meta, "calibration": record})


def calibrate_checkpoint(model_path: str | os.PathLike, manifest: str | os.PathLike,
                         out: str | os.PathLike, split: str = "train",
                         grid: tuple[float, ...] = GRID, min_gain: float = MIN_GAIN,
                         progress: Progress | None = None,
                         should_stop: ShouldStop | None = None) -> dict[str, dict]:
    """Choose a renal checkpoint's thresholds on a manifest's rows and write the result.

    The weights, the training facts and the familiarity record are kept; the metadata gains
    ``thresholds`` (the tissues moved off 0.5) and ``calibration`` (the rows, the grid and
    every tissue's Dice at each threshold). Tissues without rows keep the thresholds they had.

    Returns
    -------
    dict
        :func:`choose_thresholds`'s table.

    Raises
    ------
    OmnisegInputError
        A model that is not a renal segmenter, or a split the manifest does not have.
    """
    from ..checkpoints import load_model
    from .annotations import read_manifest

    model = load_model(model_path, device="cpu")
    check_calibratable(model, Path(model_path).name)
    groups = read_manifest(manifest)
    if not groups.get(split):
        raise OmnisegInputError(f"{Path(manifest).name} has no {split!r} rows to calibrate on "
                                f"(it has: {', '.join(sorted(groups)) or 'none'})")
    table = choose_thresholds(model, groups[split], grid=grid, min_gain=min_gain,
                              progress=progress, should_stop=should_stop)
    save_calibrated(calibrated_copy(model, table), out, table,
                    f"the {split!r} rows of {Path(manifest).name} ({len(groups[split])} "
                    "patches)", grid, min_gain)
    return table


def check_calibratable(model: Any, name: str) -> None:
    """Refuse, in one sentence, a model without per-tissue thresholds."""
    if not hasattr(model, "set_thresholds"):
        raise OmnisegInputError(f"{name} has no per-tissue thresholds to choose: only a "
                                "kidney segmenter without stroke corrections has them")
