"""Export and quantification figures of docs/export.md.

Usage::

    python benchmarks/bench_export.py roundtrip
    python benchmarks/bench_export.py scale SLIDE_MASKS_8K SLIDE_MASKS_16K
    python benchmarks/bench_export.py spots SLIDE SLIDE_MASKS [--compare-level0]

roundtrip: GeoJSON -> raster Dice per tissue on the four bundled sample slides, at the
    shipped simplification and without simplification (file sizes too).
scale: time and peak resident memory of GeoJSON and OME-TIFF export of a slide's six masks
    (``omniseg simulate renal`` writes them), each in a fresh process, at two slide sizes.
spots: a hexagonal Visium grid (55 µm spots, 100 µm apart) over the slide's tissue, and every
    tissue's percentage per spot: seconds and peak memory in a fresh process. With
    --compare-level0, also the largest difference against percentages measured at 40x.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, sys, time, tempfile
from pathlib import Path
kind, masks, out = sys.argv[1:4]
from napari_omniseg.io.labels import open_labels, write_label_pyramid
images = open_labels(masks)
t = time.perf_counter()
res = {}
if kind == "geojson":
    from napari_omniseg.quantify.geojson import write_geojson
    res["features"] = write_geojson(Path(out) / "x.geojson", images)
    res["mb"] = (Path(out) / "x.geojson").stat().st_size / 1e6
elif kind == "ome-tiff":
    for im in images:
        write_label_pyramid(Path(out) / f"{im.tissue}.ome.tif", im)
elif kind == "spots":
    from napari_omniseg.io.slides import open_slide
    from napari_omniseg.predict.tissue_mask import tissue_mask
    from napari_omniseg.quantify.spots import hexagonal_spots, spot_percentages
    slide = open_slide(sys.argv[4])
    spots = hexagonal_spots(images[0].shape, images[0].mpp, tissue_mask(slide))
    pct = spot_percentages(images, spots)
    res["spots_seconds"] = time.perf_counter() - t  # tissue mask, grid and percentages
    res["spots"] = len(spots)
    res["capture_mm"] = images[0].shape[0] * images[0].mpp / 1000
    if len(sys.argv) > 5:
        t0 = time.perf_counter()
        full = spot_percentages(images, spots, level=0)
        res["level0_seconds"] = time.perf_counter() - t0
        res["max_abs_diff_points"] = max(float(abs(full[k] - pct[k]).max()) for k in pct)
        res["mean_abs_diff_points"] = max(float(abs(full[k] - pct[k]).mean()) for k in pct)
res["seconds"] = time.perf_counter() - t  # everything this child did
res["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
res["shape"] = list(images[0].shape)
print(json.dumps(res))
"""


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def roundtrip() -> None:
    import tempfile

    from rasterio import features
    from shapely.geometry import shape

    from napari_omniseg.io.labels import open_labels
    from napari_omniseg.quantify.geojson import SIMPLIFY_PX, write_geojson

    print("| slide | tolerance (px) | file (MB) | " + " | ".join(
        ["DT", "PT", "CAP", "TUFT", "VES", "PTC"]) + " |")
    print("|---|---|---|" + "---|" * 6)
    for stain in ("he", "pas", "sil", "tri"):
        images = open_labels(ROOT / "sample_data" / f"renal_{stain}_masks.ome.tif")
        for tol in (SIMPLIFY_PX, 0.0):
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "x.geojson"
                write_geojson(path, images, tolerance=tol)
                fc = json.loads(path.read_text())
                mb = path.stat().st_size / 1e6
            cells = []
            for im in images:
                name = im.label_class(1).name
                mask = np.asarray(im.level0) > 0
                geoms = [shape(f["geometry"]) for f in fc["features"]
                         if f["properties"]["classification"]["name"] == name]
                back = (features.rasterize(geoms, out_shape=mask.shape) > 0 if geoms
                        else np.zeros_like(mask))
                total = mask.sum() + back.sum()
                cells.append("empty" if total == 0 else
                             f"{2 * (mask & back).sum() / total:.4f}")
            print(f"| {stain} | {tol} | {mb:.2f} | " + " | ".join(cells) + " |")


def scale(masks: list[str]) -> None:
    import tempfile

    print(f"CPU: {_cpu()}; {time.strftime('%Y-%m-%d')}")
    print("| masks | export | seconds | peak RSS (MB) | output |")
    print("|---|---|---|---|---|")
    for m in masks:
        for kind in ("geojson", "ome-tiff"):
            with tempfile.TemporaryDirectory() as d:
                r = _child(kind, m, d)
            extra = f"{r['features']} features, {r['mb']:.1f} MB" if kind == "geojson" else ""
            print(f"| {r['shape'][0]} x {r['shape'][1]} | {kind} | {r['seconds']:.1f} | "
                  f"{r['peak_mb']:.0f} | {extra} |")


def spots(slide: str, masks: str, compare: bool) -> None:
    print(f"CPU: {_cpu()}; {time.strftime('%Y-%m-%d')}")
    args = ["spots", masks, "-", slide] + (["level0"] if compare else [])
    print(json.dumps(_child(*args), indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    sub.add_parser("roundtrip")
    s = sub.add_parser("scale")
    s.add_argument("masks", nargs="+")
    sp = sub.add_parser("spots")
    sp.add_argument("slide")
    sp.add_argument("masks")
    sp.add_argument("--compare-level0", action="store_true")
    a = p.parse_args()
    if a.what == "roundtrip":
        roundtrip()
    elif a.what == "scale":
        scale(a.masks)
    else:
        spots(a.slide, a.masks, a.compare_level0)


if __name__ == "__main__":
    main()
