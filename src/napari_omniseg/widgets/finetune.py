"""The Fine-tune dock widget: retrain the renal or fetal model on labels painted in napari.

The user lists (image layer, labels layer, tissue) rows; each labels layer says where one tissue
(or, for 3D fetal MRI volumes, one region) is. Unpainted pixels are unknown unless the row says its annotation is complete (the whole
layer, or inside the shapes of a Shapes layer). Training runs in a worker thread on a copy of the
model in use, with a live plot of loss and validation Dice; Stop keeps the best model so far.
The model in use changes only when the user clicks "Use this model". Layers are only read.
"""

from __future__ import annotations

import datetime as _dt
import queue
import threading
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import (CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label,
                              ProgressBar, PushButton)

from .. import vocab
from ..errors import OmnisegInputError
from .dock import DockWidget
from .model_in_use import FETAL_MODEL_IN_USE, MODEL_IN_USE
from .segment import slide_from_layer

PAINTED_ONLY = "painted pixels only"
WHOLE_LAYER = "whole layer (unpainted = background)"
USES = ("train", "validation")
KINDS = (("kidney slides (RGB images)", "renal"), ("fetal MRI (3D volumes)", "fetal"))
DEFAULT_SAVE = {"renal": Path.home() / "omniseg_finetuned.pt",
                "fetal": Path.home() / "omniseg_fetal_finetuned.pt"}


def _labels_array(layer) -> np.ndarray:
    data = layer.data[0] if layer.multiscale else layer.data
    if np.prod(data.shape[-2:]) > 400e6:
        raise OmnisegInputError(f"{layer.name} is too large to read whole; paint on a labels "
                                "layer over a region (File > New Labels on a cropped image)")
    return np.asarray(data)


def _image_array(layer, box: tuple[int, int, int, int]) -> np.ndarray:
    y0, y1, x0, x1 = box
    data = layer.data[0] if layer.multiscale else layer.data
    return np.asarray(data[y0:y1, x0:x1, :3]).astype(np.uint8)


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


class AnnotationRow(Container):
    """One (image, labels, tissue, completeness, use) row."""

    def __init__(self, widget: "FinetuneWidget") -> None:
        # two lines: a single line of six combo boxes made the dock half the window wide
        super().__init__(layout="vertical", labels=False)
        self.image = ComboBox(choices=widget._image_layers, tooltip="image layer")
        self.labels = ComboBox(choices=widget._labels_layers, tooltip="labels layer: where the "
                               "tissue is (any non-zero pixel)")
        self.tissue = ComboBox(choices=widget._target_choices,
                               tooltip="the tissue (or fetal region) these labels show")
        self.complete = ComboBox(choices=widget._completeness_choices,
                                 tooltip="where unpainted pixels mean background")
        self.use = ComboBox(choices=list(USES), value="train")
        self.remove = PushButton(text="x", tooltip="remove this row")
        self.remove.native.setMaximumWidth(28)
        layers = Container(layout="horizontal", labels=False,
                           widgets=[self.image, self.labels, self.remove])
        meaning = Container(layout="horizontal", labels=False,
                            widgets=[self.tissue, self.complete, self.use])
        for line in (layers, meaning):
            line.margins = (0, 0, 0, 0)
        self.margins = (0, 4, 0, 4)
        self.extend([layers, meaning])
        self.labels.changed.connect(self._guess_tissue)
        self._guess_tissue()

    def _guess_tissue(self, _=None) -> None:
        layer = self.labels.value
        meta = (layer.metadata or {}) if layer is not None else {}
        code = meta.get("tissue") or meta.get("region")
        if code in self.tissue.choices:  # choices are the codes
            self.tissue.value = code

    def reset_choices(self, *_: Any) -> None:
        for w in (self.image, self.labels, self.tissue, self.complete):
            w.reset_choices()


