"""Block labels on real tissue: the real-tissue table of docs/block_labels.md.

Usage::

    python benchmarks/block_labels.py MANIFEST [--minutes 15] [--seeds 0 1 2]
        [--arms lowres blocks intra pixel mix] [--block-size 64] [--bins 4]
        [--results FILE.jsonl]

Block labels are derived from the manifest's masks with ``omniseg blocks from-masks`` (the table
estimated from the ``train`` rows' blocks: the paper's mask-estimated table), and every arm
trains with ``omniseg finetune`` from the bundled model, as a user runs it, on ``train`` rows
only, for the same time budget, without validation (no weights are picked on ``val``); each is
scored on the ``val`` rows with ``omniseg evaluate``. Arms: ``lowres`` (no training: each val
block's class upsampled, foreground where its table mean is above one half; it reads the val
blocks, an oracle block classifier), ``blocks`` (intra+inter, NLL, alpha 0.8), ``intra``,
``paper`` (intra+inter with the paper's distance), ``pixel`` (the train rows' pixel masks),
``mix`` (block labels on every train row plus pixel masks on every third). One JSON line per run
goes to ``--results``; the summary (mean and sd over seeds) is printed at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_model, record_run

ARMS = ("lowres", "blocks", "intra", "paper", "pixel", "mix")


def _rows(manifest: Path) -> list[dict]:
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def _write(rows: list[dict], path: Path, base: Path, columns: tuple[str, ...]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, **{c: str(base / r[c]) for c in columns}})
    return path


def _run(cmd: list[str]) -> dict:
    out = subprocess.run(["omniseg", *cmd], check=True, capture_output=True, text=True).stdout
    return json.loads(out[out.index("{"):])


def _lowres(block_dir: Path, val_rows: list[dict], base: Path) -> dict:
    """Dice of the upsampled val block classes against the val masks."""
    from napari_omniseg import vocab
    from napari_omniseg.train.annotations import imread_rgb
    from napari_omniseg.train.block_labels import BlockTable, upsampled_blocks
    from napari_omniseg.train.metrics import dice

    table = BlockTable.load(block_dir / "table.csv")
    blocks = {r["image"].split("/")[-1]: r for r in _rows(block_dir / "manifest.csv")}
    scores: dict[str, list[float]] = {}
    for r in val_rows:
        b = blocks[r["image"].split("/")[-1]]
        grid = imread_rgb(block_dir / b["blocks"], "blocks", rgb=False).astype(int)
        size = int(b["block_size"])
        pred = upsampled_blocks(grid, size, table, vocab.tissue(r["tissue"]).code)
        mask = imread_rgb(base / r["mask"], "mask", rgb=False)
        mask = (mask[..., 0] if mask.ndim == 3 else mask) > 0
        mask = mask[:pred.shape[0], :pred.shape[1]]
        scores.setdefault(r["tissue"], []).append(dice(pred, mask))
    tissues = {k: round(float(np.mean(v)), 4) for k, v in scores.items()}
    return {"mean_dice": round(float(np.mean(list(tissues.values()))), 4),
            "tissues": {k: {"dice": v} for k, v in tissues.items()}}


def main() -> None:
    """Run the chosen arms and seeds; print the summary table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("manifest", type=Path)
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--bins", type=int, default=4)
    p.add_argument("--results", type=Path, default=Path("block_label_results.jsonl"))
    a = p.parse_args()
    base = a.manifest.resolve().parent
    rows = _rows(a.manifest)
    work = Path(tempfile.mkdtemp(prefix="blocks-bench-"))
    train = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "val"]
    pixels = _write(train, work / "pixels.csv", base, ("image", "mask"))
    few = _write(train[::3], work / "few_pixels.csv", base, ("image", "mask"))
    val = _write(val_rows, work / "val.csv", base, ("image", "mask"))
    blocks_dir = work / "blocks"
    _run(["blocks", "from-masks", "--manifest", str(a.manifest.resolve()), "--block-size",
          str(a.block_size), "--bins", str(a.bins), "-o", str(blocks_dir)])
    clicks = sum(r["split"] == "train" for r in _rows(blocks_dir / "manifest.csv"))
    print(f"CPU: {cpu_model()}; {a.minutes:g} min per run; work in {work}", flush=True)
    for seed in a.seeds:
        for arm in a.arms:
            t0 = time.perf_counter()
            if arm == "lowres":
                if seed != a.seeds[0]:
                    continue
                score = _lowres(blocks_dir, val_rows, base)
            else:
                model = work / f"{arm}-{seed}.pt"
                common = ["--minutes", str(a.minutes), "--seed", str(seed), "-o", str(model)]
                if arm == "pixel":
                    cmd = ["finetune", "--manifest", str(pixels), *common]
                else:
                    cmd = ["finetune", "--manifest", str(blocks_dir / "manifest.csv"),
                           "--block-table", str(blocks_dir / "table.csv"), *common]
                    if arm == "intra":
                        cmd += ["--block-loss", "intra"]
                    if arm == "paper":
                        cmd += ["--block-distance", "paper"]
                    if arm == "mix":
                        cmd += ["--pixels", str(few)]
                _run(cmd)
                score = _run(["evaluate", "--manifest", str(val), "--model", str(model)])
            record_run(a.results, {
                "arm": arm, "seed": seed, "minutes": a.minutes, "block_size": a.block_size,
                "bins": a.bins, "train_images_with_blocks": clicks,
                "val_mean_dice": score["mean_dice"],
                "tissues": {k: v["dice"] for k, v in score["tissues"].items()}}, t0)
    summarize(a.results)


def summarize(results: Path) -> None:
    """Mean and sd of each arm over its seeds, and its ratio to the pixel arm."""
    lines = [json.loads(x) for x in results.read_text().splitlines() if x.strip()]
    groups: dict[tuple, list[float]] = {}
    for x in lines:
        groups.setdefault((x["arm"], x["minutes"]), []).append(x["val_mean_dice"])
    for (arm, minutes), v in sorted(groups.items()):
        pix = groups.get(("pixel", minutes))
        ratio = f", {np.mean(v) / np.mean(pix):.2f} of pixel" if pix else ""
        print(f"{arm:8s} {minutes:g} min: {np.mean(v):.3f} "
              f"(sd {np.std(v, ddof=1) if len(v) > 1 else 0:.3f}, n={len(v)}){ratio}")


if __name__ == "__main__":
    main()
