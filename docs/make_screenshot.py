"""Regenerate docs/images/*.png: napari with the plugin's sample data, as a user sees it.

Run under a display (or ``xvfb-run``): ``python docs/make_screenshot.py``.
"""

from pathlib import Path

import napari

OUT = Path(__file__).parent / "images"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 820)
    viewer.open_sample("napari-omniseg", "renal_pas")
    viewer.layers[-1].visible = True
    viewer.layers[-1].opacity = 0.45
    viewer.reset_view()
    viewer.screenshot(str(OUT / "renal_sample.png"), canvas_only=False)
    viewer.camera.zoom *= 6
    viewer.screenshot(str(OUT / "renal_sample_zoom.png"), canvas_only=True)
    viewer.layers.clear()
    viewer.open_sample("napari-omniseg", "fetal_mri")
    viewer.layers[-1].visible = True
    viewer.layers[-1].opacity = 0.4
    viewer.reset_view()
    viewer.screenshot(str(OUT / "fetal_sample.png"), canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main()