class LossPlot:
    """A small live plot of training loss and validation Dice (Qt painter, no extra package)."""

    def __init__(self) -> None:
        from qtpy.QtWidgets import QWidget

        plot = self

        class _Canvas(QWidget):
            def paintEvent(self, event):  # noqa: N802 (Qt name)
                plot._paint(self)

        self.native = _Canvas()
        self.native.setMinimumHeight(110)
        self.history: list[dict] = []

    def add(self, entry: dict) -> None:
        self.history.append(entry)
        self.native.update()

    def clear(self) -> None:
        self.history = []
        self.native.update()

    def _paint(self, canvas) -> None:
        from qtpy.QtCore import QPointF, Qt
        from qtpy.QtGui import QColor, QPainter, QPen

        p = QPainter(canvas)
        w, h = canvas.width(), canvas.height()
        p.fillRect(0, 0, w, h, QColor(38, 41, 48))
        p.setPen(QColor(200, 200, 200))
        p.drawText(6, 14, "loss (orange), validation Dice (cyan)")
        series = [("loss", QColor(255, 150, 60)), ("val_dice", QColor(60, 200, 220))]
        for key, colour in series:
            pts = [(e["seconds"], e[key]) for e in self.history if e.get(key) is not None]
            if len(pts) < 1:
                continue
            t1 = max(1e-6, max(e["seconds"] for e in self.history))
            hi = 1.0 if key == "val_dice" else max(1e-6, max(v for _, v in pts))
            pen = QPen(colour)
            pen.setWidth(2)
            p.setPen(pen)
            poly = [QPointF(6 + (w - 12) * x / t1, h - 6 - (h - 26) * v / hi) for x, v in pts]
            for a, b in zip(poly, poly[1:]):
                p.drawLine(a, b)
            for q in poly:
                p.drawEllipse(q, 2, 2)
            last = pts[-1][1]
            p.drawText(w - 70, 14 if key == "loss" else 28, f"{last:.3f}")
        p.setPen(Qt.NoPen)
        p.end()


