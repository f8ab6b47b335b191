"""How long napari's event loop stalls while Segment (kidney) runs and the person pans.

Usage (under a display)::

    xvfb-run -a python benchmarks/gui_stalls.py [--seconds 60] [--stain pas]

Opens the sample slide, opens Segment (kidney) from the Plugins menu, clicks Segment on the whole
slide (every tissue), and pans the camera every 100 ms while a 20 ms heartbeat timer records
when the event loop runs. Prints the longest gap between heartbeats (a gap is the time the GUI
could not answer the person), how many gaps exceed 0.25 s and 0.5 s, the stall right after the
click, and the CPU model. The run stops after ``--seconds`` (Stop is clicked) or when the
segmentation ends.
"""

from __future__ import annotations

import argparse
import itertools
import time

from machine import cpu_model  # benchmarks/machine.py, beside this script


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--stain", default="pas")
    ap.add_argument("--no-run", action="store_true",
                    help="pan for --seconds without segmenting: napari's own stalls")
    args = ap.parse_args()

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-omniseg", f"renal_{args.stain}")
    viewer.reset_view()
    _, widget = viewer.window.add_plugin_dock_widget("napari-omniseg", "Segment (kidney)")
    widget.where.value = "whole slide"
    app = QApplication.instance()
    extent = float(viewer.layers[0].extent.world[1][-1] - viewer.layers[0].extent.world[0][-1])
    for _ in range(20):
        app.processEvents()

    beats: list[float] = []
    heartbeat = QTimer()
    heartbeat.timeout.connect(lambda: beats.append(time.perf_counter()))
    heartbeat.start(20)
    centre = list(viewer.camera.center)
    zoom = viewer.camera.zoom
    step = {"k": 0}

    def pan() -> None:
        # back and forth across a third of the slide, 20 steps each way, zooming in (so
        # napari reads finer levels) on the way out and back out on the way back
        step["k"] += 1
        sign = (step["k"] // 20) % 2 * 2 - 1
        centre[-1] += sign * extent / 60
        viewer.camera.center = tuple(centre)
        viewer.camera.zoom = zoom * (4.0 if sign > 0 else 1.0)

    panner = QTimer()
    panner.timeout.connect(pan)
    panner.start(100)

    settle = time.perf_counter() + 1.0  # heartbeats before the click, so its stall counts
    while time.perf_counter() < settle:
        app.processEvents()
        time.sleep(0.005)
    t0 = time.perf_counter()
    if not args.no_run:
        widget.run_button.clicked()
    clicked = time.perf_counter() - t0  # the click's own time on the GUI thread
    deadline = t0 + args.seconds
    stopped = False
    while widget.worker is not None or (args.no_run and time.perf_counter() < deadline):
        app.processEvents()
        time.sleep(0.005)
        if time.perf_counter() > deadline and not stopped and widget.worker is not None:
            widget.stop()
            stopped = True
    total = time.perf_counter() - t0
    heartbeat.stop()
    panner.stop()
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    longest = max(gaps) if gaps else float("nan")
    print(f"cpu: {cpu_model()} ({__import__('os').cpu_count()} cores)")
    print(f"run: {total:.1f} s ({'stopped' if stopped else widget.status.value}); "
          f"click handler {clicked:.3f} s")
    print(f"longest event-loop stall: {longest:.3f} s; gaps > 0.25 s: "
          f"{sum(g > 0.25 for g in gaps)}; > 0.5 s: {sum(g > 0.5 for g in gaps)}; "
          f"heartbeats {len(beats)}")
    viewer.close()


if __name__ == "__main__":
    main()
