"""Fetal volume segmentation on this machine: one region vs all five on a 128^3 volume.

Usage::

    python benchmarks/bench_fetal.py [--model fetal] [--repeats 3]

Each case runs in a fresh process (so the memory peaks do not mix): the bundled CoNeMOS model
segments a simulated 128^3 phantom for one region (brain) and for all five regions, with the
default CPU precision (bfloat16 autocast), with flip averaging (the default) and without it.
A warm-up call on the same volume comes first, so the figures are steady-state times; the peak
resident memory of the process is reported too. Prints one JSON line per case and the ratios
all / one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_CHILD = r"""
import json, resource, sys, time
regions, model_ref, repeats = sys.argv[1].split(","), sys.argv[2], int(sys.argv[3])
flips = sys.argv[4] == "flips"
from napari_omniseg import load_model, simulate_fetal
from napari_omniseg.io.volumes import Volume
from napari_omniseg.predict.volume import segment_volume
import dask.array as da
sample = simulate_fetal(1, size=128)
vol = Volume(data=da.from_array(sample.volume), affine=sample.affine, spacing=sample.spacing)
model = load_model(model_ref)
def run():
    out = segment_volume(vol, regions, model=model, flips=flips)
    return {r: int(m.compute().sum()) for r, m in out.items()}
run()  # warm-up: oneDNN picks its kernels on the first call
times = []
for _ in range(repeats):
    t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
print(json.dumps({"regions": regions, "flips": flips, "seconds": round(min(times), 2),
                  "all_seconds": [round(t, 2) for t in times],
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="fetal")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    results = {}
    for flips in ("flips", "no-flips"):
        for name, regions in (("one", "brain"), ("all", "uterus,body,brain,eyes,placenta")):
            out = subprocess.run([sys.executable, "-c", _CHILD, regions, args.model,
                                  str(args.repeats), flips],
                                 capture_output=True, text=True, check=True)
            results[name, flips] = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(results[name, flips]), flush=True)
        print(json.dumps({"flips": flips == "flips", "all_over_one": round(
            results["all", flips]["seconds"] / results["one", flips]["seconds"], 2)}))


if __name__ == "__main__":
    main()
