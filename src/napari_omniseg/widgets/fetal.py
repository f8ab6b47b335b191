"""The Fetal MRI dock widget: "segment <region>" on a 3D volume layer with CoNeMOS.

The network runs in a napari ``thread_worker``; each region becomes its own 3D Labels layer
(regions nest or overlap, so they cannot share one), named and coloured from the vocabulary and
scaled like the volume. Regions run one after the other, so the bar moves and Stop takes effect
after the region being computed; a stopped run adds nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, Label, ProgressBar, PushButton

from .. import vocab
from ..errors import OmnisegInputError
from .dock import DockWidget
from .model_in_use import FETAL_MODEL_IN_USE


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


class FetalWidget(DockWidget):
    """Choose volume, region and model; Segment; Stop."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer)
        viewer = self.viewer
        self.volume = ComboBox(label="volume", choices=self._volume_layers)
        self.region = ComboBox(label="region", value="all", choices=[
            ("all regions", "all"), *[(r.name, r.code) for r in vocab.FETAL_REGIONS]])
        self.model_source = ComboBox(label="model", value="bundled", choices=[
            ("bundled fetal model", "bundled"), ("checkpoint file", "file"),
            ("fine-tuned model in use", "in use")])
        self.model_file = FileEdit(label="checkpoint", filter="*.pt", visible=False)
        self.flips = CheckBox(label="flip averaging", value=True,
                              tooltip="average with the three mirrored predictions: more "
                                      "accurate (eyes most), 4x slower; untick for a preview")
        self.largest_piece = CheckBox(
            label="clean up pieces", value=True,
            tooltip="uterus, body, brain and placenta keep only their largest connected piece; "
                    "the eyes only their pieces inside the fetal body (predicted too)")
        self.run_button = PushButton(text="Segment")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, max=0, visible=False)
        self.status = Label(value="")
        self.extend([self.volume, self.region, self.model_source, self.model_file, self.flips,
                     self.largest_piece, self.run_button, self.stop_button, self.progress,
                     self.status])
        self.model_source.changed.connect(
            lambda v: setattr(self.model_file, "visible", v == "file"))
        self.run_button.changed.connect(self.start)
        self.stop_button.changed.connect(self.stop)
        viewer.layers.events.inserted.connect(lambda e: self.volume.reset_choices())
        viewer.layers.events.removed.connect(lambda e: self.volume.reset_choices())
        self._stopped = False
        self.follow(FETAL_MODEL_IN_USE.changed, self._use_fine_tuned)

    def _use_fine_tuned(self, name: str) -> None:
        self.model_source.value = "in use"
        self.status.value = f"model in use: {name}"

    def _volume_layers(self, _=None) -> list:
        from napari.layers import Image

        return [(lyr.name, lyr) for lyr in self.viewer.layers
                if isinstance(lyr, Image) and not lyr.rgb and lyr.ndim == 3]

    def _model(self):
        from ..models import load_model

        if self.model_source.value == "bundled":
            return load_model("fetal")
        if self.model_source.value == "in use":
            if FETAL_MODEL_IN_USE.model is None:
                raise OmnisegInputError("no fine-tuned model yet: train one in the Fine-tune "
                                        "widget and click 'Use this model'")
            return FETAL_MODEL_IN_USE.model
        path = Path(str(self.model_file.value))
        if not path.is_file():
            raise OmnisegInputError("choose a checkpoint file, or use the bundled model")
        return load_model(path)

    def start(self) -> None:
        from ..models import model_and_precision
        from ..predict.volume import (masks_from_probabilities, predict_regions,
                                      regions_to_predict)

        if self.worker is not None:
            return
        try:
            layer = self.volume.value
            if layer is None:
                raise OmnisegInputError("open a 3D MRI volume first (File > Open, or a sample)")
            vol = volume_from_layer(layer)
            model, bf16 = model_and_precision(self._model(), "fetal", None)
        except OmnisegInputError as e:
            self._report(str(e))
            return
        codes = (list(vocab.FETAL_REGION_CODES) if self.region.value == "all"
                 else [self.region.value])
        flips, largest_piece = bool(self.flips.value), bool(self.largest_piece.value)

        predicted = regions_to_predict(codes, largest_piece)

        def work():
            # one region per pass: Stop takes effect between regions, and the bar moves
            data = np.asarray(vol.data)
            probs = []
            for k, code in enumerate(predicted):
                yield k, len(predicted), f"segmenting {vocab.fetal_region(code).name}..."
                probs.append(predict_regions(model, data, [vocab.fetal_region(code).region_id],
                                             flips=flips, bf16=bf16)[0])
            masks = masks_from_probabilities(np.stack(probs), predicted, largest_piece)
            return dict(zip(codes, masks))

        self._stopped = False
        self._launch(work, status="segmenting...", failure="segmentation failed",
                     progress_max=len(predicted), on_yielded=self._on_progress,
                     on_returned=lambda result: self._show(result, layer),
                     on_finished=self._finished)

    def _on_progress(self, ev) -> None:
        done, total, msg = ev
        self.progress.max, self.progress.value = total, done
        self.status.value = msg

    def stop(self) -> None:
        """Stop after the region being computed; nothing is added."""
        if self.worker is not None:
            self._stopped = True
            self.worker.quit()
            self.status.value = "stopping..."

    def _show(self, result: dict, layer) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        if self._stopped:
            return
        for code, mask in result.items():
            region = vocab.fetal_region(code)
            name = f"{region.name}"
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            self.viewer.add_labels(
                mask, name=name, scale=layer.scale, translate=layer.translate, units=layer.units,
                opacity=0.5, colormap=DirectLabelColormap(
                    color_dict={1: region.color, None: (0, 0, 0, 0)}),
                metadata={"region": code, "source_layer": layer.name})

    def _finished(self) -> None:
        if self._stopped:
            self.status.value = "stopped; nothing was added"
        elif not self.run_failed:
            self.status.value = "done"
