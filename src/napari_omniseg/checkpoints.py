"""Checkpoints (data, never code), bundled weights, and the device models run on.

A product checkpoint is one file holding ``{"state_dict": ..., "metadata": "<json>"}`` saved
with ``torch.save`` and read with ``torch.load(..., weights_only=True)``. The metadata says which
architecture and vocabulary the weights belong to, what they were trained on, and when. The
authors' Omni-Seg+ checkpoints (a bare state_dict) load too.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .choices import GENERATOR
from .errors import OmnisegInputError, short_reason
from .nets.registry import architecture, architecture_of
from .tasks import TASKS, task, task_of_model

if TYPE_CHECKING:  # torch loads only when a model does
    import torch

FORMAT = "napari-omniseg-checkpoint/1"
#: Bundled checkpoints, by name (each task's), inside the package's ``weights/`` folder.
#: The histology generator (docs/synthesis.md) is bundled beside the segmenters.
BUNDLED = {**{t.name: t.bundled_file for t in TASKS.values()},
           GENERATOR: "pyramid_gan_renal.pt"}


def pick_device(prefer: str | None = None) -> torch.device:
    """CUDA if present, else Apple MPS, else CPU; ``prefer`` ("cpu", "cuda", ...) overrides."""
    import torch

    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX). Without it
    PyTorch emulates bfloat16, and some layers (the generator's) run many times slower than in
    float32."""
    import torch

    checks = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported",
                                                    "_is_amx_tile_supported")]
    return any(bool(c()) for c in checks if c is not None)


def default_bf16(where: Any) -> bool:
    """Whether work on ``where`` (a torch device, or a module: the device of its weights)
    runs under bfloat16 autocast by default: on a CPU that computes bfloat16 in hardware
    (about 2x faster there); not on a CPU that emulates it (8x slower than float32 for the
    segmenter there), nor on GPUs (float32 unless asked)."""
    if hasattr(where, "parameters"):
        where = next(where.parameters()).device
    return getattr(where, "type", str(where)) == "cpu" and cpu_has_native_bf16()


