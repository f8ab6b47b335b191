"""The Fetal MRI dock widget: "segment <region>" on a 3D volume layer with CoNeMOS.

:func:`~napari_omniseg.predict.volume.segment_volume` runs in a worker thread, its progress on
the bar and Stop taking effect after the window in progress; a stopped run adds nothing. Each
region becomes its own 3D Labels layer (regions nest or overlap, so they cannot share one),
named and coloured from the vocabulary and scaled like the volume.
"""

from __future__ import annotations

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox

from .. import vocab
from ..choices import ImageKind
from ..errors import OmnisegInputError
from .dock import DockWidget
from .layers import image_layers, volume_from_layer
from .model_in_use import MODELS_IN_USE


class FetalWidget(DockWidget):
    """Choose volume, region and model; Segment; Stop."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer)
        self.volume = ComboBox(label="volume", choices=self._volume_layers)
        self.region = ComboBox(label="region", value="all", choices=[
            ("all regions", "all"), *[(r.name, r.code) for r in vocab.FETAL_REGIONS]])
        model = self._model_choice("fetal", "bundled fetal model")
        self.flips = CheckBox(label="flip averaging", value=True,
                              tooltip="average with the three mirrored predictions: more "
                                      "accurate (eyes most), 4x slower; untick for a preview")
        self.clean_up = CheckBox(
            label="clean up pieces", value=True,
            tooltip="uterus, body, brain and placenta keep only their largest connected piece; "
                    "the eyes only their pieces inside the fetal body (predicted too)")
        self.extend([self.volume, self.region, *model, self.flips, self.clean_up,
                     *self._run_controls("Segment")])
        self._on_layers_changed(lambda e: self.volume.reset_choices())

    def _volume_layers(self, _=None) -> list:
        return image_layers(self.viewer, ImageKind.VOLUME)

    def start(self) -> None:
        """Segment the chosen regions in a worker; each becomes a Labels layer at the end."""
        from ..checkpoints import model_and_precision
        from ..predict.volume import segment_volume

        if self.worker is not None:
            return
        try:
            layer = self.volume.value
            if layer is None:
                raise OmnisegInputError("open a 3D MRI volume first (File > Open, or a sample)")
            vol = volume_from_layer(layer)
            model, bf16 = model_and_precision(MODELS_IN_USE.chosen(
                "fetal", self.model_source.value, self.model_file.value)[0], "fetal", None)
        except OmnisegInputError as e:
            self._report(str(e))
            return
        codes = [self.region.value]
        flips, clean_up = bool(self.flips.value), bool(self.clean_up.value)

        def job(progress, should_stop, emit):
            # regions run one after the other inside; Stop takes effect within a region
            masks = segment_volume(vol, codes, model, flips=flips, bf16=bf16, clean_up=clean_up,
                                   progress=progress, should_stop=should_stop)
            return {code: np.asarray(m.compute(scheduler="synchronous"))
                    for code, m in masks.items()}

        self._launch(job, status="segmenting...", failure="segmentation failed",
                     on_returned=lambda result: self._show(result, layer),
                     on_finished=self._finished)

    def _show(self, result: dict, layer) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        for code, mask in result.items():
            region = vocab.fetal_region(code)
            if region.name in self.viewer.layers:  # running again replaces the layer
                self.viewer.layers.remove(region.name)
            self.viewer.add_labels(
                mask, name=region.name, scale=layer.scale, translate=layer.translate,
                units=layer.units, opacity=0.5, colormap=DirectLabelColormap(
                    color_dict={1: region.color, None: (0, 0, 0, 0)}),
                metadata={"region": code, "source_layer": layer.name})

    def _finished(self) -> None:
        if self.run_stopped:
            self.status.value = "stopped; nothing was added"
        elif not self.run_failed:
            self.status.value = "done"
