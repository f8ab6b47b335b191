"""napari-omniseg: conditional segmentation of kidney pathology and fetal MRI in napari.

The public API is imported lazily so that napari starts fast: nothing heavy (torch, dask graphs,
the simulators) is imported until it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__

_API = {
    "open_slide": ("napari_omniseg.io.slides", "open_slide"),
    "Slide": ("napari_omniseg.io.slides", "Slide"),
    "open_volume": ("napari_omniseg.io.volumes", "open_volume"),
    "Volume": ("napari_omniseg.io.volumes", "Volume"),
    "simulate_renal": ("napari_omniseg.simulate.renal", "simulate_renal"),
    "write_renal_slide": ("napari_omniseg.simulate.renal", "write_renal_slide"),
    "simulate_fetal": ("napari_omniseg.simulate.fetal", "simulate_fetal"),
    "OmnisegInputError": ("napari_omniseg.errors", "OmnisegInputError"),
    "load_model": ("napari_omniseg.checkpoints", "load_model"),
    "segment_slide": ("napari_omniseg.predict.slide", "segment_slide"),
    "segment_volume": ("napari_omniseg.predict.volume", "segment_volume"),
    "open_labels": ("napari_omniseg.io.labels", "open_labels"),
    "LabelImage": ("napari_omniseg.io.labels", "LabelImage"),
}

__all__ = sorted(_API)

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoints import load_model
    from .errors import OmnisegInputError
    from .io.labels import LabelImage, open_labels
    from .io.slides import Slide, open_slide
    from .io.volumes import Volume, open_volume
    from .predict.slide import segment_slide
    from .predict.volume import segment_volume
    from .simulate.fetal import simulate_fetal
    from .simulate.renal import simulate_renal, write_renal_slide


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'napari_omniseg' has no attribute {name!r}")
