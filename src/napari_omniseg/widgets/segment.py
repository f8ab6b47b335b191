"""The Segment dock widget: "segment <tissue> at <magnification>" on a slide layer.

The network runs in a napari ``thread_worker`` (the viewer never waits for it); results are
written chunk by chunk into zarr arrays behind a multiscale Labels layer, which is refreshed as
chunks arrive. Stop ends the work after the current chunk and keeps what was computed.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, FloatSpinBox
from qtpy.QtCore import QTimer

from .. import vocab
from ..choices import ImageKind, ModelSource, StainNormalisation
from ..errors import OmnisegInputError
from .dock import DockWidget
from .layers import give_pixel_size, image_layers, layers_of_type, slide_from_layer
from .model_in_use import MODELS_IN_USE

WHERE = ("current view", "whole slide", "inside shapes")
#: The masks on screen are refreshed at most this often while chunks arrive.
REFRESH_SECONDS = 1.0


def layer_name(code: str, magnification: float) -> str:
    """Name of the Labels layer of a tissue, e.g. ``"PTC @ 40x"``."""
    return f"{vocab.tissue(code).label} @ {int(magnification)}x"


class SegmentWidget(DockWidget):
    """Choose image, tissue, magnification, model and where; Segment; Stop."""

    _last_shown: float = 0.0  # when the masks on screen were last refreshed
    _unfamiliar: str = ""  # the last run's warning that the slide is unlike the training data

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer)
        self.image = ComboBox(label="image", choices=self._image_layers)
        self.tissue = ComboBox(label="tissue", value="all", choices=[
            ("all (each at its best magnification)", "all"),
            *[(f"{t.label} - {t.name}", t.code) for t in vocab.TISSUES]])
        self.magnification = ComboBox(label="magnification", value="auto", choices=[
            ("auto (optimal per tissue)", "auto"), *[(f"{m}x", str(m)) for m in
                                                     vocab.MAGNIFICATIONS]])
        model = self._model_choice("renal", "bundled renal model",
                                   "checkpoint file (ours or the authors')")
        self.where = ComboBox(label="where", value="current view", choices=list(WHERE))
        self.shapes = ComboBox(label="shapes", choices=self._shapes_layers, visible=False)
        self.mpp = FloatSpinBox(label="µm/px", value=0.0, min=0.0, max=50.0, step=0.01,
                                tooltip="only for images without a pixel size (0 = from "
                                        "file); it becomes the image layer's scale, so it "
                                        "is asked once")
        self.mpp.native.setDecimals(4)  # 0.2525 (Aperio) and 0.337 must not be rounded
        self.normalise = ComboBox(label="stain", value=StainNormalisation.NONE, choices=[
            ("as it is", StainNormalisation.NONE),
            ("normalise to the model's stain (Macenko)", StainNormalisation.MACENKO),
            ("normalise to the model's stain (Reinhard)", StainNormalisation.REINHARD)],
            tooltip="map the slide's colours to the stain the model was trained on, fitted "
                    "once on the slide (docs/adaptation.md measures when it helps)")
        self.extend([self.image, self.tissue, self.magnification, *model, self.where,
                     self.shapes, self.mpp, self.normalise, *self._run_controls("Segment")])
        self.where.changed.connect(lambda v: setattr(self.shapes, "visible", v == WHERE[2]))
        self._on_layers_changed(self._refresh_choices)
        self._model_cache: dict[str, Any] = {}

    # -- choices -------------------------------------------------------------------------------

    def _image_layers(self, _=None) -> list:
        return image_layers(self.viewer, ImageKind.RGB)

    def _shapes_layers(self, _=None) -> list:
        return layers_of_type(self.viewer, "Shapes")

    def _refresh_choices(self, event=None) -> None:
        self.image.reset_choices()
        self.shapes.reset_choices()

    # -- running -------------------------------------------------------------------------------

    def _model(self, source: str, path: str):
        """The chosen model (called in the worker: loading takes up to seconds)."""
        if source == ModelSource.IN_USE:
            return MODELS_IN_USE.chosen("renal", source)[0]
        key = path if source == ModelSource.FILE else source
        if key not in self._model_cache:  # loaded once while the choice stays
            self._model_cache = {key: MODELS_IN_USE.chosen("renal", source, path)[0]}
        return self._model_cache[key]

    def _box(self, slide, layer) -> tuple[int, int, int, int]:
        """The level-0 pixel box to segment."""
        h, w = slide.shape
        if self.where.value == "whole slide":
            return 0, h, 0, w
        if self.where.value == "inside shapes":
            shapes = self.shapes.value
            if shapes is None or len(shapes.data) == 0:
                raise OmnisegInputError("draw a shape (a rectangle around the region) first")
            pts = np.concatenate([np.asarray(d)[:, -2:] for d in shapes.data])
            world = np.asarray([shapes.data_to_world(p) for p in pts])[:, -2:]
        else:
            world = self._visible_world_corners()
        return self._data_box(layer, world, (h, w), "the chosen region does not overlap the "
                              "image")

    def start(self) -> None:
        """Read the choices and start the worker, which loads the model, prepares the engines
        (the glass mask reads the slide's thumbnail) and fills the Labels layers; the layers
        are added (or replaced) once the engines are ready, so a refused run adds nothing."""
        from ..predict.slide import fill_region, make_engines, working_magnifications

        if self.worker is not None:
            return
        try:
            layer = self.image.value
            if layer is None:
                raise OmnisegInputError("open a slide first (File > Open, or a sample)")
            if self.mpp.value:
                give_pixel_size(self.viewer, layer, float(self.mpp.value))
            slide = slide_from_layer(layer)
            mag = None if self.magnification.value == "auto" else float(self.magnification.value)
            mags = working_magnifications((self.tissue.value,), mag)
            box = self._box(slide, layer)
            source, path = self.model_source.value, str(self.model_file.value)
            if source != ModelSource.BUNDLED:  # say a missing choice now, not from the worker
                MODELS_IN_USE.check_choice("renal", source, path)
        except OmnisegInputError as e:
            self._report(str(e))
            return
        arrays = {code: self._mask_levels(slide) for code in mags}
        layers: list = []
        normalise = self.normalise.value

        def job(progress, should_stop, emit):
            from ..predict.familiarity import check_slide

            progress(0, 0, "loading the model...")
            model = self._model(source, path)
            engines = make_engines(slide, list(mags), mag, model, normalise_stain=normalise)
            emit("ready")
            n = fill_region(engines, arrays, box, progress=progress, should_stop=should_stop)
            # after the masks: the check reads a dozen tiles per magnification (seconds)
            progress(n, n, "comparing the slide with the model's training data...")
            emit(("unfamiliar", check_slide(engines, model)))
            return n

        # layers still to add, each a call that adds one and returns it
        pending = [functools.partial(self._labels_layer, layer, slide, code, m, arrays[code])
                   for code, m in mags.items()]

        def add_next() -> None:
            # one layer per turn of the event loop: napari takes 0.3-0.5 s to set up each
            # layer's visual, and six at once froze the viewer for two seconds
            if pending:
                layers.append(pending.pop(0)())
                QTimer.singleShot(0, add_next)

        def shown(*_: Any) -> None:
            now = time.perf_counter()
            if now - self._last_shown > REFRESH_SECONDS:  # a refresh re-slices every layer
                self._last_shown = now
                self._show_all(layers)

        # the bar stays after the run: a stopped run shows how far it got; Stop ends the work
        # after the chunk in progress and what was computed stays
        self._last_shown = 0.0
        self._launch(job, status="segmenting...", failure="segmentation failed",
                     on_progress=shown, on_event=lambda ev: self._on_event(ev, add_next),
                     on_finished=lambda: self._on_finished(layers, pending), hide_progress=False)

    def _on_event(self, event: Any, add_next: Any) -> None:
        """The engines are ready (add the layers), or the slide was compared with the
        model's training data (a sentence when it looks unlike it)."""
        if event == "ready":
            add_next()
        elif isinstance(event, tuple) and event[0] == "unfamiliar":
            self._unfamiliar = event[1]

    @staticmethod
    def _mask_levels(slide) -> list:
        """Empty in-memory 0/1 masks, one per slide level, that the worker fills."""
        import zarr

        return [zarr.create_array(store=zarr.storage.MemoryStore(), shape=lv.shape[:2],
                                  chunks=(512, 512), dtype=np.uint8, fill_value=0)
                for lv in slide.levels]

    def _labels_layer(self, image_layer, slide, code: str, mag: float, levels: list):
        from napari.layers import Labels
        from napari.utils.colormaps import DirectLabelColormap

        from ..io.labels import label_names

        name = layer_name(code, mag)
        colour = DirectLabelColormap(color_dict={1: vocab.tissue(code).color,
                                                 None: (0, 0, 0, 0)})
        data = levels if len(levels) > 1 else levels[0]
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)  # running again replaces the layer
        # built here, not by viewer.add_labels: that returns napari's plugin proxy, and the
        # refresh after each chunk needs the layer itself (see _show_new_data)
        layer = Labels(
            data, name=name, multiscale=len(levels) > 1, scale=image_layer.scale,
            translate=image_layer.translate, units=image_layer.units, opacity=0.6,
            colormap=colour, features=label_names(code),
            metadata={"tissue": code, "magnification": mag, "mpp": slide.mpp,
                      "source_layer": image_layer.name},
        )
        self.viewer.add_layer(layer)
        return layer

    @staticmethod
    def _show_new_data(layer) -> None:
        # napari >= 0.9 keeps the coarsest level of a multiscale layer materialised until its
        # data is replaced; the arrays are filled in place, so that copy must be dropped
        reset = getattr(layer, "_reset_thumbnail_level_data", None)
        if reset is not None:
            reset()
        layer.refresh()

    def _show_all(self, layers) -> None:
        for lyr in layers:
            self._show_new_data(lyr)

    def _on_finished(self, layers, pending: list) -> None:
        while pending:  # a short run can end before every layer was added
            layers.append(pending.pop(0)())
        if not self.run_failed:
            self.status.value = ("stopped; the computed part is kept" if self.run_stopped
                                 else "done")
        if self._unfamiliar and not self.run_failed:
            from napari.utils.notifications import show_warning

            self.status.value = f"done, but {self._unfamiliar}"
            show_warning(self._unfamiliar[0].upper() + self._unfamiliar[1:])
        self._unfamiliar = ""
        self._show_all(layers)
