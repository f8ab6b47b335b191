"""Block labels on simulated slides, where the truth is known: the simulated table of
docs/block_labels.md.

Usage::

    python benchmarks/block_labels_simulated.py [--minutes 10] [--train-slides 8]
        [--val-slides 2] [--arms lowres intra inter blocks alpha0.5 alpha1.0 pixel]
        [--block-size 64] [--bins 4] [--seed 0] [--results FILE.jsonl]

Simulated slides (2048 px at 40x, H&E and PAS in turn; training seeds 30000 on, validation
seeds 30100 on, neither a training nor an evaluation seed of the bundled model) are cut into
256 px patches: PTC at 40x, DT and PT at 10x, each row with its tissue's true mask, written as
a ki-dev-format manifest. ``omniseg blocks from-masks`` derives block labels from the masks
(K fraction bins, the table estimated from the ``train`` rows), and each arm trains **from a
new, untrained network** (the bundled model already knows these slides) with ``omniseg
finetune`` for the same budget: ``intra``, ``inter``, ``blocks`` (intra+inter, NLL, alpha 0.8),
``alpha0.5`` and ``alpha1.0`` (intra+inter at that alpha), ``pixel`` (the true masks); and
``lowres``, no training, each val block's class upsampled (foreground where its table mean is
above one half). Every arm is scored on the val rows: Dice, and boundary-masked Dice (only the
pixels within one block of the true boundary, as the paper).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_model

ARMS = ("lowres", "intra", "inter", "blocks", "alpha0.5", "alpha1.0", "pixel")
TISSUES = {"ptc": 40, "dt": 10, "pt": 10}
PATCH = 256


def _cli(cmd: list[str]) -> dict:
    """The ``omniseg`` command, run as the installed one is (same interpreter)."""
    prog = "import sys; from napari_omniseg.cli import main; sys.argv[0] = 'omniseg'; " \
           "sys.exit(main())"
    out = subprocess.run([sys.executable, "-c", prog, *cmd], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out[out.index("{"):])


def write_patches(work: Path, train_slides: int, val_slides: int,
                  per_slide_40x: int = 8) -> Path:
    """Simulated patches and their true masks as PNGs, and their manifest."""
    from PIL import Image

    from napari_omniseg.simulate.renal import LEVEL_MAGNIFICATIONS, simulate_renal

    (work / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    seeds = [(30000 + i, "train") for i in range(train_slides)] + \
            [(30100 + i, "val") for i in range(val_slides)]
    for n, (seed, split) in enumerate(seeds):
        stain = ("he", "pas")[n % 2]
        s = simulate_renal(2048, 2048, stain=stain, seed=seed)
        rng = np.random.default_rng(seed)
        for tissue, mag in TISSUES.items():
            level = LEVEL_MAGNIFICATIONS.index(mag)
            img, mask = s.image[level], s.masks[tissue][level]
            h, w = mask.shape
            corners = [(y, x) for y in range(0, h - PATCH + 1, PATCH)
                       for x in range(0, w - PATCH + 1, PATCH)]
            if mag == 40:
                corners = [corners[i] for i in rng.permutation(len(corners))[:per_slide_40x]]
            for y, x in corners:
                name = f"{tissue}_{stain}_{seed}_{y}_{x}"
                Image.fromarray(np.asarray(img[y:y + PATCH, x:x + PATCH, :3])).save(
                    work / "images" / f"{name}.png")
                Image.fromarray(np.asarray(mask[y:y + PATCH, x:x + PATCH]).astype(np.uint8)
                                * 255).save(work / "images" / f"{name}_mask.png")
                rows.append({"image": f"images/{name}.png", "mask": f"images/{name}_mask.png",
                             "tissue": tissue, "stain": stain, "magnification": mag,
                             "split": split})
    manifest = work / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest


def _only(manifest: Path, split: str) -> Path:
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split]
    out = manifest.with_name(f"{split}_only.csv")
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


def boundary_band(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` pixels of the mask's boundary (both sides)."""
    from scipy import ndimage

    if mask.all() or not mask.any():
        return np.zeros_like(mask)
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    return np.where(mask, inside, outside) <= width


def score(predictions: list[np.ndarray], masks: list[np.ndarray], tissues: list[str],
          block_size: int) -> dict:
    """Per tissue, mean over rows: Dice and boundary-masked Dice."""
    from napari_omniseg.train.metrics import dice

    out: dict[str, dict[str, list[float]]] = {}
    for pred, mask, tissue in zip(predictions, masks, tissues):
        s = out.setdefault(tissue, {"dice": [], "boundary_dice": []})
        s["dice"].append(dice(pred, mask))
        band = boundary_band(mask, block_size)
        if band.any():
            s["boundary_dice"].append(dice(pred & band, mask & band))
    return {t: {k: round(float(np.mean(v)), 4) for k, v in s.items()} for t, s in out.items()}


