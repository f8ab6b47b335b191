"""Regenerate docs/images/*.png: napari with the plugin, as a user sees it.

Run under a display (or ``xvfb-run -a python docs/make_screenshot.py [renal] [finetune]
[fetal] [quantify] [synthesize] [prior] [correct] [blocks] [adapt]``;
all nine by default). Uses the bundled models and the
sample data. Widgets are opened the way a person opens them, from the Plugins menu
(``add_plugin_dock_widget``), and samples from File > Open Sample.
"""

import sys
import tempfile
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_omniseg.widgets.finetune import WHOLE_LAYER

OUT = Path(__file__).parent / "images"
PLUGIN = "napari-omniseg"


def open_widget(viewer, name: str):
    """Plugins > napari-omniseg > ``name``: the docked widget."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def _settle(seconds: float = 1.0) -> None:
    app = QApplication.instance()
    end = time.time() + seconds
    while time.time() < end:
        app.processEvents()
        time.sleep(0.02)


def _wait_for(widget) -> None:
    """Let the GUI run until the widget's worker has finished."""
    while widget.worker is not None:
        _settle(0.1)


def main(parts: set[str]) -> None:
    OUT.mkdir(exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 900)
    if "renal" in parts:
        renal(viewer)
    if "finetune" in parts:
        finetune(viewer)
    if "fetal" in parts:
        fetal(viewer)
    if "quantify" in parts:
        quantify(viewer)
    if "synthesize" in parts:
        synthesize(viewer)
    if "prior" in parts:
        synthesize(viewer, prior_only=True)
    if "correct" in parts:
        correct(viewer)
    if "blocks" in parts:
        blocks(viewer)
    if "adapt" in parts:
        adapt(viewer)
    viewer.close()


def renal(viewer) -> None:

    # sample data with its ground truth
    viewer.open_sample(PLUGIN, "renal_pas")
    viewer.layers[-1].visible = True
    viewer.layers[-1].opacity = 0.45
    viewer.reset_view()
    _settle()
    viewer.screenshot(str(OUT / "renal_sample.png"), canvas_only=False)
    viewer.layers[-1].visible = False

    # the Segment widget on the whole biopsy with the bundled model
    widget = open_widget(viewer, "Segment (kidney)")
    widget.tissue.value = "all"
    widget.where.value = "whole slide"
    widget.run_button.clicked()
    _wait_for(widget)
    viewer.reset_view()
    _settle()
    viewer.screenshot(str(OUT / "segment_widget.png"), canvas_only=False)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari < 0.9
    camera.zoom *= 5
    _settle()
    viewer.screenshot(str(OUT / "segment_zoom.png"), canvas_only=True)


def finetune(viewer) -> None:
    """Fine-tune: a 40x crop, PTC painted from the simulator's truth on its left half."""
    import numpy as np

    from napari_omniseg.simulate.renal import simulate_renal

    sim = simulate_renal(1024, 1024, stain="pas", seed=11, levels=1)
    viewer.window.remove_dock_widget("all")
    viewer.layers.clear()
    image = viewer.add_image(sim.image[0], rgb=True, name="PAS crop (40x)",
                             metadata={"mpp": 0.25})
    painted = np.zeros(sim.masks["ptc"][0].shape, np.uint8)
    painted[:, :600] = sim.masks["ptc"][0][:, :600] > 0
    viewer.add_labels(painted, name="PTC (painted)", opacity=0.7)
    ft = open_widget(viewer, "Fine-tune")
    row = ft.rows[0]
    row.image.value, row.tissue.value, row.complete.value = image, "ptc", WHOLE_LAYER
    ft.minutes.value = 1.0
    ft.save_to.value = str(Path(tempfile.gettempdir()) / "omniseg_finetuned_screenshot.pt")
    ft.run_button.clicked()
    _wait_for(ft)
    viewer.reset_view()
    _settle()
    viewer.screenshot(str(OUT / "finetune_widget.png"), canvas_only=False)