class FinetuneWidget(DockWidget):
    """Rows of annotations, training settings, Train / Stop, live plot, Use this model."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer)
        viewer = self.viewer
        self.kind = ComboBox(label="data", value="renal", choices=KINDS)
        self.rows = Container(labels=False, label="annotations")
        self.add_row_button = PushButton(text="Add annotation row")
        self.magnification = ComboBox(label="magnification", value="from image", choices=[
            "from image", *[f"{m}x" for m in vocab.MAGNIFICATIONS]])
        self.start_from = ComboBox(label="start from", value="in use", choices=[
            ("model in use (fine-tuned, else bundled)", "in use"), ("bundled", "bundled"),
            ("checkpoint file", "file")])
        self.model_file = FileEdit(label="checkpoint", filter="*.pt *.pth *.tar", visible=False)
        self.minutes = FloatSpinBox(label="minutes", value=5.0, min=0.1, max=240, step=1.0)
        self.semi = CheckBox(label="semi-supervised", value=False,
                             tooltip="pseudo-labels for the other tissues + two-view consistency")
        self.save_to = FileEdit(label="save to", mode="w", filter="*.pt",
                                value=str(DEFAULT_SAVE["renal"]))
        self.run_button = PushButton(text="Train")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, max=1000, visible=False)
        self.plot = LossPlot()
        self.use_button = PushButton(text="Use this model", enabled=False)
        self.status = Label(value="")
        self.extend([self.kind, self.rows, self.add_row_button, self.magnification, self.start_from,
                     self.model_file, self.minutes, self.semi, self.save_to, self.run_button,
                     self.stop_button, self.progress, self.use_button, self.status])
        self.native.layout().insertWidget(self.native.layout().count() - 2, self.plot.native)
        self.add_row_button.changed.connect(lambda: self.add_row())
        self.kind.changed.connect(self._on_kind)
        self.start_from.changed.connect(
            lambda v: setattr(self.model_file, "visible", v == "file"))
        self.run_button.changed.connect(self.start)
        self.stop_button.changed.connect(self.stop)
        self.use_button.changed.connect(self.use_trained)
        viewer.layers.events.inserted.connect(self._refresh)
        viewer.layers.events.removed.connect(self._refresh)
        self.trained = None
        self._trained_holder = MODEL_IN_USE
        self._stop_requested = False
        self.add_row()

    # -- rows ----------------------------------------------------------------------------------

    @property
    def fetal(self) -> bool:
        """True when the rows are 3D fetal MRI volumes rather than RGB kidney images."""
        return self.kind.value == "fetal"

    def _on_kind(self, _=None) -> None:
        self.magnification.visible = not self.fetal
        self.semi.visible = not self.fetal  # pseudo-labels exist for the renal model only
        if Path(str(self.save_to.value)) in DEFAULT_SAVE.values():  # not chosen by the user
            self.save_to.value = str(DEFAULT_SAVE[self.kind.value])
        self._refresh()
        for row in self.rows:
            row._guess_tissue()

    def _image_layers(self, _=None) -> list:
        from napari.layers import Image

        return [(lyr.name, lyr) for lyr in self.viewer.layers if isinstance(lyr, Image) and (
            (not lyr.rgb and lyr.ndim == 3) if self.fetal else lyr.rgb)]

    def _target_choices(self, _=None) -> list:
        if self.fetal:
            return [(r.name, r.code) for r in vocab.FETAL_REGIONS]
        return [(t.label, t.code) for t in vocab.TISSUES]

    def _labels_layers(self, _=None) -> list:
        from napari.layers import Labels

        return [(lyr.name, lyr) for lyr in self.viewer.layers
                if isinstance(lyr, Labels) and lyr.ndim == (3 if self.fetal else 2)]

    def _completeness_choices(self, _=None) -> list:
        from napari.layers import Shapes

        fixed = [(PAINTED_ONLY, PAINTED_ONLY), (WHOLE_LAYER, WHOLE_LAYER)]
        if self.fetal:  # shapes outline 2D regions
            return fixed
        return fixed + [
            (f"inside shapes of {lyr.name}", lyr) for lyr in self.viewer.layers
            if isinstance(lyr, Shapes)]

    def add_row(self) -> AnnotationRow:
        """Append an annotation row (picks the newest labels layer not listed yet)."""
        row = AnnotationRow(self)
        used = {r.labels.value for r in self.rows}
        free = [lyr for _, lyr in self._labels_layers() if lyr not in used]
        if free:
            row.labels.value = free[-1]
        row.remove.changed.connect(lambda: self.rows.remove(row))
        self.rows.append(row)
        return row

    def _refresh(self, event=None) -> None:
        for row in self.rows:
            row.reset_choices()

    # -- annotations ---------------------------------------------------------------------------

    def annotations(self) -> tuple[list, list]:
        """Read the rows into (train, validation) annotations; layers are only read."""
        from ..train.annotations import annotation_from_layers, at_optimal_magnification
        from ..train.finetune_fetal import volume_annotation_from_layers

        train, val = [], []
        for row in self.rows:
            image, labels = row.image.value, row.labels.value
            if image is None or labels is None:
                what = "a 3D volume layer" if self.fetal else "an image layer"
                raise OmnisegInputError(f"each row needs {what} and a labels layer")
            if self.fetal:
                ann = volume_annotation_from_layers(
                    np.asarray(image.data), np.asarray(labels.data), row.tissue.value,
                    annotated=row.complete.value == WHOLE_LAYER,
                    name=f"{labels.name} on {image.name}")
                (train if row.use.value == "train" else val).append(ann)
                continue
            fixed = self.magnification.value != "from image"
            mag = float(self.magnification.value.rstrip("x")) if fixed else None
            try:
                slide = slide_from_layer(image, vocab.mpp_of_magnification(mag) if fixed else None)
            except OmnisegInputError:
                raise OmnisegInputError(f"{image.name} has no pixel size; choose its "
                                        "magnification above") from None
            lab = _labels_array(labels)
            if lab.shape[-2:] != tuple(slide.shape):
                raise OmnisegInputError(
                    f"{labels.name} ({lab.shape[-2]} x {lab.shape[-1]}) is not drawn on "
                    f"{image.name} ({slide.shape[0]} x {slide.shape[1]})")
            complete = row.complete.value
            if complete == WHOLE_LAYER:
                annotated: Any = True
            elif complete == PAINTED_ONLY:
                annotated = False
            else:
                annotated = shapes_region(complete, lab.shape[-2:], image)
            known = (lab != 0) | (annotated if isinstance(annotated, np.ndarray)
                                  else bool(annotated))
            rows_, cols_ = np.flatnonzero(known.any(1)), np.flatnonzero(known.any(0))
            if not len(rows_):
                raise OmnisegInputError(f"{labels.name} has nothing painted and no complete "
                                        "region: nothing to learn from")
            box = (max(0, rows_[0] - 64), min(lab.shape[0], rows_[-1] + 65),
                   max(0, cols_[0] - 64), min(lab.shape[1], cols_[-1] + 65))
            sl = (slice(box[0], box[1]), slice(box[2], box[3]))
            mag = mag or slide.magnification
            ann = at_optimal_magnification(annotation_from_layers(
                _image_array(image, box), lab[sl], row.tissue.value, mag,
                annotated=annotated[sl] if isinstance(annotated, np.ndarray) else annotated,
                name=f"{labels.name} on {image.name}"))
            (train if row.use.value == "train" else val).append(ann)
        if not train:
            raise OmnisegInputError("add at least one annotation row used for training")
        return train, val

    def _holder(self):
        return FETAL_MODEL_IN_USE if self.fetal else MODEL_IN_USE

    def _base_model(self):
        from ..models import load_model

        holder = self._holder()
        if self.start_from.value == "in use" and holder.model is not None:
            return holder.model, holder.name
        if self.start_from.value == "file":
            path = Path(str(self.model_file.value))
            if not path.is_file():
                raise OmnisegInputError("choose a checkpoint file, or start from the bundled "
                                        "model")
            return load_model(path), str(path)
        name = "fetal" if self.fetal else "renal"
        return load_model(name), f"bundled {name} model"

    # -- training ------------------------------------------------------------------------------

    def start(self) -> None:
        """Read the rows and settings and train in a worker thread."""
        from ..train.finetune import finetune, save_finetuned
        from ..train.finetune_fetal import finetune_fetal, save_finetuned_fetal

        if self.worker is not None:
            return
        try:
            train, val = self.annotations()
            base, base_name = self._base_model()
            out = Path(str(self.save_to.value))
            if not out.parent.is_dir():
                raise OmnisegInputError(f"cannot save to {out}: {out.parent} does not exist")
        except OmnisegInputError as e:
            self._report(str(e))
            return
        minutes, semi, fetal = float(self.minutes.value), bool(self.semi.value), self.fetal
        holder = self._holder()

        def work():
            # training blocks, so it runs in its own thread and this generator forwards its
            # progress and validation events (yielded values reach the GUI thread)
            events: queue.Queue = queue.Queue()
            box: dict = {}

            def run() -> None:
                hooks = dict(validate_every=max(10.0, minutes * 60 / 12),
                             progress=lambda d, t, m: events.put(("progress", d, t, m)),
                             should_stop=lambda: self._stop_requested,
                             on_validate=lambda e: events.put(("val", e)))
                try:
                    if fetal:
                        box["result"] = finetune_fetal(base, train, val or None,
                                                       minutes=minutes, **hooks)
                    else:
                        box["result"] = finetune(base, train, val or None, minutes=minutes,
                                                 semi_supervised=semi, **hooks)
                except BaseException as e:  # noqa: BLE001 (re-raised in the worker below)
                    box["error"] = e
                finally:
                    events.put(None)

            threading.Thread(target=run, daemon=True, name="omniseg-finetune").start()
            while (ev := events.get()) is not None:
                yield ev
            if "error" in box:
                raise box["error"]
            if fetal:
                save_finetuned_fetal(box["result"], out, base_name, train, val)
            else:
                save_finetuned(box["result"], out, base_name, train, semi, val)
            return box["result"], out, holder

        self._stop_requested = False
        self.plot.clear()
        self.use_button.enabled = False
        self._launch(work, status=f"training on {len(train)} annotation(s)...",
                     failure="training failed", progress_max=1000, on_yielded=self._on_event,
                     on_returned=self._on_done)

    def _on_event(self, ev) -> None:
        if ev[0] == "progress":
            self.progress.value = ev[1]
            self.status.value = ev[3]
        else:
            self.plot.add(ev[1])

    def stop(self) -> None:
        """End training after the current step; the best model so far is kept."""
        self._stop_requested = True
        self.status.value = "stopping..."

    def _on_done(self, value) -> None:
        result, out, holder = value
        self.trained = (result.model, f"{out.name} ({_dt.datetime.now():%H:%M})")
        self._trained_holder = holder
        dice = ("" if result.best_val_dice is None
                else f", validation Dice {result.best_val_dice:.3f}")
        self.status.value = (f"{'stopped' if result.stopped else 'done'}: {result.steps} steps"
                             f"{dice}; saved {out.name}")
        self.use_button.enabled = True

    def use_trained(self) -> None:
        """Make the trained model the one Segment uses."""
        if self.trained is not None:
            self._trained_holder.set(*self.trained)
            self.status.value = f"model in use: {self.trained[1]}"
