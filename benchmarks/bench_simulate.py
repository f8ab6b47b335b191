"""Simulator speed and memory on this machine.

Usage::

    python benchmarks/bench_simulate.py [--big 16384]

Prints a Markdown table: time to simulate a 4096 x 4096 40x tile (with its pyramid and masks)
per stain, and time and peak resident memory to stream a big x big slide to a pyramidal
OME-TIFF (each measured in a fresh process so peaks do not mix).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
kind, arg, out = sys.argv[1], sys.argv[2], sys.argv[3]
t = time.perf_counter()
if kind == "tile":
    from napari_omniseg import simulate_renal
    simulate_renal(4096, 4096, stain=arg, seed=1)
else:
    from napari_omniseg.simulate.renal import write_renal_slide
    n = int(arg)
    write_renal_slide(Path(out) / "big.ome.tif", n, n, seed=1,
                      masks_path=Path(out) / "big_masks.ome.tif")
print(json.dumps({"seconds": time.perf_counter() - t,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _run(kind: str, arg: str, out: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, kind, arg, out], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--big", type=int, default=16384, help="side of the streamed slide (px)")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for stain in ("he", "pas", "sil", "tri"):
            r = _run("tile", stain, tmp)
            rows.append((f"simulate_renal 4096 x 4096, {stain}", r["seconds"], r["peak_mb"]))
        for side in (args.big // 2, args.big):
            r = _run("write", str(side), tmp)
            rows.append((f"write_renal_slide {side} x {side} + masks", r["seconds"], r["peak_mb"]))
    print(f"<!-- {time.strftime('%Y-%m-%d')} -->")
    print("| task | wall time (s) | peak RSS (MB) |\n|---|---:|---:|")
    for name, sec, mb in rows:
        print(f"| {name} | {sec:.1f} | {mb:.0f} |")


if __name__ == "__main__":
    main()
