"""The Quantify dock widget: per-tissue areas, object counts, densities and sizes of mask
layers, per slide or inside a region, as a table and plots; Visium spots as a Points layer.

Layers are only read. Long work runs in a helper thread with progress and Stop
(:mod:`napari_omniseg.widgets._worker_controls`); tables go to CSV through the core's writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, FileEdit, FloatSpinBox, LineEdit, PushButton, Select

from .. import vocab
from ..choices import ImageKind
from ..errors import OmnisegInputError
from ..io.labels import LabelImage, label_image_of
from .dock import DockWidget, wrapping_label
from .layers import image_layers, layers_of_type, slide_from_layer
from .plots import Plot

HEX_GRID = "hexagonal grid over the tissue"
SPACERANGER = "Space Ranger positions file"
_SUMMARY_COLUMNS = ("class", "area (mm²)", "objects", "per mm² of tissue",
                    "median size (µm²)")
#: The same columns for masks without a pixel size.
_PIXEL_COLUMNS = ("class", "area (px)", "objects", "per mm² of tissue", "median size (px)")


def label_image_of_layer(layer: Any) -> LabelImage:
    """A labels layer read as the core's :class:`LabelImage` (its finest level, its µm)."""
    data = list(layer.data) if layer.multiscale else layer.data
    return label_image_of(data, layer.name, layer.scale, layer.units, layer.metadata)


def region_of_layers(shapes_layer: Any, mask_layer: Any) -> Any:
    """The union of a Shapes layer's shapes in a mask layer's level-0 pixels (x, y)."""
    import shapely
    from shapely.geometry import Polygon

    polys = []
    for verts in shapes_layer.data:
        world = [shapes_layer.data_to_world(v) for v in np.asarray(verts)]
        rc = np.asarray([mask_layer.world_to_data(w) for w in world])[:, -2:]
        if len(rc) >= 3:
            # a pixel's centre is at its index + 0.5 in the outline's corner coordinates
            polys.append(Polygon(rc[:, ::-1] + 0.5).buffer(0))
    if not polys:
        raise OmnisegInputError(f"{shapes_layer.name} has no polygon or rectangle to measure in")
    return shapely.union_all(polys)


