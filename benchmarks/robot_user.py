"""Interactive correction, measured (docs/interactive.md).

Three measurements on a patch manifest (the ki-dev set's ``val`` rows; never trained on)::

    python benchmarks/robot_user.py robot MANIFEST --split val --strokes 20 [--variant NAME]
    python benchmarks/robot_user.py transfer MANIFEST --split val --strokes 10
    python benchmarks/robot_user.py latency MANIFEST

``robot``: the robot user of ``omniseg evaluate --robot-strokes`` with a variant of the update
(see VARIANTS). ``transfer``: per stain and tissue, the robot strokes half of the patches and
the other half, never stroked, are scored before and after (learning the slide, not the patch).
``latency``: a patch upscaled to 1024 and 2048 px views at 40x (PTC) and 10x (PT): the seconds
to keep a view's features (once per view) and of one update (stroke to updated mask).
Prints JSON; the CPU model is printed with every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from machine import cpu_model  # benchmarks/machine.py, beside this script

VARIANTS = {
    "default": {},
    "no_anchors": {"anchor_weight": 0.0},
    "longer": {"steps": 300, "lr": 2e-2},
    "wider": {"hidden": 64},
    "strong_anchors": {"anchor_weight": 1.0},
}



def _rows(manifest: Path, split: str | None) -> list:
    from napari_omniseg.train.annotations import read_manifest

    splits = read_manifest(manifest)
    return splits.get(split, []) if split else [a for v in splits.values() for a in v]


def robot(args: argparse.Namespace) -> dict:
    from napari_omniseg.train.correct import CorrectionOptions
    from napari_omniseg.train.robot import robot_evaluate

    options = CorrectionOptions(**{**VARIANTS[args.variant], "seed": args.seed})
    out = robot_evaluate(args.model, _rows(args.manifest, args.split), args.strokes,
                         radius=args.radius, options=options)
    return {"variant": args.variant, "options": dataclasses.asdict(options), **out}


def transfer(args: argparse.Namespace) -> dict:
    from napari_omniseg.checkpoints import model_and_precision
    from napari_omniseg.train.correct import UNKNOWN, Corrector
    from napari_omniseg.train.metrics import dice
    from napari_omniseg.train.robot import next_stroke

    model, bf16 = model_and_precision(args.model, "renal", None)
    groups: dict = {}
    for a in _rows(args.manifest, args.split):
        groups.setdefault((a.stain, a.tissue), []).append(a)
    table = {}
    for (stain, tissue), rows in sorted(groups.items()):
        if len(rows) < 2:
            continue
        stroked, held = rows[: len(rows) // 2], rows[len(rows) // 2:]
        c = Corrector(model, tissue, rows[0].magnification, bf16=bf16)
        for i, a in enumerate(rows):
            c.add_view(i, a.image)
        held_keys = range(len(stroked), len(rows))
        before = [dice((c.probability(k) > 0.5) & a.known, a.mask & a.known)
                  for k, a in zip(held_keys, held)]
        for i, a in enumerate(stroked):  # the robot corrects each stroked patch in turn
            labels = np.full(a.mask.shape, UNKNOWN, np.int8)
            for _ in range(args.strokes):
                pred = c.probability(i, c.update()) > 0.5
                s = next_stroke(pred, a.mask, a.known, args.radius)
                if s is None:
                    break
                labels[s[0]] = s[1]
                c.set_strokes(i, labels)
        c.update()
        after = [dice((c.probability(k) > 0.5) & a.known, a.mask & a.known)
                 for k, a in zip(held_keys, held)]
        table[f"{stain} {tissue}"] = {"stroked_patches": len(stroked),
                                      "held_out_patches": len(held),
                                      "held_out_dice_before": round(float(np.mean(before)), 4),
                                      "held_out_dice_after": round(float(np.mean(after)), 4)}
    gains = [v["held_out_dice_after"] - v["held_out_dice_before"] for v in table.values()]
    return {"strokes_per_patch": args.strokes, "groups": table,
            "mean_gain": round(float(np.mean(gains)), 4) if gains else None}


def latency(args: argparse.Namespace) -> dict:
    from skimage.transform import resize

    from napari_omniseg.checkpoints import model_and_precision
    from napari_omniseg.train.correct import UNKNOWN, Corrector
    from napari_omniseg.train.robot import next_stroke

    model, bf16 = model_and_precision(args.model, "renal", None)
    rows = _rows(args.manifest, None)
    out = {}
    for tissue, mag in (("ptc", 40), ("pt", 10)):
        a = next(r for r in rows if r.tissue == tissue)
        for side in (1024, 2048):
            img = (resize(a.image, (side, side), order=1, preserve_range=True) + 0.5).astype(
                np.uint8)
            truth = resize(a.mask.astype(float), (side, side), order=0) > 0.5
            c = Corrector(model, tissue, mag, bf16=bf16)
            t0 = time.perf_counter()
            c.add_view(0, img)
            keep = time.perf_counter() - t0
            labels = np.full(truth.shape, UNKNOWN, np.int8)
            pred = c.probability(0, c.update()) > 0.5
            updates = []
            for _ in range(5):
                s = next_stroke(pred, truth, np.ones_like(truth), 4)
                if s is None:
                    break
                t0 = time.perf_counter()
                labels[s[0]] = s[1]
                c.set_strokes(0, labels)
                pred = c.probability(0, c.update()) > 0.5
                updates.append(time.perf_counter() - t0)
            out[f"{tissue} {mag}x {side}px"] = {
                "keep_view_s": round(keep, 2),
                "update_s_median": round(float(np.median(updates)), 3),
                "update_s_max": round(float(np.max(updates)), 3)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["robot", "transfer", "latency"])
    p.add_argument("manifest", type=Path)
    p.add_argument("--split", default="val")
    p.add_argument("--model", default="renal")
    p.add_argument("--strokes", type=int, default=20)
    p.add_argument("--radius", type=int, default=4)
    p.add_argument("--variant", choices=sorted(VARIANTS), default="default")
    p.add_argument("--seed", type=int, default=0, help="the update's seed (weights, anchors)")
    args = p.parse_args()
    t0 = time.perf_counter()
    result = {"robot": robot, "transfer": transfer, "latency": latency}[args.mode](args)
    print(json.dumps({"mode": args.mode, "cpu": cpu_model(), "model": args.model,
                      "seconds": round(time.perf_counter() - t0, 1), **result}, indent=1))


if __name__ == "__main__":
    main()
