"""One model from several: the mean of their weights (a "model soup").

Models fine-tuned from one starting point usually lie in one basin of the loss, and the mean of
their weights tends to keep what each learnt while smoothing what each fitted to its own run
(Wortsman et al., ICML 2022). It costs nothing at inference: one network, the same size and
speed. Models of different architectures, widths or unrelated starting points do not average
into anything useful; the first two are refused here, the third is the caller's to know.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import OmnisegInputError

#: Metadata of a single run that no longer describes the mean: the familiarity record was
#: fitted in the features of one network (refit it on the average; docs/training.md), and the
#: run's own bookkeeping (steps, losses, times) belongs to that run, as do the Dice figures
#: behind its decision thresholds.
RUN_ONLY = ("familiarity", "calibration", "steps", "seconds", "data_seconds",
            "training_seconds", "stopped", "final_loss", "final_losses", "device", "stored_as",
            "format", "architecture", "vocabulary", "created", "napari_omniseg_version")


def average_checkpoints(models: list[str | os.PathLike], out: str | os.PathLike,
                        half: bool = False, weights: list[float] | None = None) -> Path:
    """Write a checkpoint whose weights are the (weighted) mean of ``models``' weights.

    Parameters
    ----------
    models : list of str or path-like
        Two or more product checkpoints (or bundled names) of one architecture and size.
    out : str or path-like
        The checkpoint to write (complete or absent).
    half : bool
        Store the weights as float16 (half the file), as the bundled models are.
    weights : list of float, optional
        One non-negative weight per model (normalised to sum 1); None is the uniform mean.
        A starting model and its fine-tuned copy mixed half and half keep much of what the
        start knew about data the fine-tuning rows lacked (Wortsman et al., CVPR 2022,
        "robust fine-tuning"; docs/training.md measures it).

    Returns
    -------
    pathlib.Path
        ``out``. Its metadata lists every model averaged with what it was trained on
        (``averaged_from``); the recipe fields every model shares are kept, the per-run ones
        (:data:`RUN_ONLY`) dropped. Decision thresholds
        (:mod:`~napari_omniseg.train.calibrate`) are kept when every model has the same ones,
        else reset to 0.5 (they were chosen for other weights).

    Raises
    ------
    OmnisegInputError
        Fewer than two models, weights that do not match the models (count, sign, all zero), or
        models whose weights do not match (another architecture or width).
    """
    from ..checkpoints import load_model, read_metadata, save_checkpoint
    from ..nets.registry import architecture_of

    if len(models) < 2:
        raise OmnisegInputError("averaging needs at least two models")
    share = _shares(weights, len(models))
    nets = [load_model(m, device="cpu") for m in models]
    first = nets[0]
    arch = architecture_of(first)
    states = [n.state_dict() for n in nets]
    for m, n, s in zip(models[1:], nets[1:], states[1:]):
        if architecture_of(n).name != arch.name or not _same_tensors(s, states[0]):
            raise OmnisegInputError(f"{Path(m).name} is not the same network as "
                                    f"{Path(models[0]).name} (architecture or width differ); "
                                    "only models of one kind can be averaged")
    first.load_state_dict(_weighted_mean(states, share))
    if len({json.dumps(_thresholds(n), sort_keys=True) for n in nets}) > 1:
        first.set_thresholds({})  # chosen for other weights: calibrate the mean anew
    metas = [read_metadata(m) for m in models]
    sources = [{"model": Path(m).name, **{k: meta[k] for k in ("trained_on", "init", "steps",
                                                                "seconds") if k in meta},
                **({"weight": round(w, 6)} if weights is not None else {})}
               for m, meta, w in zip(models, metas, share)]
    # a recipe field says something of the average only when every model shares it
    keep = {k: v for k, v in metas[0].items()
            if k not in RUN_ONLY and all(m.get(k) == v for m in metas[1:])}
    trained_on = "; ".join(f"{s['model']}: {s.get('trained_on', 'not recorded')}"
                           for s in sources)
    return save_checkpoint(first, out, half=half, **{
        **keep, "averaged_from": sources,
        "trained_on": f"the {'weighted ' if weights is not None else ''}mean of the weights "
                      f"of {len(models)} models ({trained_on})"})


def blend_with_start(model: Any, start: Any, keep: float) -> None:
    """Mix a share ``keep`` of ``start``'s weights back into ``model`` (in place).

    Fine-tuning on a few rows fits them and forgets what the start knew of data unlike them
    (other stains, tissues not painted). The blend of a start and its fine-tuned copy keeps
    much of both (Wortsman et al., CVPR 2022, "Robust fine-tuning of zero-shot models"):
    on real kidney, fine-tuning on H&E rows alone cost PAS patches 0.08 Dice and half-and-half
    kept all but 0.004 of it (docs/finetuning.md).

    Parameters
    ----------
    model : torch.nn.Module
        The fine-tuned network, changed in place.
    start : torch.nn.Module
        The network it was fine-tuned from (same architecture), unchanged.
    keep : float
        The start's share, from 0 (``model`` as it is) to below 1.

    Raises
    ------
    OmnisegInputError
        ``keep`` outside [0, 1) or networks whose weights do not match.
    """
    check_start_share(keep)
    mine, theirs = model.state_dict(), start.state_dict()
    if not _same_tensors(mine, theirs):
        raise OmnisegInputError("the fine-tuned model is not the same network as its start")
    if keep:
        theirs = {k: v.to(mine[k].device) for k, v in theirs.items()}  # a GPU run's copy
        model.load_state_dict(_weighted_mean([mine, theirs], [1.0 - keep, keep]))


def check_start_share(keep: float) -> None:
    """Refuse a share of the start outside [0, 1) in one sentence (callers check it before
    training, not after)."""
    if not 0.0 <= keep < 1.0:
        raise OmnisegInputError("the share of the starting model kept must be from 0 to "
                                f"below 1, not {keep}")


def _same_tensors(a: dict, b: dict) -> bool:
    """Whether two state dicts hold tensors of the same names and shapes."""
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)


def _weighted_mean(states: list[dict], share: list[float]) -> dict:
    """The state whose floating-point tensors are the weighted sums of ``states``' (in float64,
    back to their dtype); other tensors (counters) are the first state's."""
    return {k: sum(w * s[k].double() for w, s in zip(share, states)).to(v.dtype)
            if v.is_floating_point() else v for k, v in states[0].items()}


def _shares(weights: list[float] | None, n: int) -> list[float]:
    """Each model's share of the mean, summing to 1."""
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise OmnisegInputError(f"{len(weights)} weights for {n} models: give one per model")
    if any(not w >= 0 for w in weights) or sum(weights) <= 0:
        raise OmnisegInputError("weights must be zero or more and not all zero")
    total = float(sum(weights))
    return [float(w) / total for w in weights]


def drops_familiarity(models: list[str | os.PathLike]) -> bool:
    """Whether the sources carry a familiarity record (Segment's out-of-distribution
    warning), which their mean has not: the caller tells the person to refit it."""
    from ..checkpoints import read_metadata

    return bool(read_metadata(models[0]).get("familiarity"))


def _thresholds(net: Any) -> dict:
    """A network's decision thresholds ({} for one without them)."""
    return net.thresholds() if hasattr(net, "thresholds") else {}
