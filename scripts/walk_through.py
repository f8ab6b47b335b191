"""Walk a real image through napari as a pathologist does, and take screenshots.

Run under a display, e.g.::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/walk_through.py IMAGE.png \
        --mpp 0.5 -o walk

Opens the image with File > Open (this plugin's reader), clicks Plugins > napari-omniseg >
Segment (kidney), types the µm/px when given (for a file without a pixel size), segments every
tissue on the whole image, saves each output layer through File > Save Selected Layers as
QuPath GeoJSON and as OME-TIFF (the file dialog answered), opens each OME-TIFF again, runs
Quantify on the masks, and writes screenshots of the window after Segment and after Quantify.
Prints one line per step and exits 0 only if every step worked.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

PLUGIN = "napari-omniseg"


def click_menu(viewer, name: str):
    """Plugins > napari-omniseg > ``name``; returns the docked widget."""
    from qtpy.QtWidgets import QApplication

    for action in viewer.window.plugins_menu.actions():
        if action.menu() is not None and action.text() == PLUGIN:
            entries = {a.text(): a for a in action.menu().actions()}
            entries[name].trigger()
            QApplication.processEvents()
            return viewer.window.dock_widgets[f"{name} ({PLUGIN})"]
    raise RuntimeError(f"no {PLUGIN} entry in the Plugins menu")


def wait(widget, seconds: float = 900) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while widget.worker is not None and time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def settle(seconds: float = 0.5) -> None:
    """Let the window lay itself out, as a person sees it a moment later."""
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def save_selected(viewer, layer, path: Path, writer: str) -> None:
    """File > Save Selected Layers with the dialog answered by ``path`` and ``writer``."""
    from napari._qt import qt_viewer
    from napari.plugins import _npe2

    viewer.layers.selection.active = layer
    ext_str, _ = _npe2.file_extensions_string_for_layers([layer])
    chosen = next(f for f in ext_str.split(";;") if writer in f)
    real = qt_viewer.QFileDialog.getSaveFileName
    qt_viewer.QFileDialog.getSaveFileName = lambda *a, **k: (str(path), chosen)
    try:
        viewer.window._qt_viewer._save_layers_dialog(selected=True)
    finally:
        qt_viewer.QFileDialog.getSaveFileName = real


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", type=Path)
    ap.add_argument("--mpp", type=float, default=None, help="µm/px typed into Segment")
    ap.add_argument("-o", "--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import napari
    from napari.layers import Labels

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    (image,) = viewer.open(str(args.image), plugin=PLUGIN)
    print(f"ok   opened {args.image.name}: {image.data[0].shape if image.multiscale else ''}")
    segment = click_menu(viewer, "Segment (kidney)")
    segment.where.value = "whole slide"
    if args.mpp:
        segment.mpp.value = args.mpp
    segment.run_button.clicked()
    wait(segment)
    print(f"{'ok  ' if segment.status.value == 'done' else 'FAIL'} Segment: "
          f"{segment.status.value}")
    viewer.reset_view()
    settle()
    viewer.screenshot(str(args.out / "segment.png"), canvas_only=False)
    failed = segment.status.value != "done"
    masks = [lyr for lyr in viewer.layers if isinstance(lyr, Labels)]
    for lyr in masks:
        stem = lyr.name.replace(" @ ", "_").replace(" ", "")
        for suffix, writer in ((".geojson", "QuPath GeoJSON"), (".ome.tif", "OME-TIFF")):
            path = args.out / f"{stem}{suffix}"
            save_selected(viewer, lyr, path, writer)
            ok = path.is_file()
            failed |= not ok
            print(f"{'ok  ' if ok else 'FAIL'} saved {lyr.name} as {path.name}")
        (back,) = viewer.open(str(args.out / f"{stem}.ome.tif"), plugin=PLUGIN)
        print(f"ok   reopened {back.name} at {back.scale[-1]:g} µm/px")
        viewer.layers.remove(back)
    quantify = click_menu(viewer, "Quantify")
    quantify.masks.value = masks
    quantify.image.value = image
    quantify.run_button.clicked()
    wait(quantify)
    failed |= "measured" not in quantify.status.value
    print(f"{'ok  ' if 'measured' in quantify.status.value else 'FAIL'} Quantify: "
          f"{quantify.status.value}")
    settle()
    viewer.screenshot(str(args.out / "quantify.png"), canvas_only=False)
    viewer.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