def fetal(viewer) -> None:
    viewer.window.remove_dock_widget("all")
    viewer.layers.clear()
    viewer.open_sample(PLUGIN, "fetal_mri")
    viewer.layers[-1].visible = True
    viewer.layers[-1].opacity = 0.4
    widget = open_widget(viewer, "Segment (fetal MRI)")
    viewer.reset_view()
    _settle()
    viewer.screenshot(str(OUT / "fetal_sample.png"), canvas_only=False)
    truth = viewer.layers[-1]  # the sample's own labels
    widget.region.value = "all"
    widget.run_button.clicked()
    _wait_for(widget)
    truth.visible = False
    _settle()
    viewer.screenshot(str(OUT / "fetal_segment.png"), canvas_only=False)


def quantify(viewer) -> None:
    """Quantify: the PAS sample's six masks measured, then Visium spots coloured by PT."""
    viewer.window.remove_dock_widget("all")
    viewer.layers.clear()
    root = Path(__file__).resolve().parents[1] / "sample_data"
    viewer.open(str(root / "renal_pas.ome.tif"), plugin=PLUGIN)
    masks = viewer.open(str(root / "renal_pas_masks.ome.tif"), plugin=PLUGIN)
    widget = open_widget(viewer, "Quantify")
    widget.masks.value = masks
    widget.run_button.clicked()
    _wait_for(widget)
    widget.colour_by.value = "PT"
    widget.spots_button.clicked()
    _wait_for(widget)
    for layer in masks:
        layer.visible = False
    viewer.reset_view()
    _settle()
    viewer.screenshot(str(OUT / "quantify_widget.png"), canvas_only=False)


