"""Whole-slide segmentation on this machine: the four figures of the renal issue.

Usage::

    python benchmarks/bench_segment.py --model renal --size 16384 [--out /tmp/bench] [--parts abcd]

a. all six tissues at their optimal magnifications vs PTC alone (wall-time ratio);
b. pipeline throughput vs the bare model forward on the same number of tiles;
c. peak resident memory while writing a whole slide's masks, at two slide sizes;
d. time from a request for a 5x view to its first computed chunk (after Segment has created
   the lazy layers and the viewer has shown the slide; the set-up is reported too).

Each measurement runs in a fresh process so timings and memory peaks do not mix. The slide is
simulated once (biopsy shape, so glass tiles are part of the work, as on real slides).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

_CHILD = r"""
import json, resource, sys, time
import numpy as np
kind, slide_path, model_ref, out = sys.argv[1:5]
from napari_omniseg import open_slide, load_model
from napari_omniseg.predict.batch import segment_slide_to_files
from napari_omniseg.predict.slide import make_engines, segment_slide
slide = open_slide(slide_path)
model = load_model(model_ref)
res = {}
if kind in ("ptc", "all"):
    tissues = ["ptc"] if kind == "ptc" else ["all"]
    t = time.perf_counter()
    r = segment_slide_to_files(slide_path, tissues, None, model, out)
    res["seconds"] = time.perf_counter() - t
elif kind == "throughput":
    import torch
    engines = make_engines(slide, ["ptc"], None, model)
    eng = engines["ptc"][0]
    h, w = eng.shape
    t = time.perf_counter()
    for y in range(0, h, 1024):  # band by band, as the mask writer asks for it
        eng.probabilities(y, min(h, y + 1024), 0, w)
    pipe = time.perf_counter() - t
    n = eng.tiles_run
    x = torch.rand(8, 3, 256, 256)
    t = time.perf_counter()
    done = 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        while done < n:
            model.forward_conditions(x, [(5, 3)])
            done += 8
    bare = time.perf_counter() - t
    res.update(tiles=n, skipped=eng.tiles_skipped, pipeline_s=pipe, bare_s=bare * n / done)
elif kind == "first5x":
    t = time.perf_counter()
    masks = segment_slide(slide, ["cap"], None, model)  # the Segment click: layers are added
    res["setup_seconds"] = time.perf_counter() - t
    # the viewer has shown the slide before anyone segments it (dask's first compute loads
    # its scheduler modules once per process)
    slide.levels[3][:8, :8].compute()
    t = time.perf_counter()
    lvl = masks["cap"][3]
    cy, cx = lvl.shape[0] // 2, lvl.shape[1] // 2
    # the output chunk holding the view's centre: what a viewer gets first
    iy = int(np.searchsorted(np.cumsum(lvl.chunks[0]), cy, side="right"))
    ix = int(np.searchsorted(np.cumsum(lvl.chunks[1]), cx, side="right"))
    first = lvl.blocks[iy, ix].compute()
    res["seconds"] = time.perf_counter() - t
    res["chunk"] = list(first.shape)
    res["chunk_cap_fraction"] = round(float(first.mean()), 4)  # not an empty (glass) chunk
    lvl[cy - 256:cy + 256, cx - 256:cx + 256].compute()
    res["view_512_seconds"] = time.perf_counter() - t
res["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(res))
"""


def _child(kind: str, slide: Path, model: str, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, kind, str(slide), model, str(out)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    from napari_omniseg.simulate.renal import write_renal_slide

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="renal")
    p.add_argument("--size", type=int, default=16384)
    p.add_argument("--out", type=Path, default=Path("/tmp/omniseg-bench"))
    p.add_argument("--parts", default="abcd", help="which figures to measure, e.g. cd")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    slides = {}
    for size in (args.size // 2, args.size):
        path = args.out / f"slide_{size}.ome.tif"
        if not path.exists():
            write_renal_slide(path, size, size, stain="pas", seed=777, shape="biopsy")
        slides[size] = path
    big = slides[args.size]
    print(f"<!-- {time.strftime('%Y-%m-%d')}, slide {args.size} x {args.size} at 40x -->")
    print("| figure | result | target |\n|---|---|---|")
    ptc = _child("ptc", big, args.model, args.out) if set(args.parts) & set("ac") else None
    if "a" in args.parts:
        allt = _child("all", big, args.model, args.out)
        print(f"| a. all six tissues / PTC alone | {allt['seconds']:.0f} s / "
              f"{ptc['seconds']:.0f} s = {allt['seconds'] / ptc['seconds']:.2f} | <= 1.2 |")
    if "b" in args.parts:
        thr = _child("throughput", big, args.model, args.out)
        print(f"| b. pipeline / bare forward, {thr['tiles']} tiles ({thr['skipped']} glass "
              f"tiles skipped) | throughput ratio {thr['bare_s'] / thr['pipeline_s']:.2f} | "
              ">= 0.85 |")
    if "c" in args.parts:
        small = _child("ptc", slides[args.size // 2], args.model, args.out)
        print(f"| c. peak memory writing PTC masks | {small['peak_mb']:.0f} MB at "
              f"{args.size // 2} px, {ptc['peak_mb']:.0f} MB at {args.size} px | "
              "< 2 GB, flat |")
    if "d" in args.parts:
        first = _child("first5x", big, args.model, args.out)
        print(f"| d. 5x view request to first chunk (CAP, {first['chunk'][0]} px) "
              f"| {first['seconds']:.2f} s | < 1 s |")
        print(f"| d'. ... to a filled 512 x 512 view | {first['view_512_seconds']:.2f} s | |")
        print(f"| (Segment click to lazy layers: tissue mask of the thumbnail) | "
              f"{first['setup_seconds']:.2f} s | |")


if __name__ == "__main__":
    main()
