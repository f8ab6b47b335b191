"""The histology generator on this CPU: channels-last activations against NCHW.

Usage::

    python benchmarks/bench_generator_layout.py [--generator synthesis] [--side 1024]
        [--repeats 3] [--threads N]

Times ``generate_window`` (what Synthesize runs for every chunk) on one painted window of
``--side`` pixels at 40x in float32. The generator converts each level's input to channels-last
itself at inference (``nets/pyramid_gan.py``); the NCHW rows undo that with a hook on the first
convolution of every level, to show what the conversion buys. The two layouts alternate, so
load on the machine falls on both; the largest difference between their images (grey levels)
is printed too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from machine import cpu_model


def main() -> None:
    import torch

    from napari_omniseg.checkpoints import load_model
    from napari_omniseg.nets.condition import masks_from_labels
    from napari_omniseg.predict.synthesize import generate_window

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--generator", default="synthesis")
    p.add_argument("--side", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).parent))
    from synthesis_eval import painted_mask

    g = load_model(args.generator, device="cpu")
    masks = masks_from_labels(painted_mask(args.side), "the mask")
    prior = None
    if getattr(g, "prior", False):  # drawn once: this times the network, not the prior
        from napari_omniseg.predict.synthesize import window_prior

        prior = window_prior(masks, "pas", 40, 0, 0, 0, True)

    def nchw(module, inputs):
        return (inputs[0].contiguous(),)

    def run(layout: str) -> tuple[float, np.ndarray]:
        hooks = ([stage.body[0][0].register_forward_pre_hook(nchw) for stage in g.stages]
                 if layout == "NCHW" else [])
        try:
            t = time.perf_counter()
            image = generate_window(g, masks, "pas", 40, 0, prior_context=True, prior=prior)
            return time.perf_counter() - t, image
        finally:
            for h in hooks:
                h.remove()

    run("channels-last")  # warm-up
    times: dict[str, list[float]] = {"NCHW": [], "channels-last": []}
    images = {}
    for _ in range(args.repeats):
        for layout in times:
            seconds, images[layout] = run(layout)
            times[layout].append(seconds)
    diff = int(np.abs(images["NCHW"].astype(int) - images["channels-last"]).max())
    print(json.dumps({"cpu": cpu_model(), "date": time.strftime("%Y-%m-%d"),
                      "threads": torch.get_num_threads(), "side": args.side,
                      "generator": args.generator,
                      "median_seconds": {k: round(statistics.median(v), 2)
                                         for k, v in times.items()},
                      "speed-up": round(statistics.median(times["NCHW"])
                                        / statistics.median(times["channels-last"]), 2),
                      "max_grey_level_difference": diff}))


if __name__ == "__main__":
    main()