def _painted_at_10x(widget):
    """A mask painted at 10x in the Synthesize widget: tubules, a glomerulus, an artery."""
    import numpy as np

    mask = widget.new_mask_layer()  # no image: over the view at 40x
    mask.scale = (1.0, 1.0)  # 10x
    yy, xx = np.mgrid[:1024, :1024]
    rng = np.random.default_rng(1)
    for _ in range(40):  # tubules
        cy, cx = rng.integers(0, 1024, 2)
        ry, rx = rng.integers(22, 40, 2)
        mask.data[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = int(rng.choice([1, 2, 2]))
    mask.data[(yy - 500) ** 2 + (xx - 480) ** 2 < 110 ** 2] = 3
    mask.data[(yy - 500) ** 2 + (xx - 480) ** 2 < 85 ** 2] = 4
    mask.data[(yy - 850) ** 2 + (xx - 200) ** 2 < 60 ** 2] = 5
    mask.refresh()
    widget.magnification.value = "10"
    return mask


def synthesize(viewer, prior_only: bool = False) -> None:
    """Synthesize: a mask painted at 10x (tubules, a glomerulus, an artery), two variations
    of the bundled generator, or one of the anatomy prior alone."""
    viewer.window.remove_dock_widget("all")
    viewer.layers.clear()
    widget = open_widget(viewer, "Synthesize")
    mask = _painted_at_10x(widget)
    widget.variations.value = 1 if prior_only else 2
    widget.prior_only.value = prior_only
    widget.run_button.clicked()
    _wait_for(widget)
    mask.visible = False
    viewer.reset_view()
    _settle()
    name = "anatomy_prior.png" if prior_only else "synthesize_widget.png"
    viewer.screenshot(str(OUT / name), canvas_only=False)


def correct(viewer) -> None:
    """Correct (kidney): PT at 10x on a part of the PAS sample, two strokes, Learn."""
    import numpy as np

    from napari_omniseg.widgets.correct import PAINT_BACKGROUND, PAINT_TISSUE

    viewer.window.remove_dock_widget("all")
    viewer.layers.clear()
    viewer.open_sample(PLUGIN, "renal_pas")
    image = viewer.layers[0]
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = (0, 1280 * image.scale[-2], 3000 * image.scale[-1])
    camera.zoom = camera.zoom * 3
    _settle()
    segment = open_widget(viewer, "Segment (kidney)")
    segment.tissue.value, segment.magnification.value = "pt", "10"
    segment.run_button.clicked()
    _wait_for(segment)
    widget = open_widget(viewer, "Correct (kidney)")
    widget.mask.reset_choices()
    strokes = widget.add_strokes_layer()
    mask = widget.mask.value
    h, w = strokes.data.shape
    data = np.zeros((h, w), np.uint8)
    data[h // 3:h // 3 + 6, w // 4:w // 4 + 40] = PAINT_TISSUE
    data[2 * h // 3:2 * h // 3 + 6, w // 2:w // 2 + 40] = PAINT_BACKGROUND
    strokes.data = data
    widget.run_button.clicked()
    _wait_for(widget)
    mask.refresh()
    widget.save_to.line_edit.native.setText("~/omniseg_corrected.pt")  # no machine's path shown
    _settle()
    viewer.screenshot(str(OUT / "correct_widget.png"), canvas_only=False)


def blocks(viewer) -> None:
    """Block labels: a 40x PAS crop, 64 px blocks classed none / few / many capillaries (from
    the simulator's truth, as a person would click them), the default table, one minute of
    training, the fit report."""
    import numpy as np

    from napari_omniseg.simulate.renal import simulate_renal

    sim = simulate_renal(1024, 1024, stain="pas", seed=11, levels=1)
    viewer.window.remove_dock_widget("all")
    viewer.layers.clear()
    image = viewer.add_image(sim.image[0], rgb=True, name="PAS crop (40x)",
                             metadata={"mpp": 0.25})
    widget = open_widget(viewer, "Block labels")
    widget.image.value, widget.tissue.value, widget.block_size.value = image, "ptc", 64
    layer = widget.make_block_layer()
    truth = np.asarray(sim.masks["ptc"][0]) > 0
    frac = truth.reshape(16, 64, 16, 64).mean(axis=(1, 3))
    layer.data = np.where(frac < 0.02, 1, np.where(frac < 0.08, 2, 3)).astype(layer.data.dtype)
    layer.opacity = 0.45
    widget.blocks.value = layer
    widget.default_button.clicked()
    widget.minutes.value = 1.0
    widget.save_to.value = str(Path(tempfile.gettempdir()) / "omniseg_blocks_screenshot.pt")
    widget.run_button.clicked()
    _wait_for(widget)
    widget.save_to.line_edit.native.setText("~/omniseg_blocks.pt")  # no machine's path shown
    viewer.reset_view()
    _settle()
    viewer.screenshot(str(OUT / "block_labels_widget.png"), canvas_only=False)


def adapt(viewer) -> None:
    """Fine-tune, adapt to: the silver and trichrome samples chosen as unlabelled targets,
    nothing painted, one minute from the bundled model (the source: simulated slides)."""
    viewer.window.remove_dock_widget("all")
    viewer.layers.clear()
    from napari.layers import Image

    for stain in ("sil", "tri"):
        viewer.open_sample(PLUGIN, f"renal_{stain}")
    for layer in [lyr for lyr in viewer.layers if not isinstance(lyr, Image)]:
        viewer.layers.remove(layer)  # the samples' masks: adaptation uses no labels
    targets = list(viewer.layers)
    widget = open_widget(viewer, "Fine-tune")
    widget.adapt_to.value = targets
    widget.start_from.value = "bundled"
    widget.minutes.value = 1.0
    widget.save_to.value = str(Path(tempfile.gettempdir()) / "omniseg_adapted_screenshot.pt")
    widget.run_button.clicked()
    _wait_for(widget)
    widget.save_to.line_edit.native.setText("~/omniseg_adapted.pt")  # no machine's path shown
    targets[1].visible = False
    viewer.reset_view()
    _settle()
    viewer.screenshot(str(OUT / "adapt_widget.png"), canvas_only=False)


if __name__ == "__main__":
    main(set(sys.argv[1:]) or {"renal", "finetune", "fetal", "quantify", "synthesize",
                               "prior", "correct", "blocks", "adapt"})