def save_checkpoint(model: Any, path: str | os.PathLike, half: bool = False,
                    **metadata: Any) -> Path:
    """Write a registered network's weights and metadata to one file (complete or absent).

    ``metadata`` are JSON-serialisable facts (what it was trained on, recipe, base model);
    the architecture, its settings and vocabulary come from the architecture registry.
    ``half`` stores floating-point weights as float16 (half the file; loaded back into float32
    parameters). A NaN or infinite weight (training diverged) is an
    :class:`~napari_omniseg.errors.OmnisegInputError`: such a model answers nothing.
    """
    import torch

    path = Path(path)
    if any(v.is_floating_point() and not bool(torch.isfinite(v).all())
           for v in model.state_dict().values()):
        raise OmnisegInputError(f"not saving {path.name}: training diverged (some weights are "
                                "NaN or infinite); try a lower learning rate")
    arch = architecture_of(model)
    meta = {
        "format": FORMAT,
        "architecture": arch.name,
        "vocabulary": arch.vocabulary(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "napari_omniseg_version": __version__,
        **metadata,
        **arch.settings(model),  # the network's own, over any copied from another checkpoint
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        meta["stored_as"] = "float16"
    from .io.atomic import written_atomically

    # serialised in memory first (a few MB), then written as plain bytes: torch's own writer
    # reports a full disk as "[enforce fail at inline_container.cc]", the OS as errno 28
    buffer = io.BytesIO()
    torch.save({"state_dict": state, "metadata": json.dumps(meta)}, buffer)
    with written_atomically(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return path


def save_half_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Re-save a product checkpoint with float16 weights and the same metadata (for bundling)."""
    return resave_checkpoint(src, dst, half=True)


def resave_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, half: bool | None = None,
                      **changes: Any) -> Path:
    """Re-save a product checkpoint with the same weights and its training facts, updated by
    ``changes`` (a familiarity record, say); ``half``: float16 weights (None: as stored).
    What :func:`save_checkpoint` writes itself (format, architecture, vocabulary, settings,
    dates, version) is written anew."""
    meta = read_metadata(src)
    model = load_model(src, device="cpu")
    half = meta.get("stored_as") == "float16" if half is None else half
    return save_checkpoint(model, dst, half=half, **{**training_facts(meta), **changes})


def training_facts(meta: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's metadata without what :func:`save_checkpoint` writes anew (format,
    architecture, vocabulary, dates, version, storage): what to carry into a re-saved copy."""
    return {k: v for k, v in meta.items()
            if k not in ("format", "architecture", "vocabulary", "created",
                         "napari_omniseg_version", "stored_as")}


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata block of a product checkpoint or bundled model ({} for an authors'
    checkpoint)."""
    file = _resolve(path)
    blob = _load_blob(file)
    return _metadata(blob, file) if _is_product(blob) else {}


def _metadata(blob: dict, path: Path) -> dict:
    """A product checkpoint's metadata block, or one sentence when it is not a JSON object."""
    try:
        meta = json.loads(blob["metadata"])
    except (TypeError, ValueError):
        meta = None
    if not isinstance(meta, dict):
        raise OmnisegInputError(f"{path.name} has damaged metadata (not a JSON object); is it "
                                "a checkpoint written by omniseg?")
    return meta


def load_model(path_or_name: str | os.PathLike, device: str | None = None) -> Any:
    """Load a segmentation model for inference.

    Parameters
    ----------
    path_or_name : str or path-like
        A bundled model's name (``"renal"``), a product checkpoint, or an authors' Omni-Seg+
        checkpoint (a state_dict of the scale-aware model).
    device : str, optional
        Where to put the model; default :func:`pick_device`.

    Returns
    -------
    torch.nn.Module
        In eval mode; its ``omniseg_metadata`` attribute holds the checkpoint's metadata and
        ``omniseg_source`` the file's name.
    """
    path = _resolve(path_or_name)
    blob = _load_blob(path)
    if _is_product(blob):
        meta = _metadata(blob, path)
        try:
            model = architecture(str(meta.get("architecture"))).build(meta)
        except OmnisegInputError as e:
            raise OmnisegInputError(f"{path.name}: {e}") from None
        except (ValueError, TypeError, RuntimeError) as e:  # a negative width, a wrong type
            raise OmnisegInputError(f"{path.name} describes a network that cannot be built "
                                    f"({short_reason(e)}); its metadata is damaged") from None
        state = blob["state_dict"]
    else:  # the authors' Omni-Seg+ checkpoints are bare state_dicts
        from .nets.omniseg import clean_author_state_dict

        arch = architecture("omniseg_plus")
        meta = {"architecture": arch.name, "source": "authors' checkpoint",
                "vocabulary": arch.vocabulary()}
        model = arch.build({})
        state = clean_author_state_dict(blob)
    if any(hasattr(v, "is_floating_point") and v.is_floating_point()
           and not bool(v.isfinite().all()) for v in state.values()):
        raise OmnisegInputError(f"{path.name} holds NaN or infinite weights (its training "
                                "diverged); it cannot segment anything")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes that do not fit
        missing, unexpected = [str(e).split("\n")[1].strip()[:100]], []
    if missing or unexpected:
        raise OmnisegInputError(
            f"{path.name} does not fit the {meta['architecture']} network "
            f"({len(missing)} weights missing, e.g. {missing[:2]}; {len(unexpected)} unexpected, "
            f"e.g. {unexpected[:2]}); is it an Omni-Seg+ scale-aware checkpoint?"
        )
    model.omniseg_metadata = meta
    model.omniseg_source = path.name  # how messages name it
    return model.to(pick_device(device)).eval()


def check_generator(model: Any, name: str | os.PathLike | None = None) -> Any:
    """``model`` if it is a histology generator (a pyramid or single-scale one); otherwise an
    :class:`~napari_omniseg.errors.OmnisegInputError` naming it."""
    if not getattr(model, "histology_generator", False):
        who = getattr(model, "omniseg_source", None) or name or "the chosen model"
        raise OmnisegInputError(f"{who} is not a histology generator; give one trained with "
                                "`omniseg train synthesis`")
    return model


def load_generator(path_or_name: str | os.PathLike = GENERATOR, device: str | None = None
                   ) -> Any:
    """Load a histology generator (the bundled one by default) like :func:`load_model`, and
    refuse, in one sentence, a checkpoint that is not one."""
    return check_generator(load_model(path_or_name, device), path_or_name)


def model_and_precision(model: Any, task_name: str, bf16: bool | None) -> tuple[Any, bool]:
    """A loaded model (from a module, a checkpoint path or a bundled name; None means the
    task's bundled model) and whether to run it under bfloat16 (default: :func:`default_bf16`).

    Raises
    ------
    OmnisegInputError
        When the model does not answer the task ``task_name`` (a fetal checkpoint given to
        the kidney tools, say).
    """
    wanted = task(task_name)
    if model is None or isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        model = load_model(model or wanted.name)
    if not hasattr(model, wanted.answers):
        other = task_of_model(model)
        name = getattr(model, "omniseg_source", "the chosen model")
        raise OmnisegInputError(f"{name} is {other.description if other else 'another model'}"
                                f"; this needs {wanted.description}")
    if bf16 is None:
        bf16 = default_bf16(model)
    return model, bf16


def _resolve(path_or_name: str | os.PathLike) -> Path:
    name = str(path_or_name)
    if name in BUNDLED:
        path = Path(__file__).parent / "weights" / BUNDLED[name]
        if not path.exists():
            raise OmnisegInputError(
                f"the bundled {name!r} model is not in this installation; train it with "
                f"`omniseg train {name}` or pass a checkpoint file"
            )
        return path
    path = Path(path_or_name)
    if not path.exists():
        raise OmnisegInputError(
            f"{path} is neither a checkpoint file nor a bundled model ({', '.join(BUNDLED)})"
        )
    if path.is_dir():
        raise OmnisegInputError(f"{path} is a folder; choose the checkpoint file inside it")
    return path


def _load_blob(path: Path) -> dict:
    import pickle
    import zipfile

    import torch

    with open(path, "rb") as f:
        head = f.read(2)
    # torch.save writes a zip archive; older checkpoints (the authors' .pth) are pickles
    if not zipfile.is_zipfile(path) and not head.startswith(b"\x80"):
        raise OmnisegInputError(f"{path.name} is not a PyTorch checkpoint; choose the .pt or "
                                ".pth file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():
            raise OmnisegInputError(
                f"{path.name} holds Python objects besides weights, which could run code when "
                "loaded; this plugin loads weights-only checkpoints") from None
        raise OmnisegInputError(f"{path.name} is not a PyTorch checkpoint") from None
    except Exception:
        raise OmnisegInputError(f"{path.name} is not a PyTorch checkpoint (or it is "
                                "truncated); choose the .pt or .pth file again") from None
    if not isinstance(blob, dict):
        raise OmnisegInputError(f"{path.name} does not hold a state_dict")
    return blob


def _is_product(blob: dict) -> bool:
    return "state_dict" in blob and isinstance(blob.get("metadata"), str)
