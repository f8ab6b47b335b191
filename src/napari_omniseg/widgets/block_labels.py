"""The Block labels dock widget: train the renal model from one class per block ("many / few /
no capillaries here") instead of painted pixels (label super-resolution).

The person makes a coarse Labels layer over an image (one pixel = one block, scaled so that it
overlays the image exactly), paints block classes on it, and gives the block table, p(fraction
of the tissue | block class): typed into the table, loaded from CSV, or estimated from a few
blocks painted fully on a pixel Labels layer. Training runs on a copy of the model in use in a
worker thread with a live plot; Stop keeps the model so far; the fit report compares, per
class, the table with the model's predicted fractions. Layers are only read, except the block
layer the helper makes.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.types import FileDialogMode
from magicgui.widgets import (
    ComboBox,
    FileEdit,
    FloatSpinBox,
    PushButton,
    SpinBox,
    Table,
)

from .. import vocab
from ..choices import LsrDistance, LsrLoss
from ..errors import OmnisegInputError
from .dock import DockWidget, wrapping_label
from .layers import (
    FROM_IMAGE,
    image_array,
    image_layers,
    labels_array,
    layers_of_type,
    slide_at_choice,
)
from .model_in_use import MODELS_IN_USE
from .plots import LossPlot

TABLE_COLUMNS = ("tissue", "block_class", "mean", "sd")
#: A starting table: three classes (none, few, many) for the chosen tissue.
DEFAULT_CLASSES = ((1, 0.0, 0.02), (2, 0.15, 0.1), (3, 0.5, 0.15))
DEFAULT_SAVE = Path.home() / "omniseg_blocks_finetuned.pt"


def block_layer_geometry(image: Any, block_size: int) -> tuple[tuple[float, ...],
                                                               tuple[float, ...]]:
    """Scale and translate of a block layer over ``image`` so that block (i, j) covers the
    image pixels ``i*b .. (i+1)*b - 1`` (napari centres a pixel on its index)."""
    scale = tuple(float(s) * block_size for s in image.scale[-2:])
    translate = tuple(float(t) + float(s) * (block_size - 1) / 2
                      for t, s in zip(image.translate[-2:], image.scale[-2:]))
    return scale, translate


class BlockLabelsWidget(DockWidget):
    """Make a block layer, edit the block table, train from block labels, fit report."""

    task_name = "renal"

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer)
        self.image = ComboBox(label="image", choices=self._image_layers)
        self.tissue = ComboBox(label="tissue", value="ptc", choices=[
            (t.label, t.code) for t in vocab.TISSUES],
            tooltip="the tissue the block classes are about")
        self.magnification = ComboBox(label="magnification", value=FROM_IMAGE, choices=[
            FROM_IMAGE, *[f"{m}x" for m in vocab.MAGNIFICATIONS]])
        self.block_size = SpinBox(label="block size (px)", value=64, min=2, max=4096,
                                  tooltip="image pixels per block side; it must divide the "
                                          "image's height and width")
        self.make_button = PushButton(text="Make block layer for this image")
        self.blocks = ComboBox(label="block labels", choices=self._labels_layers,
                               tooltip="a block layer: one pixel per block, 0 unlabelled, "
                                       "1, 2, ... the block's class")
        self.table = Table(value=[], columns=list(TABLE_COLUMNS), label="block table")
        self.table.native.setMinimumHeight(140)
        self.default_button = PushButton(text="Three classes (none / few / many)")
        self.load_table = FileEdit(label="load table", filter="*.csv",
                                   mode=FileDialogMode.EXISTING_FILE)
        self.save_table = FileEdit(label="save table", filter="*.csv",
                                   mode=FileDialogMode.OPTIONAL_FILE)
        self.save_table_button = PushButton(text="Save table")
        self.painted = ComboBox(label="painted blocks", choices=self._optional_labels,
                                tooltip="a pixel Labels layer on the image: in every block with "
                                        "any painted pixel, painted = tissue and unpainted = "
                                        "background; each such block is an example of its "
                                        "class")
        self.estimate_button = PushButton(text="Estimate table from painted blocks")
        self.loss = ComboBox(label="loss", value=LsrLoss.INTRA_INTER,
                             choices=[(str(c), c) for c in LsrLoss])
        self.distance = ComboBox(label="distance", value=LsrDistance.NLL,
                                 choices=[(str(c), c) for c in LsrDistance])
        self.alpha = FloatSpinBox(label="alpha", value=0.8, min=0.05, max=5, step=0.1,
                                  tooltip="the table's sd is matched as alpha x sd")
        self.group_size = SpinBox(label="group size", value=8, min=1, max=256,
                                  tooltip="blocks of one class matched together")
        self.minutes = FloatSpinBox(label="minutes", value=5.0, min=0.1, max=240, step=1.0)
        model_choice = self._model_choice("renal", "bundled renal model")
        self.save_to = FileEdit(label="save to", mode=FileDialogMode.OPTIONAL_FILE,
                                filter="*.pt", value=DEFAULT_SAVE)
        self.plot = LossPlot()
        self.report = wrapping_label()
        self.use_button = PushButton(text="Use this model", enabled=False)
        *run, status = self._run_controls("Train")
        self.extend([self.image, self.tissue, self.magnification, self.block_size,
                     self.make_button, self.blocks, self.table, self.default_button,
                     self.load_table, self.save_table, self.save_table_button, self.painted,
                     self.estimate_button, self.loss, self.distance, self.alpha,
                     self.group_size, self.minutes, *model_choice, self.save_to, *run, self.report,
                     self.use_button, status])
        self.native.layout().insertWidget(self.native.layout().count() - 3, self.plot.native)
        self.make_button.changed.connect(self._told(self.make_block_layer))
        self.default_button.changed.connect(self._told(self.default_table))
        self.load_table.changed.connect(self._told(self.load_table_file))
        self.save_table_button.changed.connect(self._told(self.save_table_file))
        self.estimate_button.changed.connect(self._told(self.estimate_table))
        self.use_button.changed.connect(self.use_trained)
        self._on_layers_changed(self._refresh)
        self.trained: tuple[str, Any, str] | None = None
        self.default_table()

    # -- choices -------------------------------------------------------------------------------

    def _image_layers(self, _=None) -> list:
        from ..choices import ImageKind

        return image_layers(self.viewer, ImageKind.RGB)

    def _labels_layers(self, _=None) -> list:
        return layers_of_type(self.viewer, "Labels", 2)

    def _optional_labels(self, _=None) -> list:
        return [("(none)", None), *self._labels_layers()]

    def _refresh(self, event=None) -> None:
        for w in (self.image, self.blocks, self.painted):
            w.reset_choices()

    # -- the block layer -----------------------------------------------------------------------

    def make_block_layer(self) -> Any:
        """Add an empty block layer over the chosen image (its sides must be whole blocks)."""
        from ..train.block_labels import check_cover

        image = self._chosen_image()
        b = int(self.block_size.value)
        h, w = (image.data[0] if image.multiscale else image.data).shape[:2]
        check_cover((h, w), (h // b, w // b), b, image.name)
        blocks = np.zeros((h // b, w // b), np.uint8)
        scale, translate = block_layer_geometry(image, b)
        layer = self.viewer.add_labels(
            blocks, name=f"{image.name} blocks ({b} px)", scale=scale, translate=translate,
            opacity=0.45, metadata={"block_size": b, "tissue": self.tissue.value,
                                    "image": image.name})
        self.blocks.reset_choices()
        self.blocks.value = layer
        self.status.value = (f"paint block classes on {layer.name}: 1 = none of the tissue, "
                             "higher = more (as the table says)")
        return layer

    def _chosen_image(self) -> Any:
        if self.image.value is None:
            raise OmnisegInputError("open an RGB image first (File > Open)")
        return self.image.value

    def _block_size_of(self, layer: Any) -> int:
        return int((layer.metadata or {}).get("block_size") or self.block_size.value)

    # -- the table -----------------------------------------------------------------------------

    def default_table(self) -> None:
        """Fill the table with three classes of the chosen tissue."""
        self.set_table({(self.tissue.value, c): (m, s) for c, m, s in DEFAULT_CLASSES})

    def set_table(self, rows: dict) -> None:
        """Show ``{(tissue, class): (mean, sd)}`` in the table editor."""
        data = [[t, int(c), round(float(m), 4), round(float(s), 4)]
                for (t, c), (m, s) in sorted(rows.items())]
        self.table.value = {"data": data, "index": list(range(len(data))),
                            "columns": list(TABLE_COLUMNS)}

    def block_table(self) -> Any:
        """The table as typed (checked: means in [0, 1], sd above 0)."""
        from ..train.block_labels import BlockTable

        rows = {}
        for i, row in enumerate(self.table.value["data"], start=1):
            try:
                tissue = vocab.tissue(str(row[0]).strip()).code
                rows[(tissue, int(float(row[1])))] = (float(row[2]), float(row[3]))
            except (ValueError, TypeError):
                raise OmnisegInputError(f"block table row {i}: block_class, mean and sd must "
                                        "be numbers") from None
            except OmnisegInputError as e:
                raise OmnisegInputError(f"block table row {i}: {e}") from None
        if not rows:
            raise OmnisegInputError("the block table is empty; add classes or estimate them")
        return BlockTable(rows)

    def load_table_file(self) -> None:
        """Show the table of the chosen CSV."""
        from ..train.block_labels import BlockTable

        path = Path(str(self.load_table.value))
        if path.is_file():
            self.set_table(BlockTable.load(path).rows)
            self.status.value = f"block table loaded from {path.name}"

    def save_table_file(self) -> None:
        """Write the table as CSV (tissue, block_class, mean, sd)."""
        path = Path(str(self.save_table.value))
        if str(self.save_table.value) in ("", ".") or not path.parent.is_dir():
            raise OmnisegInputError("choose where to save the table (a .csv in an existing "
                                    "folder)")
        self.block_table().save(path)
        self.status.value = f"block table saved to {path.name}"

    def estimate_table(self) -> None:
        """The mask-estimated table: each block class from the fully painted blocks of the
        painted layer (classes without examples keep their rows)."""
        from ..train.block_labels import BlockTable, block_fractions

        layer, painted = self.blocks.value, self.painted.value
        if layer is None or painted is None:
            raise OmnisegInputError("choose the block labels and a painted pixel layer first")
        b = self._block_size_of(layer)
        z = labels_array(layer).astype(np.int64)
        pix = labels_array(painted)
        if pix.shape != (z.shape[0] * b, z.shape[1] * b):
            raise OmnisegInputError(f"{painted.name} ({pix.shape[0]} x {pix.shape[1]}) is not "
                                    f"drawn on the image of {layer.name}")
        hb, wb = z.shape
        touched = (pix > 0).reshape(hb, b, wb, b).any(axis=(1, 3))
        frac = block_fractions(pix > 0, b)
        tissue = self.tissue.value
        examples = [(tissue, int(z[i, j]), float(frac[i, j]))
                    for i, j in zip(*np.nonzero(touched & (z > 0)))]
        if not examples:
            raise OmnisegInputError("no block both has a class and painted pixels: paint the "
                                    "tissue fully inside a few labelled blocks")
        estimated = BlockTable.estimate(examples)
        try:
            rows = dict(self.block_table().rows)
        except OmnisegInputError:
            rows = {}
        rows.update(estimated.rows)
        self.set_table(rows)
        self.status.value = (f"table estimated from {len(examples)} painted blocks "
                             f"({len(estimated.rows)} classes)")

    # -- training ------------------------------------------------------------------------------

    def block_annotation(self) -> Any:
        """The chosen image and block layer as a :class:`BlockAnnotation`, read over the
        labelled blocks only (a whole slide is not read)."""
        from ..train.annotations import nearest_magnification
        from ..train.block_labels import BlockAnnotation, check_cover

        image, layer = self._chosen_image(), self.blocks.value
        if layer is None:
            raise OmnisegInputError("choose a block labels layer (Make block layer first)")
        b = self._block_size_of(layer)
        z = labels_array(layer).astype(np.int64)
        data = image.data[0] if image.multiscale else image.data
        check_cover(data.shape[:2], z.shape, b, image.name)
        if not (z > 0).any():
            raise OmnisegInputError(f"{layer.name} has no block classes painted")
        slide, mag = slide_at_choice(image, self.magnification.value)
        rows, cols = np.nonzero(z)
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        pixels = image_array(image, (slice(r0 * b, r1 * b), slice(c0 * b, c1 * b)))
        return BlockAnnotation(pixels, z[r0:r1, c0:c1], b, self.tissue.value,
                               nearest_magnification(mag or slide.magnification),
                               name=f"{layer.name} on {image.name}")

    def start(self) -> None:
        """Read the block labels and the table, and train in a worker thread."""
        if self.worker is not None:
            return
        try:
            blocks = [self.block_annotation()]
            table = self.block_table()
            table.check_covers(blocks)
            out = Path(str(self.save_to.value))
            if not out.parent.is_dir():
                raise OmnisegInputError(f"cannot save to {out}: {out.parent} does not exist")
            source, path = self.model_source.value, str(self.model_file.value)
            MODELS_IN_USE.check_choice("renal", source, path)
        except OmnisegInputError as e:
            self._report(str(e))
            return
        from ..train.finetune_blocks import BlockOptions

        options = BlockOptions(loss=LsrLoss(self.loss.value),
                               distance=LsrDistance(self.distance.value),
                               alpha=float(self.alpha.value),
                               group_size=int(self.group_size.value))
        minutes = float(self.minutes.value)

        def job(progress, should_stop, emit):
            from ..train.finetune_blocks import (
                finetune_blocks,
                fit_report,
                save_block_finetuned,
            )

            progress(0, 0, "loading the model...")
            model, base_name = MODELS_IN_USE.chosen("renal", source, path)
            result = finetune_blocks(model, blocks, table, options=options, minutes=minutes,
                                     validate_every=max(10.0, minutes * 60 / 12),
                                     progress=progress, should_stop=should_stop,
                                     on_validate=emit)
            save_block_finetuned(result, out, base_name, blocks, table, options)
            progress(0, 0, "comparing the model's block fractions with the table...")
            return result, out, fit_report(result.model, blocks, table)

        self.plot.clear()
        self.use_button.enabled = False
        n = int(sum((a.blocks > 0).sum() for a in blocks))
        self._launch(job, status=f"training on {n} labelled blocks...",
                     failure="training failed", on_event=self.plot.add,
                     on_returned=self._on_done)

    def _on_done(self, value) -> None:
        result, out, report = value
        self.trained = ("renal", result.model, f"{out.name} ({_dt.datetime.now():%H:%M})")
        self.report.value = "\n".join(
            f"{r['tissue']} class {r['block_class']} ({r['blocks']} blocks): table "
            f"{r['target_mean']:.2f} ± {r['target_sd']:.2f}, model {r['predicted_mean']:.2f} "
            f"± {r['predicted_sd']:.2f}" for r in report)
        self.fit = report
        self.status.value = (f"{'stopped' if result.stopped else 'done'}: {result.steps} steps;"
                             f" saved {out.name}")
        self.use_button.enabled = True

    def use_trained(self) -> None:
        """Make the trained model the one Segment uses."""
        if self.trained is not None:
            MODELS_IN_USE.set(*self.trained)
            self.status.value = f"model in use: {self.trained[2]}"
