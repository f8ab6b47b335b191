"""Layer adapters shared by the dock widgets: napari layers read as the core's inputs. They
only read (a user's layer is never modified) and turn a wrong choice into one sentence."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import vocab
from ..choices import ImageKind
from ..errors import MissingPixelSizeError, OmnisegInputError


def layer_mpp(layer: Any) -> float | None:
    """An image or labels layer's level-0 µm/px: the plugin's metadata, else its scale when its
    units are lengths; None when it has no pixel size."""
    from ..io.labels import micrometres_per_unit

    mpp = (layer.metadata or {}).get("mpp")
    if mpp:
        return float(mpp)
    per = micrometres_per_unit(layer.units[-1]) if layer.units else None
    return float(layer.scale[-1]) * per if per else None


def give_pixel_size(viewer: Any, layer: Any, mpp: float) -> None:
    """Make ``mpp`` (typed by the person) the image layer's pixel size, so it is asked once.

    The layer is then scaled in µm and carries ``mpp`` and ``magnification`` in its metadata;
    labels and image layers of the same size still in pixels (painted on it, or the image a
    mask was painted on) follow it, so they stay aligned.
    Every widget reads the pixel size from there (:func:`slide_from_layer`, :func:`layer_mpp`).
    """
    import dataclasses

    from ..io.slides import Slide

    if not mpp > 0:
        raise OmnisegInputError(f"µm/px must be positive, got {mpp}")
    meta = dict(layer.metadata or {})
    if layer_mpp(layer) is not None and not meta.get("mpp_typed"):
        return  # the file's (or the layer's own µm scale) is kept
    old_scale, old_mpp = np.asarray(layer.scale[-2:], float), layer_mpp(layer)
    if meta.get("mpp_typed") and old_mpp is not None and np.isclose(old_mpp, mpp):
        return  # typed before and unchanged: the view the person chose stays
    size = layer.data[0].shape[:2] if layer.multiscale else layer.data.shape[:2]
    meta.update(mpp=float(mpp), mpp_typed=True,
                magnification=vocab.magnification_of_mpp(mpp))
    if isinstance(meta.get("omniseg_slide"), Slide):
        meta["omniseg_slide"] = dataclasses.replace(
            meta["omniseg_slide"], mpp=float(mpp), magnification=meta["magnification"])
    from napari.layers import Image, Labels

    for other in list(viewer.layers):
        if other is layer or not isinstance(other, (Labels, Image)) or other.ndim != 2:
            continue
        data = other.data[0] if other.multiscale else other.data
        theirs = layer_mpp(other)
        if (np.allclose(other.scale[-2:], old_scale) and tuple(data.shape[:2]) == size
                and (theirs is None or (old_mpp is not None and np.isclose(theirs, old_mpp)))):
            # painted on it or painted for it (a mask typed in Synthesize over the image it
            # was painted on): the same pixels, so the same size in µm
            other.scale, other.units = (mpp, mpp), ("µm", "µm")
            extra = {"mpp_typed": True, "magnification": meta["magnification"]} if isinstance(
                other, Image) else {}
            other.metadata = {**(other.metadata or {}), "mpp": float(mpp), **extra}
    layer.metadata = meta
    layer.scale, layer.units = (mpp, mpp), ("µm", "µm")
    # the image just became mpp times larger in the world: without this the view kept its
    # pixel-sized window and showed a speck of the image in a corner
    viewer.reset_view()


#: A magnification choice that leaves the pixel size to the image layer.
FROM_IMAGE = "from image"


def slide_at_choice(layer: Any, choice: str) -> tuple[Any, float | None]:
    """:func:`slide_from_layer` under a widget's magnification choice (:data:`FROM_IMAGE` or
    ``"10x"``): the slide and the chosen magnification (None: from the image).

    Raises
    ------
    OmnisegInputError
        One sentence when the layer has no pixel size and none was chosen.
    """
    mag = None if choice == FROM_IMAGE else float(str(choice).rstrip("x"))
    try:
        slide = slide_from_layer(layer, None if mag is None else vocab.mpp_of_magnification(mag))
    except OmnisegInputError:
        raise OmnisegInputError(f"{layer.name} has no pixel size; choose its magnification "
                                "above") from None
    return slide, mag


def slide_from_layer(layer: Any, mpp: float | None = None):
    """A :class:`Slide` over an image layer's data (multiscale or plain RGB).

    The pixel size comes from the layer (its metadata, set by this plugin's reader or by
    :func:`give_pixel_size`, or its µm scale), else from ``mpp``; without either the user is
    told how to give it.

    Raises
    ------
    MissingPixelSizeError
        When neither the layer nor ``mpp`` gives a pixel size.
    """
    import dask.array as da

    from ..io.slides import Slide

    meta = layer.metadata or {}
    given = layer_mpp(layer) or mpp
    if given is None:
        raise MissingPixelSizeError(
            f"{layer.name} has no pixel size; enter its µm/px in the Segment widget (0.25 for "
            "a 40x scan, 0.5 for 20x) and run again"
        )
    base = meta.get("omniseg_slide")
    if isinstance(base, Slide):
        if base.mpp == given:
            return base
        import dataclasses

        return dataclasses.replace(base, mpp=float(given),
                                   magnification=vocab.magnification_of_mpp(given))
    if not layer.rgb:
        raise OmnisegInputError(f"{layer.name} is not an RGB image; choose a slide layer")
    levels = list(layer.data) if layer.multiscale else [layer.data]
    levels = [da.asarray(lv)[..., :3] for lv in levels]
    h0 = levels[0].shape[0]
    return Slide(levels=levels, mpp=float(given),
                 magnification=vocab.magnification_of_mpp(given),
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
    z, y, x = (float(s) for s in layer.scale)
    return Volume(data=da.asarray(layer.data), spacing=(z, y, x))


def labels_array(layer: Any) -> np.ndarray:
    """A 2D labels layer's finest level as an array (refused beyond 400 Mpx)."""
    data = layer.data[0] if layer.multiscale else layer.data
    if np.prod(data.shape[-2:]) > 400e6:
        raise OmnisegInputError(f"{layer.name} is too large to read whole; paint on a labels "
                                "layer over a region (File > New Labels on a cropped image)")
    return np.asarray(data)


def image_array(layer: Any, box: tuple[slice, ...]) -> np.ndarray:
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
_IMAGE_KINDS = {ImageKind.RGB: lambda lyr: lyr.rgb,
                ImageKind.VOLUME: lambda lyr: not lyr.rgb and lyr.ndim == 3}
#: Dimensions of the labels painted on each kind of image.
LABELS_NDIM = {ImageKind.RGB: 2, ImageKind.VOLUME: 3}


def image_layers(viewer: Any, kind: ImageKind) -> list[tuple[str, Any]]:
    """``(name, layer)`` choices of the viewer's image layers of ``kind``."""
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
