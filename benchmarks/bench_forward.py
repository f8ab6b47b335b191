"""The renal network's forward pass on this CPU: precision and memory format.

Usage::

    python benchmarks/bench_forward.py [--threads N] [--repeats 3]

Times one batch of eight 256 x 256 tiles through the bundled Omni-Seg+ model, one condition, in
fp32 and in bfloat16 autocast, with the input in the default (NCHW) and the channels-last
layout, and reports each variant's relative L2 difference of logits from fp32 NCHW. (The model
itself converts its input to channels-last; the NCHW rows undo that with a hook on the first
convolution, to show what the conversion buys.)
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    import torch

    from napari_omniseg import load_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model("renal", device="cpu")
    torch.manual_seed(0)
    x = torch.rand(8, 3, 256, 256)
    conds = [(5, 3)]

    def run(bf16: bool, channels_last: bool):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        # the first convolution's input decides the layout of everything after it
        handle = model.conv1.register_forward_pre_hook(
            lambda module, inputs: (inputs[0].contiguous(memory_format=fmt),))
        try:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                t = time.perf_counter()
                y = model.forward_conditions(x, conds)
                t = time.perf_counter() - t
        finally:
            handle.remove()
        return t, y.float()

    variants = [(False, False), (False, True), (True, False), (True, True)]
    for v in variants:  # warm-up: oneDNN builds its kernels on the first calls
        run(*v)
        run(*v)
    # rounds alternate the variants, so a noisy moment hits them all; the minimum is reported
    times: dict = {v: [] for v in variants}
    outputs = {}
    for _ in range(args.repeats):
        for v in variants:
            t, outputs[v] = run(*v)
            times[v].append(t)
    ref = outputs[(False, False)]
    for bf16, cl in variants:
        y = outputs[(bf16, cl)]
        print(json.dumps({"precision": "bf16" if bf16 else "fp32",
                          "layout": "channels-last" if cl else "NCHW",
                          "seconds": round(min(times[(bf16, cl)]), 3),
                          "all_seconds": [round(t, 3) for t in times[(bf16, cl)]],
                          "rel_l2_vs_fp32_nchw": round(float((y - ref).norm() / ref.norm()), 5)}))


if __name__ == "__main__":
    main()
