"""The architecture registry: how a checkpoint's ``architecture`` name becomes a network.

Each network module registers its :class:`Architecture` when imported: a builder from the
checkpoint's metadata, the settings a checkpoint must record to rebuild it, and the vocabulary
its condition ids stand for. Built-in networks are imported on first use (torch stays unloaded
until a network is needed); a new network (a generator, a discriminator) adds itself to
:data:`BUILT_IN` and calls :func:`register`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import OmnisegInputError

#: Architecture name -> module that registers it.
BUILT_IN = {"omniseg_plus": "napari_omniseg.nets.omniseg",
            "conemos": "napari_omniseg.nets.conemos"}


@dataclass(frozen=True)
class Architecture:
    """One kind of network a checkpoint can hold.

    Attributes
    ----------
    name : str
        Stored in checkpoint metadata as ``architecture``.
    build : callable
        ``build(metadata) -> torch.nn.Module`` with freshly initialised weights.
    settings : callable
        ``settings(module) -> dict``: the constructor settings ``build`` reads back.
    vocabulary : callable
        ``vocabulary() -> dict``: what the network's condition ids mean (stored with it).
    """

    name: str
    build: Callable[[dict], Any]
    settings: Callable[[Any], dict]
    vocabulary: Callable[[], dict]


_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Make ``arch`` loadable by name (called by the module defining the network)."""
    _REGISTRY[arch.name] = arch
    return arch


def architecture(name: str) -> Architecture:
    """The registered architecture ``name``.

    Raises
    ------
    OmnisegInputError
        When no network of that name exists in this version.
    """
    if name not in _REGISTRY and name in BUILT_IN:
        importlib.import_module(BUILT_IN[name])
    if name not in _REGISTRY:
        raise OmnisegInputError(f"a {name!r} model cannot be built by this version; update "
                                "napari-omniseg")
    return _REGISTRY[name]


def architecture_of(module: Any) -> Architecture:
    """The registered architecture of a network (its class names it in ``architecture``)."""
    name = getattr(module, "architecture", None)
    if not isinstance(name, str):
        raise OmnisegInputError(f"{type(module).__name__} is not a registered network")
    return architecture(name)
