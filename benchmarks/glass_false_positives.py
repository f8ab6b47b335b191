"""Pixels called tissue on the glass around the PAS sample biopsy, with and without the mask.

Usage::

    python benchmarks/glass_false_positives.py

Counts, at the 5x level, each tissue's mask pixels on the glass: outside the slide's tissue
before its margin (`predict/tissue_mask.py`, ``TissueMask.inner``) and not stained, for the
bundled model with ``mask_glass=False`` and ``True``. The margin (30 µm around the tissue)
keeps predictions only next to stained pixels, so the glass strip along the biopsy's edge
counts too.
"""

from pathlib import Path

import numpy as np

from napari_omniseg import load_model, open_slide, segment_slide
from napari_omniseg.predict.tissue_mask import tissue_mask, tissue_pixels

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "renal_pas.ome.tif"


def main() -> None:
    model = load_model("renal")
    slide = open_slide(SAMPLE)
    tm = tissue_mask(slide)
    print("| tissue | pixels on glass, unmasked | masked |\n|---|---:|---:|")
    out = {mg: segment_slide(slide, ("all",), None, model, mask_glass=mg) for mg in (False, True)}
    stained = tissue_pixels(np.asarray(slide.levels[3]))
    for code in out[True]:
        counts = []
        for mg in (False, True):
            m = out[mg][code][3].compute().astype(bool)
            ds = slide.downsamples[3] / tm.downsample  # mask pixels per 5x pixel
            rows = np.minimum((np.arange(m.shape[0]) * ds).astype(int), tm.mask.shape[0] - 1)
            cols = np.minimum((np.arange(m.shape[1]) * ds).astype(int), tm.mask.shape[1] - 1)
            glass = ~tm.inner[np.ix_(rows, cols)] & ~stained
            counts.append(int((m & glass).sum()))
        print(f"| {code} | {counts[0]} | {counts[1]} |")


if __name__ == "__main__":
    main()
