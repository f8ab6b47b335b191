"""npe2 reader: whole-slide images as multiscale layers in µm, volumes as 3D layers in mm.

Bad files never raise into napari: the person sees one sentence in a notification and no layer
is added.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import vocab
from .errors import failure_sentence
from .io.atomic import file_stem
from .io.slides import SLIDE_SUFFIXES, Slide
from .io.volumes import VOLUME_SUFFIXES, Volume, is_volume_file, volume_suffix

LayerData = tuple  # (data, kwargs, layer_type)


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """Return a reader for slide and volume files, or None for anything else."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    suffix = volume_suffix(path)
    if suffix in SLIDE_SUFFIXES or suffix in VOLUME_SUFFIXES:
        return read_path
    return None


def read_path(path: str | list[str]) -> list[LayerData]:
    """Read one file into napari layer data, telling the user (not raising) on bad input."""
    if isinstance(path, list):
        path = path[0]
    try:
        return layer_data_for_path(path)
    except Exception as e:
        from napari.utils.notifications import show_error

        show_error(failure_sentence(Path(path).name, e))
        return [(None,)]  # napari's "nothing to add" sentinel


def layer_data_for_path(path: str | Path) -> list[LayerData]:
    """Layer data for a slide or a volume; raises OmnisegInputError on bad input."""
    from .io.labels import is_label_file, open_labels
    from .io.slides import open_slide
    from .io.volumes import open_volume

    if is_volume_file(path):
        return [volume_layer_data(open_volume(path))]
    if is_label_file(path):
        return [labels_layer_data(im) for im in open_labels(path)]
    return [slide_layer_data(open_slide(path))]


def labels_layer_data(image) -> LayerData:
    """Labels layer data of a mask or label image, in µm, in the vocabulary's colours."""
    from .io.labels import LabelImage, label_names

    assert isinstance(image, LabelImage)
    colours: dict[Any, Any] = {None: (0, 0, 0, 0)}
    if image.tissue:
        colours[1] = vocab.tissue(image.tissue).color
    else:
        colours.update({t.task_id + 1: t.color for t in vocab.TISSUES})
    kwargs: dict[str, Any] = {
        "name": image.name,
        "multiscale": len(image.levels) > 1,
        "opacity": 0.6,
        "colormap": colours,  # napari makes a dict a DirectLabelColormap
        "features": label_names(image.tissue),  # the tissue's name under the cursor
        "metadata": {"tissue": image.tissue, "mpp": image.mpp,
                     "path": str(image.path) if image.path else None},
    }
    if image.mpp is not None:
        kwargs["scale"] = (image.mpp, image.mpp)
        kwargs["units"] = ("µm", "µm")
    data = image.levels if len(image.levels) > 1 else image.levels[0]
    return (data, kwargs, "labels")


def slide_layer_data(slide: Slide, name: str | None = None) -> LayerData:
    """Multiscale RGB image layer data scaled in µm (pixels if the slide has no pixel size)."""
    mpp = slide.mpp
    meta: dict[str, Any] = {
        "omniseg_slide": slide,
        "mpp": mpp,
        "magnification": slide.magnification,
        "downsamples": slide.downsamples,
        "path": str(slide.path) if slide.path else None,
        "source": slide.source,
    }
    kwargs: dict[str, Any] = {
        "name": name or (file_stem(slide.path) if slide.path else "slide"),
        "rgb": True,
        "multiscale": len(slide.levels) > 1,
        "metadata": meta,
    }
    if mpp is not None:
        kwargs["scale"] = (mpp, mpp)
        kwargs["units"] = ("µm", "µm")
    else:
        from napari.utils.notifications import show_warning

        show_warning(
            f"{kwargs['name']} has no pixel size, so it is shown in pixels; give its µm/px "
            "when you segment it"
        )
    data = slide.levels if len(slide.levels) > 1 else slide.levels[0]
    return (data, kwargs, "image")


def _percentile_window(volume: Volume) -> tuple[float, float]:
    """0.5 / 99.5 percentiles of a strided sample of the volume (as the network rescales)."""
    step = max(1, int(round((volume.data.size / 2e6) ** (1 / 3))))
    sample = np.asarray(volume.data[::step, ::step, ::step], np.float32)
    sample = sample[np.isfinite(sample)]  # NaN or infinite voxels would make the window NaN
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(sample, (0.5, 99.5)))
    return (lo, hi if hi > lo else lo + 1.0)


def volume_layer_data(volume: Volume, name: str | None = None) -> LayerData:
    """3D image layer data scaled in mm."""
    if not volume.spacing_known:
        from napari.utils.notifications import show_warning

        show_warning(f"{volume.path.name if volume.path else 'volume'} has no voxel size; "
                     "showing it with 1 mm voxels")
    kwargs = {
        "name": name or (file_stem(volume.path) if volume.path else "volume"),
        "scale": volume.spacing,
        "units": ("mm", "mm", "mm"),
        "colormap": "gray",
        # the network's own intensity window; napari cannot see a lazy volume's range
        "contrast_limits": _percentile_window(volume),
        "metadata": {
            "omniseg_volume": volume,
            "spacing_mm": volume.spacing,
            "path": str(volume.path) if volume.path else None,
        },
    }
    return (volume.data, kwargs, "image")
