"""The Correct (kidney) dock widget: strokes on a Segment layer's view, the model learns, the
view is segmented again, in seconds.

Choose a tissue layer that Segment made ("PT @ 10x"); "Strokes on this view" adds a strokes
layer over the current view at the tissue's working magnification: paint 1 (tissue) where the
tissue is missed, 2 (not tissue) where it is wrong; unpainted pixels are unknown. Learn adapts
a small correction of the model in use to every stroke of the session (each strokes layer is
one view) and segments the views again; the model in use stays as it was until "Use this
model". Undo a stroke with napari's own undo on the strokes layer, then Learn; Reset removes
the strokes and gives back the mask Segment made. "Save corrected model" writes a checkpoint
that Segment and ``omniseg segment --model`` load.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.types import FileDialogMode
from magicgui.widgets import ComboBox, FileEdit, PushButton

from .. import vocab
from ..errors import OmnisegInputError
from .dock import DockWidget, wrapping_label
from .layers import slide_from_layer
from .model_in_use import MODELS_IN_USE

#: Stroke values painted on a strokes layer.
PAINT_TISSUE, PAINT_BACKGROUND = 1, 2
#: Largest view a strokes layer covers, in working pixels (features of 4 Mpx take ~0.5 GB).
MAX_VIEW_PIXELS = 2048 * 2048
HOW = ("paint 1 where the tissue is missed and 2 where it is not tissue, then Learn; "
       "napari's undo on the strokes layer takes a stroke back")


class CorrectWidget(DockWidget):
    """Tissue layer; Strokes on this view; Learn; Reset; Use this model; Save."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer)
        self.mask = ComboBox(label="tissue layer", choices=self._tissue_layers,
                             tooltip="a layer Segment (kidney) made")
        self.strokes_button = PushButton(text="Strokes on this view")
        self.how = wrapping_label(HOW)
        self.reset_button = PushButton(text="Reset (remove strokes)")
        self.use_button = PushButton(text="Use this model", enabled=False)
        self.save_to = FileEdit(label="save to", mode=FileDialogMode.OPTIONAL_FILE,
                                filter="*.pt", value=Path.home() / "omniseg_corrected.pt")
        self.save_button = PushButton(text="Save corrected model", enabled=False)
        self.extend([self.mask, self.strokes_button, self.how, *self._run_controls("Learn"),
                     self.reset_button, self.use_button, self.save_to, self.save_button])
        self.strokes_button.changed.connect(self._told(self.add_strokes_layer))
        self.reset_button.changed.connect(self._told(self.reset))
        self.use_button.changed.connect(self._told(self.use_model))
        self.save_button.changed.connect(self._told(self.save_model))
        self._on_layers_changed(lambda *_: self.mask.reset_choices())
        self.correctors: dict[str, Any] = {}  # by tissue layer name
        self._original: dict[str, dict] = {}  # Segment's blocks under the views, for Reset

    # -- choices ---------------------------------------------------------------------------

    def _tissue_layers(self, _=None) -> list:
        from napari.layers import Labels

        return [(lyr.name, lyr) for lyr in self.viewer.layers
                if isinstance(lyr, Labels) and "tissue" in lyr.metadata
                and "strokes_for" not in lyr.metadata]

    def _chosen(self) -> tuple[Any, Any, str, float]:
        mask = self.mask.value
        if mask is None:
            raise OmnisegInputError("segment a tissue first (Segment (kidney)), then choose "
                                    "its layer here")
        source = mask.metadata.get("source_layer")
        if source not in self.viewer.layers:
            raise OmnisegInputError(f"the image {mask.metadata.get('source_layer')!r} that "
                                    f"{mask.name} was made from is no longer open")
        return (mask, self.viewer.layers[source], mask.metadata["tissue"],
                float(mask.metadata["magnification"]))

    def _strokes_layers(self, mask: Any) -> list:
        from napari.layers import Labels

        return [lyr for lyr in self.viewer.layers if isinstance(lyr, Labels)
                and lyr.metadata.get("strokes_for") == mask.name]

    # -- strokes ---------------------------------------------------------------------------

    def add_strokes_layer(self) -> Any:
        """A strokes layer over the current view, at the tissue's working magnification."""
        from napari.layers import Labels
        from napari.utils.colormaps import DirectLabelColormap

        mask, image, _, mag = self._chosen()
        slide = slide_from_layer(image)
        box = self._view_box(slide, image)
        y0, y1, x0, x1 = box
        s = mag / float(slide.magnification or mag)
        shape = (max(1, int(round((y1 - y0) * s))), max(1, int(round((x1 - x0) * s))))
        if shape[0] * shape[1] > MAX_VIEW_PIXELS:
            raise OmnisegInputError(
                f"this view is {shape[0]} x {shape[1]} pixels at {mag:g}x; zoom in to at most "
                f"2048 x 2048 (strokes teach the model where you paint; several views add up)")
        if min(shape) < 16:
            raise OmnisegInputError("this view is too small to correct; zoom out a little")
        n = len(self._strokes_layers(mask)) + 1
        scale = np.asarray(image.scale[-2:], float) / s
        translate = np.asarray(image.translate[-2:], float) + np.asarray(
            [y0, x0], float) * np.asarray(image.scale[-2:], float)
        layer = Labels(np.zeros(shape, np.uint8), name=f"strokes {n}: {mask.name}",
                       scale=scale, translate=translate, units=image.units[-2:], opacity=0.8,
                       colormap=DirectLabelColormap(color_dict={
                           PAINT_TISSUE: (0.1, 0.9, 0.2, 1.0),
                           PAINT_BACKGROUND: (0.95, 0.1, 0.8, 1.0), None: (0, 0, 0, 0)}),
                       metadata={"strokes_for": mask.name, "box": list(box)})
        self.viewer.add_layer(layer)
        layer.mode = "paint"
        layer.brush_size = 8
        layer.selected_label = PAINT_TISSUE
        self.status.value = f"strokes layer {n}: {HOW}"
        return layer

    def _view_box(self, slide: Any, image: Any) -> tuple[int, int, int, int]:
        return self._data_box(image, self._visible_world_corners(), slide.shape,
                              "the view does not show the image; pan to the tissue")

    # -- learning --------------------------------------------------------------------------

    def start(self) -> None:
        """Learn from every strokes layer of the chosen tissue layer, then segment its views
        again (in the worker)."""
        from ..predict.slide import read_working_region, write_working_mask
        from ..predict.tissue_mask import tissue_pixels
        from ..run import check_stop
        from ..train.correct import UNKNOWN, Corrector

        if self.worker is not None:
            return
        mask, image, code, mag = self._chosen()
        layers = self._strokes_layers(mask)
        if not layers:
            raise OmnisegInputError("add a strokes layer first (Strokes on this view) and "
                                    "paint on it")
        strokes = {lyr.name: (tuple(lyr.metadata["box"]), np.asarray(lyr.data)) for lyr in layers}
        if not any((s > 0).any() for _, s in strokes.values()):
            raise OmnisegInputError(f"the strokes layers are empty: {HOW}")
        slide = slide_from_layer(image)
        arrays = _levels(mask)
        if not all(hasattr(a, "__setitem__") for a in arrays):
            raise OmnisegInputError(f"{mask.name} cannot be written to; segment again")
        if tuple(arrays[0].shape[-2:]) != tuple(slide.shape):
            raise OmnisegInputError(
                f"{mask.name} ({arrays[0].shape[-2]} x {arrays[0].shape[-1]}) is not aligned "
                f"with {image.name} ({slide.shape[0]} x {slide.shape[1]}); segment it again")
        original = self._original.setdefault(mask.name, {})  # Segment's blocks, for Reset
        corrector = self.correctors.get(mask.name)
        in_use = MODELS_IN_USE.model("renal")

        def job(progress, should_stop, emit):
            nonlocal corrector
            if corrector is None:
                progress(0, 0, "loading the model...")
                corrector = Corrector(in_use if in_use is not None else "renal", code, mag)
            for i, (key, (box, painted)) in enumerate(strokes.items()):
                progress(i, len(strokes), f"features of view {i + 1} of {len(strokes)}")
                if key not in corrector.views:
                    rgb = read_working_region(slide, mag, box)
                    stained = tissue_pixels(rgb)
                    if not stained.any():
                        raise OmnisegInputError(f"{key} shows no tissue (glass only); pan to "
                                                "the tissue and add a strokes layer there")
                    if painted.shape == stained.shape and (painted > 0).any() and not (
                            stained & (painted > 0)).any():
                        raise OmnisegInputError(f"the strokes on {key} lie on glass only; "
                                                "paint on the tissue")
                    corrector.add_view(key, rgb, should_stop)
                labels = np.full(painted.shape, UNKNOWN, np.int8)
                labels[painted == PAINT_TISSUE] = 1
                labels[painted == PAINT_BACKGROUND] = 0
                corrector.set_strokes(key, labels)
            progress(0, 0, "learning...")
            corrector.update(should_stop)
            # the views' masks come from their kept features: no network pass
            views = [(key, box, corrector.probability(key) > 0.5)
                     for key, (box, _) in strokes.items()]
            check_stop(should_stop)
            for i, (_, box, found) in enumerate(views):
                progress(i, len(views), f"showing view {i + 1} of {len(views)}")
                for k, a in enumerate(arrays):
                    if (box, k) not in original:
                        original[(box, k)] = a[_level_box(box, slide.downsamples[k])]
                write_working_mask(arrays, slide.downsamples, box, found)
            return corrector

        def done(value: Any) -> None:
            self.correctors[mask.name] = value
            tissue, background = value.stroke_counts()
            missing = ("" if tissue and background else
                       " (only tissue strokes: the rest follows the model)" if tissue else
                       " (only not-tissue strokes: the rest follows the model)")
            self.status.value = (f"learned from {tissue + background} painted pixels on "
                                 f"{len(strokes)} view(s){missing}; the model in use is "
                                 "unchanged until 'Use this model'")
            self.use_button.enabled = self.save_button.enabled = True
            self._refresh(mask)

        self._launch(job, status="learning...", failure="correction failed",
                     on_returned=done, on_finished=lambda: self._refresh(mask))

    @staticmethod
    def _refresh(mask: Any) -> None:
        reset = getattr(mask, "_reset_thumbnail_level_data", None)
        if reset is not None:
            reset()
        mask.refresh()

    def reset(self) -> None:
        """Remove the chosen layer's strokes and give back the mask Segment made."""
        mask = self.mask.value
        if mask is None:
            return
        for lyr in self._strokes_layers(mask):
            self.viewer.layers.remove(lyr)
        original = self._original.pop(mask.name, {})
        if original:
            arrays = _levels(mask)
            slide = slide_from_layer(self.viewer.layers[mask.metadata["source_layer"]])
            for (box, k), block in original.items():
                arrays[k][_level_box(box, slide.downsamples[k])] = block
            self._refresh(mask)
        self.correctors.pop(mask.name, None)
        self.use_button.enabled = self.save_button.enabled = False
        self.status.value = "strokes removed; the mask is Segment's again"

    def _corrected(self) -> Any:
        mask = self.mask.value
        corrector = self.correctors.get(mask.name) if mask is not None else None
        if corrector is None:
            raise OmnisegInputError("Learn from some strokes first")
        return corrector

    def use_model(self) -> None:
        """Make the corrected model the one in use (Segment switches to it)."""
        corrector = self._corrected()
        label = vocab.tissue(corrector.tissue).label
        MODELS_IN_USE.set("renal", corrector.model,
                          f"corrected {label} ({_dt.datetime.now():%H:%M})")
        self.status.value = "the corrected model is in use"

    def save_model(self) -> Path:
        """Write the corrected model as a checkpoint (complete or not at all)."""
        from ..checkpoints import save_checkpoint

        corrector = self._corrected()
        path = Path(str(self.save_to.value))
        tissue, background = corrector.stroke_counts()
        save_checkpoint(corrector.model, path, trained_on=(
            f"strokes in napari: {tissue} tissue and {background} background pixels on "
            f"{len(corrector.views)} view(s) of {corrector.tissue} at "
            f"{corrector.magnification:g}x"), options=_options(corrector))
        self.status.value = f"saved {path.name}"
        return path


def _levels(mask: Any) -> list:
    """The arrays of a Labels layer's levels (one for a single-level layer)."""
    return list(mask.data) if mask.multiscale else [mask.data]


def _level_box(box: tuple[int, int, int, int], downsample: float) -> tuple[slice, slice]:
    """The rows and columns of a level-0 box on a level ``downsample`` times coarser (as
    :func:`~napari_omniseg.predict.slide.fill_region` writes them)."""
    y0, y1, x0, x1 = box  # a pixel more on each side: the chunks' own rounding
    return (slice(max(0, int(np.floor(y0 / downsample)) - 1), int(np.ceil(y1 / downsample)) + 1),
            slice(max(0, int(np.floor(x0 / downsample)) - 1), int(np.ceil(x1 / downsample)) + 1))


def _options(corrector: Any) -> dict:
    import dataclasses

    return dataclasses.asdict(corrector.options)
