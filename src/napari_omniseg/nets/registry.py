"""The architecture registry: how a checkpoint's ``architecture`` name becomes a network.

A network module registers its :class:`Architecture` when imported; built-in ones are
imported on first use (torch stays unloaded until a network is needed). A new network (a
generator, a discriminator) adds its module to :data:`BUILT_IN` and calls :func:`register`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import OmnisegInputError

#: Architecture name -> module that registers it.
BUILT_IN = {"omniseg_plus": "napari_omniseg.nets.omniseg",
            "conemos": "napari_omniseg.nets.conemos",
            "pyramid_cgan": "napari_omniseg.nets.pyramid_gan",
            "pix2pix_unet": "napari_omniseg.nets.pix2pix",
            "omniseg_corrected": "napari_omniseg.nets.corrected"}


@dataclass(frozen=True)
class Architecture:
    """One kind of network: its checkpoint name, ``build(metadata)`` (fresh weights),
    ``settings(module)`` (the constructor settings ``build`` reads back) and ``vocabulary()``
    (what its condition ids mean), the last two stored in its checkpoints."""

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
    """The architecture ``name``; an :class:`OmnisegInputError` if this version has none."""
    if name not in _REGISTRY and name in BUILT_IN:
        importlib.import_module(BUILT_IN[name])
    if name not in _REGISTRY:
        raise OmnisegInputError(f"a {name!r} model cannot be built by this version; update "
                                "napari-omniseg")
    return _REGISTRY[name]


def architecture_of(module: Any) -> Architecture:
    """The architecture of a network (its class names it in ``architecture``)."""
    name = getattr(module, "architecture", None)
    if not isinstance(name, str):
        raise OmnisegInputError(f"{type(module).__name__} is not a registered network")
    return architecture(name)