class QuantifyWidget(DockWidget):
    """Masks, image, region and minimum size in; a table, bars, a histogram and spots out."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer)
        self.summaries: list = []
        self._measured_slide: str | None = None
        self.spot_rows: list[dict] = []
        self.masks = Select(label="masks", choices=self._mask_layers,
                            tooltip="labels layers of one slide (Segment's masks, or painted)")
        self.image = ComboBox(label="slide", choices=self._image_choices,
                              tooltip="the slide: densities are per mm² of its tissue (glass "
                                      "excluded)")
        self.region = ComboBox(label="region", choices=self._region_choices)
        self.min_area = FloatSpinBox(
            label="min object µm²", value=-1.0, min=-1.0, max=1e6, step=1.0,
            tooltip="objects smaller than this are specks (they still count in the area); "
                    "'per tissue': " + ", ".join(f"{c.upper()} {v:g}"
                                                 for c, v in vocab.MIN_OBJECT_UM2.items()))
        self.min_area.native.setSpecialValueText("per tissue")  # shown at the minimum, -1
        *run, status = self._run_controls("Quantify")
        self.histogram_of = ComboBox(label="sizes of", choices=self._class_choices)
        self.save_button = PushButton(text="Save table as CSV...", enabled=False)
        self.spots_from = ComboBox(label="spots", value=HEX_GRID,
                                   choices=[HEX_GRID, SPACERANGER])
        self.positions = FileEdit(label="positions", filter="*.csv", visible=False)
        self.colour_by = ComboBox(label="colour by", choices=[t.label for t in vocab.TISSUES],
                                  value="PTC")
        self.spots_button = PushButton(text="Place spots")
        self.compare_table = FileEdit(label="compare with", filter="*.csv",
                                      tooltip="a CSV keyed by barcode (e.g. deconvolution)")
        self.compare_column = LineEdit(label="its column")
        self.compare_button = PushButton(text="Correlate")
        self.correlation = wrapping_label()
        self.extend([self.masks, self.image, self.region, self.min_area, *run, status,
                     self.save_button, self.histogram_of, self.spots_from, self.positions,
                     self.colour_by, self.spots_button, self.compare_table,
                     self.compare_column, self.compare_button, self.correlation])
        from qtpy.QtWidgets import QHeaderView, QTableWidget

        self.table = QTableWidget(0, len(_SUMMARY_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(_SUMMARY_COLUMNS))
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.setMinimumHeight(150)
        self.bars = Plot(height_px=170)
        self.sizes = Plot(height_px=170)
        self._insert_after(status, self.table, self.bars.native)
        self._insert_after(self.histogram_of, self.sizes.native)
        self.spots_from.changed.connect(
            lambda v: setattr(self.positions, "visible", v == SPACERANGER))
        self.histogram_of.changed.connect(self._draw_sizes)
        self.save_button.changed.connect(self._ask_save)
        self.spots_button.changed.connect(self.place_spots)
        self.compare_button.changed.connect(self.correlate)
        self._on_layers_changed(self._refresh)
        self._refresh()

    def _insert_after(self, widget: Any, *natives: Any) -> None:
        """Place Qt widgets (table, plots) right below a magicgui widget of the container."""
        layout = self.native.layout()
        row = widget.native
        while row is not None and layout.indexOf(row) < 0:  # labelled rows are wrapped
            row = row.parentWidget()
        at = layout.indexOf(row) if row is not None else layout.count() - 1
        for k, w in enumerate(natives):
            layout.insertWidget(at + 1 + k, w)

    # -- choices -------------------------------------------------------------------------------

    def _class_choices(self, _=None) -> list:
        return [s.cls.name for s in self.summaries]

    def _mask_layers(self, _=None) -> list:
        return layers_of_type(self.viewer, "Labels", ndim=2)

    def _image_choices(self, _=None) -> list:
        return [("none (no densities)", None), *image_layers(self.viewer, ImageKind.RGB)]

    def _region_choices(self, _=None) -> list:
        return [("whole slide", None), *layers_of_type(self.viewer, "Shapes")]

    def _refresh(self, *_: Any) -> None:
        for w in (self.masks, self.image, self.region):
            w.reset_choices()
        if not self.masks.value and self.masks.choices:
            self.masks.value = list(self.masks.choices)  # all masks, until the user picks
        if self.image.value is None and len(self.image.choices) > 1:
            self.image.value = self.image.choices[1]

    def _inputs(self) -> tuple[list, list[LabelImage], Any]:
        layers = list(self.masks.value)
        if not layers:
            raise OmnisegInputError("choose at least one labels layer (a mask) to measure")
        images = [label_image_of_layer(lyr) for lyr in layers]
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise OmnisegInputError("the chosen masks have different sizes; choose the masks "
                                    "of one slide")
        region = (region_of_layers(self.region.value, layers[0])
                  if self.region.value is not None else None)
        return layers, images, region

    # -- measuring -----------------------------------------------------------------------------

    def start(self) -> None:
        """Measure the chosen masks in a helper thread."""
        from ..quantify.measure import summarize, tissue_area_mm2

        try:
            _layers, images, region = self._inputs()
            slide = self._slide()
        except OmnisegInputError as e:
            self._report(str(e))
            return
        self._measured_slide = None if self.image.value is None else self.image.value.name
        min_area = self.min_area_um2()

        def job(progress, should_stop, emit):
            tissue = tissue_area_mm2(slide, region) if slide is not None else None
            return summarize(images, tissue, region, min_area, progress=progress,
                             should_stop=should_stop)

        self._launch(job, status="measuring...", failure="measuring failed",
                     on_returned=self._show)

    def _slide(self) -> Any:
        """The chosen slide, or None (none chosen, or one without a pixel size: its tissue
        area in mm² is unknown, so there are no densities)."""
        from ..errors import MissingPixelSizeError

        if self.image.value is None:
            return None
        try:
            return slide_from_layer(self.image.value)
        except MissingPixelSizeError:
            return None

    def min_area_um2(self) -> float | None:
        """The chosen minimum object size; None: each tissue's default."""
        v = float(self.min_area.value)
        return None if v < 0 else v

    def _show(self, summaries: list) -> None:
        from qtpy.QtWidgets import QTableWidgetItem

        self.summaries = summaries
        in_um = all(s.mpp for s in summaries)
        self.table.setHorizontalHeaderLabels(list(_SUMMARY_COLUMNS if in_um else _PIXEL_COLUMNS))
        rows = [s.row() for s in summaries]
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            values = [row["class"], row.get("area mm2", row.get("area px")), row["objects"],
                      row["objects per mm2 of tissue"], row["median object um2"]]
            for j, v in enumerate(values):
                self.table.setItem(i, j, QTableWidgetItem("" if v is None else f"{v:g}"
                                                          if isinstance(v, float) else str(v)))
        self.bars.bars([s.cls.name for s in summaries], [s.area_mm2 for s in summaries],
                       [np.asarray(s.cls.color) / 255 for s in summaries],
                       "area (mm²)" if summaries and summaries[0].mpp else "area (px)",
                       "area per tissue")
        self.histogram_of.reset_choices()
        if summaries:
            busiest = max(summaries, key=lambda s: s.count)
            self.histogram_of.value = busiest.cls.name
        self._draw_sizes()
        self.save_button.enabled = bool(summaries)
        tissue = summaries[0].tissue_mm2 if summaries else None
        if tissue:
            where = f" on {tissue:.3f} mm² of tissue"
        elif not in_um:
            where = (" in pixels: the masks have no pixel size (give the image's µm/px in "
                     "Segment, or open the masks with this plugin's reader)")
        elif self._measured_slide is None:
            where = " (no slide chosen: no densities)"
        else:
            where = f" (no tissue found on {self._measured_slide}: no densities)"
        self.status.value = f"measured {len(summaries)} tissue(s){where}"

    def _draw_sizes(self, *_: Any) -> None:
        chosen = [s for s in self.summaries if s.cls.name == self.histogram_of.value]
        if chosen:
            s = chosen[0]
            self.sizes.histogram(s.sizes, "object area (µm²)", np.asarray(s.cls.color) / 255,
                                 f"{s.cls.name}: {s.count} objects")

    def _ask_save(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self.native, "Save table", str(Path.home()),
                                              "CSV (*.csv)")
        if path:
            self.save_csv(path)

    def save_csv(self, path: str | Path) -> Path:
        """Write the measurements (and the spots, if placed) as CSV."""
        from ..quantify.measure import write_csv

        write_csv(path, [s.row() for s in self.summaries])
        if self.spot_rows:
            write_csv(Path(path).with_name(Path(path).stem + "_spots.csv"), self.spot_rows)
        self.status.value = f"saved {Path(path).name}"
        return Path(path)

    # -- spots ---------------------------------------------------------------------------------

    def place_spots(self) -> None:
        """Lay out or read Visium spots and measure each tissue's share of each spot."""
        from ..quantify.spots import (
            hexagonal_spots,
            read_spaceranger_spots,
            spot_percentages,
        )

        try:
            layers, images, _ = self._inputs()
            mpp = images[0].mpp
            if mpp is None:
                raise OmnisegInputError(f"{layers[0].name} has no pixel size in µm, and spots "
                                        "are sized in micrometres; open the masks with the "
                                        "plugin's reader or give the layer a µm scale")
            slide = self._slide()
            from_file = self.spots_from.value == SPACERANGER
            positions = Path(str(self.positions.value))
            if from_file and not positions.is_file():
                raise OmnisegInputError("choose Space Ranger's tissue_positions.csv")
        except OmnisegInputError as e:
            self._report(str(e))
            return

        def job(progress, should_stop, emit):
            from ..predict.tissue_mask import tissue_mask

            if from_file:
                spots = read_spaceranger_spots(positions, images[0].shape, mpp=mpp)
            else:
                spots = hexagonal_spots(images[0].shape, mpp,
                                        tissue_mask(slide) if slide is not None else None)
            pct = spot_percentages(images, spots, progress=progress, should_stop=should_stop)
            return spots, pct

        self._launch(job, status="measuring spots...", failure="spots failed",
                     on_returned=lambda value: self._show_spots(layers[0], mpp, *value))

    def _show_spots(self, mask_layer: Any, mpp: float, spots, pct: dict) -> None:
        from napari.layers import Points

        from ..quantify.spots import spot_rows

        self.spot_rows = spot_rows(spots, pct, mpp)
        features = {f"{name} %": values for name, values in pct.items()}
        chosen = f"{self.colour_by.value} %"
        if chosen not in features:
            chosen = next(iter(features), None)
        name = "Visium spots"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)  # placing again replaces them
        layer = Points(np.column_stack([spots.rows, spots.cols]) if len(spots) else
                       np.zeros((0, 2)), name=name, size=spots.diameter,
                       scale=mask_layer.scale, translate=mask_layer.translate,
                       units=mask_layer.units, features=features or None,
                       face_color=chosen or "white", face_colormap="viridis",
                       border_width=0, opacity=0.7,
                       metadata={"barcodes": spots.barcodes})
        self.viewer.add_layer(layer)
        self.spots_layer = layer
        skipped = f"; {spots.skipped} outside the slide skipped" if spots.skipped else ""
        self.status.value = f"{len(spots)} spots, coloured by {chosen}{skipped}"
        self.save_button.enabled = True

    def correlate(self) -> None:
        """Pearson and Spearman correlation of the colouring tissue's spot percentage with a
        column of the user's table."""
        from ..quantify.spots import correlate

        try:
            if not self.spot_rows:
                raise OmnisegInputError("place the spots first")
            key = f"{self.colour_by.value} %"
            if key not in self.spot_rows[0]:
                raise OmnisegInputError(f"the masks have no {self.colour_by.value}")
            table = Path(str(self.compare_table.value))
            if not table.is_file():
                raise OmnisegInputError("choose the table to compare with (a CSV)")
            r = correlate({row["barcode"]: row[key] for row in self.spot_rows}, table,
                          self.compare_column.value)
        except OmnisegInputError as e:
            self._report(str(e))
            return
        self.correlation.value = (f"{self.colour_by.value} % vs {self.compare_column.value}: "
                                  f"Pearson {r['pearson']:.3f}, Spearman {r['spearman']:.3f} "
                                  f"({r['spots']} spots)")