def _val_rows(manifest: Path) -> list:
    from napari_omniseg.train.annotations import read_manifest

    return read_manifest(manifest)["val"]


def predict_rows(model_path: Path, rows: list) -> list[np.ndarray]:
    from napari_omniseg import vocab
    from napari_omniseg.checkpoints import model_and_precision
    from napari_omniseg.predict.tiling import predict_array

    model, bf16 = model_and_precision(str(model_path), "renal", None)
    return [predict_array(model, a.image, [(vocab.tissue(a.tissue).task_id,
                                            vocab.scale_id(a.magnification))],
                          tile=PATCH, overlap=64, bf16=bf16)[0] > 0.5 for a in rows]


def lowres_predictions(blocks_dir: Path, rows: list, block_size: int) -> list[np.ndarray]:
    from napari_omniseg.train.annotations import imread_rgb
    from napari_omniseg.train.block_labels import BlockTable, upsampled_blocks

    table = BlockTable.load(blocks_dir / "table.csv")
    with open(blocks_dir / "manifest.csv", newline="", encoding="utf-8") as f:
        grids = {Path(r["image"]).name: r["blocks"] for r in csv.DictReader(f)}
    out = []
    for a in rows:
        grid = imread_rgb(blocks_dir / grids[Path(a.name).name], "blocks", rgb=False).astype(int)
        out.append(upsampled_blocks(grid, block_size, table, a.tissue))
    return out


def fresh_network(path: Path, seed: int) -> Path:
    """An untrained renal network of the bundled width, as a checkpoint."""
    import torch

    from napari_omniseg.checkpoints import save_checkpoint
    from napari_omniseg.nets.omniseg import OmniSegPlus

    torch.manual_seed(seed)
    return save_checkpoint(OmniSegPlus(width=0.5), path,
                           trained_on="nothing (a new network for the block-label benchmark)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--train-slides", type=int, default=8)
    p.add_argument("--val-slides", type=int, default=2)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--bins", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", type=Path, default=Path("block_labels_simulated.jsonl"))
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="blocks-sim-"))
    t0 = time.perf_counter()
    manifest = write_patches(work, a.train_slides, a.val_slides)
    blocks_dir = work / "blocks"
    _cli(["blocks", "from-masks", "--manifest", str(manifest), "--block-size",
          str(a.block_size), "--bins", str(a.bins), "-o", str(blocks_dir)])
    rows = _val_rows(manifest)
    truth = [a_.mask for a_ in rows]
    tissues = [a_.tissue for a_ in rows]
    fresh = fresh_network(work / "fresh.pt", a.seed)
    pixels = _only(manifest, "train")
    n_train = len(pixels.read_text(encoding="utf-8").splitlines()) - 1
    print(f"CPU: {cpu_model()}; {a.minutes:g} min per arm; {n_train} train and {len(rows)} val "
          f"patches in {time.perf_counter() - t0:.0f} s; work in {work}", flush=True)
    flags = {"intra": ["--block-loss", "intra"], "inter": ["--block-loss", "inter"],
             "blocks": [], "alpha0.5": ["--alpha", "0.5"], "alpha1.0": ["--alpha", "1.0"]}
    for arm in a.arms:
        t = time.perf_counter()
        if arm == "lowres":
            pred = lowres_predictions(blocks_dir, rows, a.block_size)
            steps = 0
        else:
            model = work / f"{arm}.pt"
            common = ["--base", str(fresh), "--minutes", str(a.minutes), "--seed", str(a.seed),
                      "-o", str(model)]
            if arm == "pixel":
                run = _cli(["finetune", "--manifest", str(pixels), *common])
            else:
                run = _cli(["finetune", "--manifest", str(blocks_dir / "manifest.csv"),
                            "--block-table", str(blocks_dir / "table.csv"), *common,
                            *flags[arm]])
            steps = run["steps"]
            pred = predict_rows(model, rows)
        line = {"arm": arm, "seed": a.seed, "minutes": a.minutes, "steps": steps,
                "block_size": a.block_size, "bins": a.bins,
                "tissues": score(pred, truth, tissues, a.block_size),
                "seconds": round(time.perf_counter() - t, 1), "cpu": cpu_model(),
                "date": time.strftime("%Y-%m-%d")}
        print(json.dumps(line), flush=True)
        with open(a.results, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
