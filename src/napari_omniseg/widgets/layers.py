"""Layer adapters shared by the dock widgets: napari layers read as the core's inputs. They
only read (a user's layer is never modified) and turn a wrong choice into one sentence."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import vocab
from ..errors import OmnisegInputError


def slide_from_layer(layer: Any, mpp: float | None = None):
    """A :class:`Slide` over an image layer's data (multiscale or plain RGB).

    The pixel size comes from the layer's metadata (set by this plugin's reader), else from
    ``mpp``; without either the user is told how to give it.
    """
    import dask.array as da

    from ..io.slides import Slide

    meta = layer.metadata or {}
    if isinstance(meta.get("omniseg_slide"), Slide):
        base = meta["omniseg_slide"]
        if base.mpp is not None or mpp is None:
            return base
    if not layer.rgb:
        raise OmnisegInputError(f"{layer.name} is not an RGB image; choose a slide layer")
    levels = list(layer.data) if layer.multiscale else [layer.data]
    levels = [da.asarray(lv)[..., :3] for lv in levels]
    h0 = levels[0].shape[0]
    mpp = meta.get("mpp") or mpp
    if mpp is None:
        raise OmnisegInputError(
            f"{layer.name} has no pixel size; enter its µm/px (0.25 for a 40x scan) and "
            "segment again"
        )
    return Slide(levels=levels, mpp=float(mpp), magnification=vocab.magnification_of_mpp(mpp),
                 downsamples=[h0 / lv.shape[0] for lv in levels], path=None,
                 source="napari layer")


def volume_from_layer(layer: Any):
    """A :class:`Volume` over a 3D image layer (its scale is taken as mm per voxel)."""
    import dask.array as da

    from ..io.volumes import Volume

    meta = layer.metadata or {}
    if isinstance(meta.get("omniseg_volume"), Volume):
        return meta["omniseg_volume"]
    if layer.rgb or layer.ndim != 3:
        raise OmnisegInputError(f"{layer.name} is not a 3D grey volume; choose an MRI layer")
    return Volume(data=da.asarray(layer.data), spacing=tuple(float(s) for s in layer.scale))


def labels_array(layer: Any) -> np.ndarray:
    """A 2D labels layer's finest level as an array (refused beyond 400 Mpx)."""
    data = layer.data[0] if layer.multiscale else layer.data
    if np.prod(data.shape[-2:]) > 400e6:
        raise OmnisegInputError(f"{layer.name} is too large to read whole; paint on a labels "
                                "layer over a region (File > New Labels on a cropped image)")
    return np.asarray(data)


def image_array(layer: Any, box: tuple[slice, slice]) -> np.ndarray:
    """The RGB pixels of an image layer's finest level inside ``box`` (rows, columns)."""
    data = layer.data[0] if layer.multiscale else layer.data
    return np.asarray(data[box][..., :3]).astype(np.uint8)


def shapes_region(shapes_layer, shape: tuple[int, int], image_layer) -> np.ndarray:
    """Boolean mask of a Shapes layer's shapes on an image layer's level-0 pixel grid."""
    from skimage.draw import polygon

    out = np.zeros(shape, bool)
    for verts in shapes_layer.data:
        world = np.asarray([shapes_layer.data_to_world(v) for v in np.asarray(verts)])
        data = np.asarray([image_layer.world_to_data(w) for w in world])[:, -2:]
        rr, cc = polygon(data[:, 0], data[:, 1], shape)
        out[rr, cc] = True
    return out


#: What an image layer must be to hold each task's images (:attr:`Task.image`).
_IMAGE_KINDS = {"rgb": lambda lyr: lyr.rgb,
                "volume": lambda lyr: not lyr.rgb and lyr.ndim == 3}
#: Dimensions of the labels painted on each kind of image.
LABELS_NDIM = {"rgb": 2, "volume": 3}


def image_layers(viewer: Any, kind: str) -> list[tuple[str, Any]]:
    """``(name, layer)`` choices of the viewer's image layers of ``kind`` ("rgb", "volume")."""
    from napari.layers import Image

    return [(lyr.name, lyr) for lyr in viewer.layers
            if isinstance(lyr, Image) and _IMAGE_KINDS[kind](lyr)]


def layers_of_type(viewer: Any, layer_type: str, ndim: int | None = None
                   ) -> list[tuple[str, Any]]:
    """``(name, layer)`` choices of the viewer's layers of a napari type ("Labels", "Shapes"),
    of ``ndim`` dimensions when given."""
    import napari.layers

    cls = getattr(napari.layers, layer_type)
    return [(lyr.name, lyr) for lyr in viewer.layers
            if isinstance(lyr, cls) and (ndim is None or lyr.ndim == ndim)]
