"""The renal network's forward pass on this CPU: precision and memory format.

Usage::

    python benchmarks/bench_forward.py [--threads N] [--repeats 3] [--train]

Times one batch of eight 256 x 256 tiles through the bundled Omni-Seg+ model, one condition, in
fp32 and in bfloat16 autocast, with the input in the default (NCHW) and the channels-last
layout, and reports each variant's relative L2 difference of logits from fp32 NCHW. (The model
itself converts its input to channels-last; the NCHW rows undo that with a hook on the first
convolution, to show what the conversion buys.) ``--train`` times a training step instead
(forward, Dice-free mean loss, backward, AdamW) on four tiles in fp32 and in bfloat16 autocast.
The first line says whether this CPU computes bfloat16 in hardware.
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
    p.add_argument("--train", action="store_true", help="time training steps instead")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from napari_omniseg.checkpoints import cpu_has_native_bf16

    print(json.dumps({"native_bf16": cpu_has_native_bf16(), "threads": torch.get_num_threads()}))
    model = load_model("renal", device="cpu")
    if args.train:
        time_training_steps(model, args.repeats)
        return
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


def time_training_steps(model, repeats: int) -> None:
    """Print the fastest fp32 and bfloat16 training step of ``repeats`` alternating rounds."""
    import torch

    model.train()
    torch.manual_seed(0)
    x = torch.rand(4, 3, 256, 256)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step(bf16: bool) -> float:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.forward_conditions(x, [(5, 3)]).float().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return time.perf_counter() - t

    times: dict = {False: [], True: []}
    for bf16 in (False, True):  # warm-up
        step(bf16)
    for _ in range(repeats):
        for bf16 in (False, True):
            times[bf16].append(step(bf16))
    for bf16, ts in times.items():
        print(json.dumps({"training_step": "bf16" if bf16 else "fp32", "batch": 4,
                          "seconds": round(min(ts), 3), "all_seconds": [round(t, 3) for t in ts]}))


if __name__ == "__main__":
    main()
