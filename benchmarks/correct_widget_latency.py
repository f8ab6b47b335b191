"""Stroke to updated view in the Correct (kidney) widget, in a real napari window.

A real patch (the first PT row of a manifest, 10x) is upscaled 4x into a 40x RGB image of
``4 * side`` pixels (0.25 µm/px); Segment finds PT at 10x on the whole image; the view is the
whole image (``side`` x ``side`` working pixels); each Learn adds one robot stroke at the
largest error against the upscaled truth. Prints the seconds of each Learn (features of the
view on the first, then update and re-segmentation) and the longest pause of the event loop.

    xvfb-run -a python benchmarks/correct_widget_latency.py MANIFEST [--side 1024] [--learns 5]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("manifest", type=Path)
    p.add_argument("--side", type=int, default=1024)
    p.add_argument("--learns", type=int, default=5)
    args = p.parse_args()

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication
    from skimage.transform import resize

    from napari_omniseg.train.annotations import read_manifest
    from napari_omniseg.train.robot import next_stroke
    from napari_omniseg.widgets.correct import PAINT_BACKGROUND, PAINT_TISSUE

    rows = [a for v in read_manifest(args.manifest).values() for a in v]
    a = next(r for r in rows if r.tissue == "pt")
    big = 4 * args.side
    rgb = (resize(a.image, (big, big), order=1, preserve_range=True) + 0.5).astype(np.uint8)
    truth = resize(a.mask.astype(float), (args.side, args.side), order=0) > 0.5

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    image = viewer.add_image(rgb, rgb=True, name="patch", scale=(0.25, 0.25),
                             metadata={"mpp": 0.25})
    _, seg = viewer.window.add_plugin_dock_widget("napari-omniseg", "Segment (kidney)")
    seg.image.value = image
    seg.mpp.value = 0.25
    seg.tissue.value, seg.magnification.value, seg.where.value = "pt", "10", "whole slide"

    def wait(widget) -> None:
        while widget.worker is not None:
            app.processEvents()
            time.sleep(0.01)

    seg.run_button.clicked()
    wait(seg)
    mask = viewer.layers["PT @ 10x"]
    _, w = viewer.window.add_plugin_dock_widget("napari-omniseg", "Correct (kidney)")
    w.mask.reset_choices()
    w.mask.value = mask
    viewer.reset_view()
    app.processEvents()
    strokes = w.add_strokes_layer()
    beats: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: beats.append(time.perf_counter()))
    timer.start(10)
    seconds = []
    for _ in range(args.learns):
        level0 = np.asarray(mask.data[0] if mask.multiscale else mask.data)
        pred = resize(level0.astype(float), strokes.data.shape, order=0) > 0.5
        s = next_stroke(pred, truth, np.ones_like(truth), 4)
        if s is None:
            break
        data = strokes.data.copy()
        data[s[0]] = PAINT_TISSUE if s[1] == 1 else PAINT_BACKGROUND
        strokes.data = data
        t0 = time.perf_counter()
        w.run_button.clicked()
        wait(w)
        seconds.append(round(time.perf_counter() - t0, 2))
    timer.stop()
    gaps = np.diff(beats) if len(beats) > 1 else np.array([np.nan])
    print(json.dumps({"view_px": [args.side, args.side], "learn_s": seconds,
                      "median_after_first_s": float(np.median(seconds[1:])) if len(seconds) > 1
                      else None, "longest_event_loop_pause_s": round(float(np.max(gaps)), 3),
                      "status": w.status.value}, indent=1))
    viewer.close()


if __name__ == "__main__":
    main()
