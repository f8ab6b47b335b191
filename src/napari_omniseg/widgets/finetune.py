"""The Fine-tune dock widget: retrain the renal or fetal model on labels painted in napari.

The user lists (image layer, labels layer, tissue) rows; each labels layer says where one tissue
(or, for 3D fetal MRI volumes, one region) is. Unpainted pixels are unknown unless the row says
its annotation is complete (the whole layer, or inside the shapes of a Shapes layer). What the
rows hold, which model starts and how it trains come from the chosen task
(:mod:`napari_omniseg.tasks`). Training runs in a worker thread on a copy of the model in use,
with a live plot of loss and validation Dice; Stop keeps the best model so far. The model in
use changes only when the user clicks "Use this model". Layers are only read.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.types import FileDialogMode
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    PushButton,
    Select,
    SpinBox,
)

from .. import vocab
from ..choices import GENERATOR, ImageKind, ModelSource, StrEnum
from ..errors import OmnisegInputError
from ..tasks import TASKS, Task
from .dock import DockWidget, wrapping_label
from .layers import (
    FROM_IMAGE,
    LABELS_NDIM,
    image_array,
    image_layers,
    labels_array,
    layers_of_type,
    shapes_region,
    slide_at_choice,
    slide_from_layer,
)
from .model_in_use import MODELS_IN_USE
from .plots import LossPlot

PAINTED_ONLY = "painted pixels only"
WHOLE_LAYER = "whole layer (unpainted = background)"
USES = ("train", "validation")
#: What each completeness choice means, shown as the choice's tooltip and under the rows.
COMPLETENESS_HINTS = {
    PAINTED_ONLY: "painted pixels are the tissue; everything else is unknown (the model is "
                  "not told what is background)",
    WHOLE_LAYER: "painted pixels are the tissue and every unpainted pixel of the layer is "
                 "background: paint every instance of the tissue",
    "inside shapes": "inside the Shapes layer's shapes, unpainted pixels are background (you "
                     "painted every instance there); outside, unknown",
}
ROW_HEADER = ("each row: image · labels layer · remove\n"
              "tissue · where the annotation is complete · train or validation")


def completeness_hint(choice: Any) -> str:
    """The hint of a row's completeness choice (its value: a name, or a Shapes layer)."""
    return COMPLETENESS_HINTS.get(choice, COMPLETENESS_HINTS["inside shapes"])
#: Where a fine-tuned model of each task (and a trained generator) is saved unless the user
#: chooses.
DEFAULT_SAVE = {**{t.name: Path.home() / t.finetuned_file for t in TASKS.values()},
                GENERATOR: Path.home() / "omniseg_generator.pt"}


class Trains(StrEnum):
    """What the widget trains."""

    SEGMENTER = "segmenter"
    GENERATOR = "generator"
    AVERAGE = "average"
    CALIBRATE = "calibrate"


class AnnotationRow(Container):
    """One (image, labels, tissue, completeness, use) row."""

    def __init__(self, widget: FinetuneWidget) -> None:
        # two lines: a single line of six combo boxes made the dock half the window wide
        super().__init__(layout="vertical", labels=False)
        self.image = ComboBox(choices=widget._image_layers, tooltip="image layer")
        self.labels_layer = ComboBox(choices=widget._labels_layers, tooltip="labels layer: "
                                     "where the tissue is (any non-zero pixel)")
        self.tissue = ComboBox(choices=widget._target_choices,
                               tooltip="the tissue (or fetal region) these labels show")
        self.complete = ComboBox(choices=widget._completeness_choices,
                                 tooltip="where unpainted pixels mean background")
        self.use = ComboBox(choices=list(USES), value="train")
        self.remove_button = PushButton(text="x", tooltip="remove this row")
        self.remove_button.native.setMaximumWidth(28)
        layers = Container(layout="horizontal", labels=False,
                           widgets=[self.image, self.labels_layer, self.remove_button])
        meaning = Container(layout="horizontal", labels=False,
                            widgets=[self.tissue, self.complete, self.use])
        for line in (layers, meaning):
            line.margins = (0, 0, 0, 0)
        self.margins = (0, 4, 0, 4)
        self.extend([layers, meaning])
        self.labels_layer.changed.connect(self._guess_tissue)
        self.complete.changed.connect(self._hint_choices)
        self._guess_tissue()
        self._hint_choices()

    def _guess_tissue(self, _=None) -> None:
        layer = self.labels_layer.value
        meta = (layer.metadata or {}) if layer is not None else {}
        code = meta.get("tissue") or meta.get("region")
        if code in self.tissue.choices:  # choices are the codes
            self.tissue.value = code

    def reset_choices(self, *_: Any) -> None:
        """Refresh the row's layer and tissue choices."""
        for w in (self.image, self.labels_layer, self.tissue, self.complete):
            w.reset_choices()
        self._hint_choices()

    def _hint_choices(self, *_: Any) -> None:
        """Each completeness choice explains itself (tooltip of the item and of the box)."""
        from qtpy.QtCore import Qt

        for i, value in enumerate(self.complete.choices):
            self.complete.native.setItemData(i, completeness_hint(value), Qt.ToolTipRole)
        self.complete.tooltip = completeness_hint(self.complete.value)


