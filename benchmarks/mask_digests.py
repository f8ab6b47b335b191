"""SHA-256 digests of the masks the bundled models make on the sample data.

A refactoring that must not change behaviour runs this before and after (same machine: bfloat16
results may differ between CPUs) and compares the two outputs line by line::

    python benchmarks/mask_digests.py > before.txt
    ... change the code ...
    python benchmarks/mask_digests.py > after.txt
    diff before.txt after.txt && echo identical

Covered: every renal tissue at every pyramid level of every stain's sample slide (the lazy
arrays of ``segment_slide``, the mask files of ``segment_slide_to_files``), the renal fine-tune
evaluation path (``predict_array``), and every fetal region of the fetal sample with and
without flips and clean-up (``segment_volume``).

The lazy arrays are computed with dask's synchronous scheduler. Under the threaded scheduler
the order in which chunks ask for network tiles varies from run to run, and with it how tiles
are grouped into forward batches; in bfloat16 a tile's answer depends on its batch's size
(logits differ by up to 0.27 between a batch of 8 and of 1), so a few pixels near 0.5 flip
between two runs of the same code (2 of 15.7 million on the trichrome sample's 40x PTC mask).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np


def digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.sha256(str((a.shape, a.dtype)).encode() + a.tobytes()).hexdigest()[:16]


def renal(stains: list[str]) -> None:
    import tifffile

    from napari_omniseg import load_model, open_slide, segment_slide
    from napari_omniseg._sample_data import renal_sample_paths
    from napari_omniseg.predict.batch import segment_slide_to_files
    from napari_omniseg.predict.tiling import predict_array

    model = load_model("renal")
    for stain in stains:
        image, _ = renal_sample_paths(stain)
        slide = open_slide(image)
        masks = segment_slide(slide, ("all",), None, model)
        for code, levels in masks.items():
            for k, level in enumerate(levels):
                print(f"renal {stain} {code} level{k} "
                      f"{digest(level.compute(scheduler='synchronous'))}", flush=True)
        crop = np.asarray(slide.levels[0][:512, :512, :3])
        probs = predict_array(model, crop, [(0, 3), (5, 3)], tile=256, overlap=64, bf16=True)
        print(f"renal {stain} predict_array {digest(probs > 0.5)}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            files = segment_slide_to_files(image, ["ptc", "cap"], None, model, tmp)
            for path in sorted(v["mask"] for v in files.values()):
                with tifffile.TiffFile(path) as tif:
                    for k, lv in enumerate(tif.series[0].levels):
                        print(f"renal {stain} file {Path(path).name} level{k} "
                              f"{digest(lv.asarray())}", flush=True)


def fetal() -> None:
    from napari_omniseg import load_model, open_volume, segment_volume
    from napari_omniseg._sample_data import fetal_sample_paths

    model = load_model("fetal")
    vol = open_volume(fetal_sample_paths()[0])
    for flips in (True, False):
        for clean in (True, False):
            masks = segment_volume(vol, ("all",), model, flips=flips, **{_CLEAN: clean})
            for code, m in masks.items():
                print(f"fetal flips={flips} clean={clean} {code} "
                      f"{digest(m.compute(scheduler='synchronous'))}", flush=True)


def _clean_keyword() -> str:
    import inspect

    from napari_omniseg.predict.volume import segment_volume

    params = inspect.signature(segment_volume).parameters
    return "clean_up" if "clean_up" in params else "largest_piece"


_CLEAN = ""

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stains", default="he,pas,sil,tri")
    args = ap.parse_args()
    _CLEAN = _clean_keyword()
    renal(args.stains.split(","))
    fetal()
    sys.exit(0)
