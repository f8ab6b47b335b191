"""Pixels called tissue on the glass around the PAS sample biopsy, with and without the mask.

Usage::

    python benchmarks/glass_false_positives.py

Counts, at the 5x level, each tissue's mask pixels that fall outside the slide's tissue mask
(`predict/tissue_mask.py`), for the bundled model with ``mask_glass=False`` and ``True``.
"""

from pathlib import Path

from napari_omniseg import load_model, open_slide, segment_slide
from napari_omniseg.predict.tissue_mask import tissue_mask

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "renal_pas.ome.tif"


def main() -> None:
    model = load_model("renal")
    slide = open_slide(SAMPLE)
    on_tissue = tissue_mask(slide).mask
    print("| tissue | pixels on glass, unmasked | masked |\n|---|---:|---:|")
    out = {mg: segment_slide(slide, ("all",), None, model, mask_glass=mg) for mg in (False, True)}
    for code in out[True]:
        counts = []
        for mg in (False, True):
            m = out[mg][code][3].compute().astype(bool)
            counts.append(int((m & ~on_tissue[:m.shape[0], :m.shape[1]]).sum()))
        print(f"| {code} | {counts[0]} | {counts[1]} |")


if __name__ == "__main__":
    main()