class FinetuneWidget(DockWidget):
    """Rows of annotations, training settings, Train / Stop, live plot, Use this model."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer)
        self.kind = ComboBox(label="data", value="renal", choices=[
            (t.data_label, t.name) for t in TASKS.values()])
        self.train_what = ComboBox(label="train", value=Trains.SEGMENTER, choices=[
            ("segmenter (fine-tune)", Trains.SEGMENTER),
            ("histology generator", Trains.GENERATOR),
            ("mean of checkpoints (no training)", Trains.AVERAGE),
            ("thresholds per tissue (no training)", Trains.CALIBRATE)],
            tooltip="fine-tune the segmenter on the rows, train the Synthesize widget's "
                    "generator on them (each row's tissue is known where it is painted), "
                    "average the weights of models trained from one start (a model soup), or "
                    "choose where each tissue's probability is cut on the train rows, in "
                    "seconds (docs/finetuning.md)")
        self.stain = ComboBox(label="stain", value="pas", choices=[
            (name, code) for code, name in vocab.STAINS.items()],
            tooltip="the stain of the rows' images (the generator's condition)")
        self.rows: Container = Container(labels=False, label="annotations")
        self.row_header = wrapping_label(ROW_HEADER)
        self.add_row_button = PushButton(text="Add annotation row")
        self.magnification = ComboBox(label="magnification", value=FROM_IMAGE, choices=[
            FROM_IMAGE, *[f"{m}x" for m in vocab.MAGNIFICATIONS]])
        self.start_from = ComboBox(label="start from", value=ModelSource.IN_USE, choices=[
            ("model in use (fine-tuned, else bundled)", ModelSource.IN_USE),
            ("bundled", ModelSource.BUNDLED), ("checkpoint file", ModelSource.FILE)])
        self.model_file = FileEdit(label="checkpoint", filter="*.pt *.pth *.tar", visible=False)
        self.minutes = FloatSpinBox(label="minutes", value=5.0, min=0.1, max=240, step=1.0)
        self.semi = CheckBox(label="semi-supervised", value=False,
                             tooltip="pseudo-labels for the other tissues + two-view consistency")
        self.keep_start = FloatSpinBox(
            label="keep of start", value=0.0, min=0.0, max=0.9, step=0.1,
            tooltip="share of the starting model's weights mixed back in at the end (0: "
                    "none). 0.5 keeps most of what it knew of slides unlike your rows (other "
                    "stains, tissues you did not paint) for a little of the gain on them "
                    "(docs/finetuning.md)")
        self.synthetic = SpinBox(label="synthetic pairs", value=0, min=0, max=200,
                                 tooltip="per tissue: simulated layouts made into images by "
                                         "the generator; they join after half the time at "
                                         "loss weight 0.03 (0: none)")
        self.generator_file = FileEdit(label="generator", filter="*.pt", visible=False,
                                       tooltip="the generator of the synthetic pairs (empty: "
                                               "the bundled one)")
        self.adapt_to = Select(label="adapt to", choices=self._target_layers,
                               tooltip="unlabelled image layers of your slides (a whole slide "
                                       "is sampled on tissue at 5, 10 and 40x): the model "
                                       "learns to see them as it sees its training data "
                                       "(adversarial adaptation; docs/adaptation.md); with no "
                                       "rows painted, the source is the simulator")
        self.adapt_to.native.setMaximumHeight(90)
        self.average_of = FileEdit(label="checkpoints", mode=FileDialogMode.EXISTING_FILES,
                                   filter="*.pt", visible=False,
                                   tooltip="two or more checkpoints of one network and width, "
                                           "best fine-tuned from the same start; their "
                                           "weights are averaged")
        self.save_to = FileEdit(label="save to", mode=FileDialogMode.OPTIONAL_FILE,
                                filter="*.pt", value=DEFAULT_SAVE["renal"])
        self.plot = LossPlot()
        self.use_button = PushButton(text="Use this model", enabled=False)
        *run, status = self._run_controls("Train")
        self.extend([self.kind, self.train_what, self.row_header, self.rows,
                     self.add_row_button,
                     self.magnification, self.stain, self.start_from, self.model_file,
                     self.minutes, self.semi, self.keep_start, self.synthetic,
                     self.generator_file,
                     self.adapt_to, self.average_of, self.save_to, *run, self.use_button,
                     status])
        self.native.layout().insertWidget(self.native.layout().count() - 2, self.plot.native)
        self.add_row_button.changed.connect(lambda: self.add_row())
        self.kind.changed.connect(self._on_kind)
        self.train_what.changed.connect(self._on_kind)
        self.synthetic.changed.connect(self._on_kind)
        self.adapt_to.changed.connect(self._show_keep_start)
        self.start_from.changed.connect(
            lambda v: setattr(self.model_file, "visible", v == ModelSource.FILE))
        self.use_button.changed.connect(self.use_trained)
        self._on_layers_changed(self._refresh)
        self.trained: tuple[str, Any, str] | None = None
        self._warned_for: tuple | None = None
        self.add_row()

    # -- rows ----------------------------------------------------------------------------------

    @property
    def task(self) -> Task:
        """The task of the rows (kidney slides or fetal MRI volumes)."""
        return TASKS[self.kind.value]

    @property
    def trains_generator(self) -> bool:
        """Whether the rows train the histology generator (kidney slides only)."""
        return self.task.image == ImageKind.RGB and self.train_what.value == Trains.GENERATOR

    @property
    def averages(self) -> bool:
        """Whether the widget averages checkpoints instead of training (kidney slides)."""
        return self.task.image == ImageKind.RGB and self.train_what.value == Trains.AVERAGE

    @property
    def calibrates(self) -> bool:
        """Whether the widget chooses the segmenter's thresholds instead of training."""
        return self.task.image == ImageKind.RGB and self.train_what.value == Trains.CALIBRATE

    def _on_kind(self, _=None) -> None:
        rgb, generator, average = (self.task.image == ImageKind.RGB, self.trains_generator,
                                   self.averages)
        calibrate = self.calibrates
        self.train_what.visible = rgb
        # averaging reads checkpoint files only: the rows and training settings step aside
        for w in (self.row_header, self.rows, self.add_row_button, self.start_from):
            w.visible = not average
        self.minutes.visible = not average and not calibrate
        self.model_file.visible = not average and self.start_from.value == ModelSource.FILE
        # the segmenter, from the rows
        fine_tunes = not generator and not average and not calibrate
        self.magnification.visible = rgb and not average
        self.stain.visible = rgb and not average and not calibrate
        self.semi.visible = self.task.semi_supervision and fine_tunes
        self._show_keep_start()
        self.synthetic.visible = self.adapt_to.visible = rgb and fine_tunes
        self.generator_file.visible = rgb and fine_tunes and self.synthetic.value > 0
        self.average_of.visible = average
        self.plot.native.setVisible(not average and not calibrate)  # nothing trains
        self.run_button.text = ("Average" if average else "Calibrate" if calibrate
                                else "Train")
        if Path(str(self.save_to.value)) in DEFAULT_SAVE.values():  # not chosen by the user
            self.save_to.value = DEFAULT_SAVE[GENERATOR if generator else self.task.name]
        self._refresh()
        for row in self.rows:
            row._guess_tissue()

    def _show_keep_start(self, _=None) -> None:
        """The start's share applies to fine-tuning on rows, not to adaptation."""
        self.keep_start.visible = (not self.trains_generator and not self.averages
                                   and not self.calibrates and not self.adapts)

    def _image_layers(self, _=None) -> list:
        return image_layers(self.viewer, self.task.image)

    def _target_layers(self, _=None) -> list:
        return image_layers(self.viewer, ImageKind.RGB)

    def _target_choices(self, _=None) -> list:
        return list(self.task.conditions)

    def _labels_layers(self, _=None) -> list:
        return layers_of_type(self.viewer, "Labels", LABELS_NDIM[self.task.image])

    def _completeness_choices(self, _=None) -> list:
        fixed = [(PAINTED_ONLY, PAINTED_ONLY), (WHOLE_LAYER, WHOLE_LAYER)]
        if self.task.image != ImageKind.RGB:  # shapes outline 2D regions
            return fixed
        return fixed + [(f"inside shapes of {name}", lyr)
                        for name, lyr in layers_of_type(self.viewer, "Shapes")]

    def add_row(self) -> AnnotationRow:
        """Append an annotation row (picks the newest labels layer not listed yet)."""
        row = AnnotationRow(self)
        used = {r.labels_layer.value for r in self.rows}
        free = [lyr for _, lyr in self._labels_layers() if lyr not in used]
        if free:
            row.labels_layer.value = free[-1]
        row.remove_button.changed.connect(lambda: self.rows.remove(row))
        self.rows.append(row)
        return row

    def _refresh(self, event=None) -> None:
        for row in self.rows:
            row.reset_choices()
        self.adapt_to.reset_choices()

    # -- annotations ---------------------------------------------------------------------------

    @property
    def adapts(self) -> bool:
        """Whether unlabelled layers are chosen to adapt to (kidney segmenter only)."""
        return (self.task.image == ImageKind.RGB and not self.trains_generator
                and bool(self.adapt_to.value))

    def annotations(self) -> tuple[list, list]:
        """Read the rows into (train, validation) annotations; layers are only read. When
        adapting, rows left empty are skipped and none are needed."""
        read = {ImageKind.RGB: self._slide_annotation, ImageKind.VOLUME: self._volume_annotation}[
            self.task.image]
        train: list = []
        val: list = []
        for row in self.rows:
            image, labels = row.image.value, row.labels_layer.value
            if self.adapts and labels is None:
                continue  # an unused row: adaptation needs no labels
            if image is None or labels is None:
                what = "an image layer" if self.task.image == ImageKind.RGB else "a 3D volume layer"
                raise OmnisegInputError(f"each row needs {what} and a labels layer")
            (train if row.use.value == "train" else val).append(read(row, image, labels))
        if not train and not self.adapts:
            raise OmnisegInputError("add at least one annotation row used for training")
        return train, val

    def target_choice(self) -> tuple[list, float | None]:
        """The chosen unlabelled layers and the µm/px typed for them (None: from each layer),
        read in the GUI thread; :func:`read_targets` samples them in the worker."""
        layers = list(self.adapt_to.value)
        mag = None
        for layer in layers:  # a missing pixel size is told before anything starts
            _, mag = slide_at_choice(layer, self.magnification.value)
        return layers, None if mag is None else vocab.mpp_of_magnification(mag)

    def _volume_annotation(self, row: AnnotationRow, image: Any, labels: Any):
        from ..train.task_functions import functions_of

        return functions_of(self.task).annotation_from_layers(
            np.asarray(image.data), np.asarray(labels.data), row.tissue.value,
            annotated=row.complete.value == WHOLE_LAYER, name=f"{labels.name} on {image.name}")

    def _slide_annotation(self, row: AnnotationRow, image: Any, labels: Any):
        from ..train.annotations import (
            MARGIN,
            at_optimal_magnification,
            box_around,
            painted_and_known,
        )
        from ..train.task_functions import functions_of

        slide, mag = slide_at_choice(image, self.magnification.value)
        lab = labels_array(labels)
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
        # only the painted part and its context is read from the (possibly whole-slide) image
        _, known = painted_and_known(lab, annotated, labels.name)
        sl = box_around(known, MARGIN)
        return at_optimal_magnification(functions_of(self.task).annotation_from_layers(
            image_array(image, sl), lab[sl], row.tissue.value, mag or slide.magnification,
            annotated=annotated[sl] if isinstance(annotated, np.ndarray) else annotated,
            name=f"{labels.name} on {image.name}"))

    def _base_choice(self) -> tuple[str, str, str]:
        """What to start from, checked but not loaded: (task name, source, path)."""
        name = GENERATOR if self.trains_generator else self.task.name
        source, path = self.start_from.value, str(self.model_file.value)
        if source == ModelSource.IN_USE and MODELS_IN_USE.model(name) is None:
            source = ModelSource.BUNDLED  # "fine-tuned, else bundled"
        MODELS_IN_USE.check_choice(name, source, path)
        return name, source, path

    def _synthetic_choice(self) -> str | None:
        """The generator of the synthetic pairs (a path or "synthesis"), if pairs are asked."""
        if self.task.image != ImageKind.RGB or self.trains_generator or not self.synthetic.value:
            return None
        path = str(self.generator_file.value or "")
        return path if path not in ("", ".") else GENERATOR

    @staticmethod
    def _load_base(name: str, source: str, path: str, generator: bool) -> tuple[Any, str]:
        """The model to start from (in the worker: loading takes up to seconds)."""
        model, label = MODELS_IN_USE.chosen(name, source, path)
        if generator:
            from ..checkpoints import check_generator

            check_generator(model, label)
        return model, label

    # -- training ------------------------------------------------------------------------------

    def start(self) -> None:
        """Read the rows and settings and train in a worker thread."""
        if self.worker is not None:
            return
        if self.averages:
            self._start_average()
            return
        if self.calibrates:
            self._start_calibration()
            return
        try:
            train, val = self.annotations()
            if train and self._warned_positive_only(train):
                return
            base_choice = self._base_choice()
            synthetic_from = self._synthetic_choice()
            out = self._save_path()
        except OmnisegInputError as e:
            self._report(str(e))
            return
        task = self.task
        minutes, semi = float(self.minutes.value), bool(self.semi.value) and task.semi_supervision
        stain, n_synthetic = self.stain.value, int(self.synthetic.value)
        every = max(10.0, minutes * 60 / 12)
        trains_generator = self.trains_generator

        def base(progress):
            progress(0, 0, "loading the model...")
            return self._load_base(*base_choice, trains_generator)

        if trains_generator:
            job = self._generator_job(train, base, out, minutes, stain, every)
        elif self.adapts:
            job = self._adapt_job(train, val, base, out, minutes, every)
        else:
            from ..train.run_finetune import FinetuneOptions, run_finetune

            options = FinetuneOptions(minutes=minutes, semi_supervised=semi,
                                      synthetic=n_synthetic if synthetic_from else 0,
                                      generator=synthetic_from or GENERATOR,
                                      stains=(stain,), validate_every=every,
                                      keep_start=float(self.keep_start.value))

            def job(progress, should_stop, emit):
                model, base_name = base(progress)
                result = run_finetune(task, model, base_name, train, val, out, options,
                                      progress=progress, should_stop=should_stop,
                                      on_validate=emit)
                return result, out, task.name

        self.plot.clear()
        self.use_button.enabled = False
        what = f"{len(train)} annotation(s)"
        if self.adapts:
            what = f"{what} and {len(self.adapt_to.value)} unlabelled layer(s)"
        self._launch(job, status=f"training on {what}...",
                     failure="training failed", on_event=self.plot.add,
                     on_returned=self._on_done)

    def _warned_positive_only(self, train: list) -> bool:
        """Warn (and do not start) when a segmenter's tissue has painted pixels only; the same
        rows trained again after the warning go ahead: the person was told."""
        from ..train.annotations import (
            annotation_target,
            no_background_sentence,
            tissues_without_background,
        )

        codes = [] if self.trains_generator else tissues_without_background(train)
        key = tuple((a.name, annotation_target(a), int(a.known.sum())) for a in train)
        if not codes or key == self._warned_for:
            self._warned_for = None
            return False
        from napari.utils.notifications import show_warning

        self._warned_for = key
        msg = no_background_sentence(codes) + "; click Train again to train as it is"
        self.status.value = msg
        show_warning(msg)
        return True

    def _adapt_job(self, train: list, val: list, base: Any, out: Path, minutes: float,
                   every: float):
        """The worker's job when unlabelled layers are chosen: adversarial adaptation, the
        rows (if any) as the labelled source, else the simulator's slides."""
        from ..train.adapt import AdaptOptions, run_adapt

        layers, mpp = self.target_choice()
        options = AdaptOptions(minutes=minutes, validate_every=every)
        self._notes: list[str] = []

        def job(progress, should_stop, emit):
            progress(0, 0, "sampling the unlabelled layers on tissue...")
            targets = read_targets(layers, mpp, self._notes)
            model, base_name = base(progress)
            result = run_adapt(model, base_name, targets, out, options, source=train or None,
                               val=val or None, progress=progress, should_stop=should_stop,
                               on_validate=emit)
            return result, out, "renal"

        return job

    @staticmethod
    def _generator_job(train: list, base: Any, out: Path, minutes: float, stain: str,
                       every: float):
        """The worker's job when the rows train the histology generator (validation rows are
        not used: a generator has no Dice to keep the best by); ``base(progress)`` loads the
        generator to start from."""
        def job(progress, should_stop, emit):
            from ..train.synthesis import pairs_from_annotations, train_generator

            init, _ = base(progress)
            pairs = pairs_from_annotations(train, 256, "layers painted in napari", stain)
            result = train_generator(out, pairs, minutes=minutes, crop=128, init=init,
                                     trained_on=f"{len(train)} annotations painted in napari",
                                     progress=progress, should_stop=should_stop,
                                     on_validate=emit, validate_every=every)
            result.model.eval()
            return result, out, GENERATOR

        return job

    def _start_average(self) -> None:
        """Average the chosen checkpoints' weights in a worker thread (seconds)."""
        chosen = self.average_of.value
        models = [Path(str(m)) for m in (chosen if isinstance(chosen, tuple) else ())]
        try:
            if len(models) < 2:
                raise OmnisegInputError("choose two or more checkpoints to average")
            out = self._save_path()
            if out.resolve() in {m.resolve() for m in models}:
                raise OmnisegInputError(f"cannot save the mean over {out.name}, one of the "
                                        "models averaged: choose another file")
        except OmnisegInputError as e:
            self._report(str(e))
            return
        task_name = self.task.name

        def job(progress, should_stop, emit):
            from ..checkpoints import load_model
            from ..train.average import average_checkpoints, drops_familiarity

            progress(0, 0, f"averaging {len(models)} models...")
            average_checkpoints(models, out)
            model = load_model(out)
            task = GENERATOR if getattr(model, "histology_generator", False) else task_name
            return model, out, task, len(models), drops_familiarity(models)

        self.use_button.enabled = False
        self._launch(job, status=f"averaging {len(models)} models...",
                     failure="averaging failed", on_returned=self._on_averaged)

    def _on_averaged(self, value) -> None:
        model, out, task, n, had_familiarity = value
        self._keep_trained(task, model, out)
        # the out-of-distribution record is per training run and is not averaged
        note = ("; it has no out-of-distribution record, so Segment will not warn on "
                "unfamiliar slides (docs/training.md shows how to refit one)"
                if had_familiarity else "")
        self.status.value = f"done: the mean of {n} models; saved {out.name}{note}"
        self.use_button.enabled = True

    def _start_calibration(self) -> None:
        """Choose the thresholds on the train rows in a worker thread (seconds); the val
        rows, if any, are scored before and after."""
        try:
            train, val = self.annotations()  # refuses rows with none for training
            base_choice = self._base_choice()
            out = self._save_path()
        except OmnisegInputError as e:
            self._report(str(e))
            return
        task_name = self.task.name

        def job(progress, should_stop, emit):
            from ..train.calibrate import (
                calibrated_copy,
                check_calibratable,
                choose_thresholds,
                save_calibrated,
            )
            from ..train.finetune_renal import evaluate_annotations

            progress(0, 0, "loading the model...")
            model, name = self._load_base(*base_choice, False)
            check_calibratable(model, name)
            table = choose_thresholds(model, train, progress=progress,
                                      should_stop=should_stop)
            calibrated = calibrated_copy(model, table)
            scores = ([evaluate_annotations(m, val)["mean_dice"] for m in (model, calibrated)]
                      if val else None)
            save_calibrated(calibrated, out, table,
                            f"{len(train)} annotation rows painted in napari")
            return calibrated, out, task_name, table, scores

        self.use_button.enabled = False
        self._launch(job, status=f"choosing thresholds on {len(train)} annotation(s)...",
                     failure="calibration failed", on_returned=self._on_calibrated)

    def _on_calibrated(self, value) -> None:
        model, out, task_name, table, scores = value
        self._keep_trained(task_name, model, out)
        moved = [f"{code.upper()} {row['threshold']:g}" for code, row in table.items()
                 if row["threshold"] != 0.5]
        chosen = ("thresholds " + ", ".join(moved) + " (the others 0.5)" if moved else
                  "every threshold stays 0.5 (no tissue gained enough)")
        dice = (f"; validation Dice {scores[0]:.3f} before, {scores[1]:.3f} after"
                if scores else "")
        self.status.value = f"done: {chosen}{dice}; saved {out.name}"
        self.use_button.enabled = True

    def _save_path(self) -> Path:
        """The checkpoint file to write, refused in one sentence when its folder is missing."""
        out = Path(str(self.save_to.value))
        if not out.parent.is_dir():
            raise OmnisegInputError(f"cannot save to {out}: {out.parent} does not exist")
        return out

    def _on_done(self, value) -> None:
        result, out, task = value
        self._keep_trained(task, result.model, out)
        before = result.history[0].get("val_dice") if result.history else None
        dice = ("" if result.best_score is None
                else f", validation Dice {result.best_score:.3f}" if before is None
                else f", validation Dice {before:.3f} before, {result.best_score:.3f} after")
        notes = "".join(f"; {n}" for n in getattr(self, "_notes", []))
        self.status.value = (f"{'stopped' if result.stopped else 'done'}: {result.steps} steps"
                             f"{dice}; saved {out.name}{notes}")
        self.use_button.enabled = True

    def _keep_trained(self, task: str, model: Any, out: Path) -> None:
        """The model just made, for "Use this model" (named by its file and the time)."""
        self.trained = (task, model, f"{out.name} ({_dt.datetime.now():%H:%M})")

    def use_trained(self) -> None:
        """Make the trained model the one its task's segmenting widget uses."""
        if self.trained is not None:
            MODELS_IN_USE.set(*self.trained)
            self.status.value = f"model in use: {self.trained[2]}"


def read_targets(layers: list, mpp: float | None, notes: list[str]) -> Any:
    """Tissue crops of image layers as adaptation targets (in the worker: a whole slide is
    read crop by crop); a warning (a single image) is added to ``notes``."""
    import warnings

    from ..train.adapt_targets import TargetImages, sample_slide, targets_from_arrays

    out = TargetImages()
    for layer in layers:
        part = sample_slide(slide_from_layer(layer, mpp), crop=256, per_magnification=24,
                            seed=0, name=layer.name)
        out.images += part.images
        out.magnifications += part.magnifications
        out.names += part.names
    names = ", ".join(lyr.name for lyr in layers)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = targets_from_arrays(out.images, out.magnifications, out.names, 256,
                                  f"{len(out)} tissue crops of the layers {names}")
    notes += [str(w.message) for w in caught]
    return out
