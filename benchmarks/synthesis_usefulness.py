"""Do synthetic pairs help fine-tuning? The usefulness table of docs/synthesis.md.

Usage::

    python benchmarks/synthesis_usefulness.py MANIFEST GENERATOR.pt [--minutes 4] [--synthetic 10]
        [--seeds 0 1 2] [--three-player] [--base MODEL] [--sets train "20% of train"]

Fine-tunes the bundled renal model on (a) every ``train`` row of the manifest (ki-dev), (b) the
same plus synthetic pairs, (c) 20% of the train rows (at least one per tissue), (d) that 20%
plus synthetic pairs; the same time budget each, with ``omniseg finetune`` as a user runs it.
With ``--three-player``, also the paper's game with ``omniseg train synthesis
--segmenter-out`` (the generator starting from GENERATOR.pt, the segmenter from the bundled
one), same budget: (e) on every train row, (f) on the 20% with the other 80% as unlabelled
images (semi-supervised). Every arm runs once per seed (the fine-tuning's and the synthetic
pairs' seed; the 20% subset stays the same).
The ``val`` rows are never trained on nor used to pick weights: each result is scored on them
afterwards with ``omniseg evaluate --split val``. Synthetic pairs: ``--synthetic`` per trained
tissue, made by the generator from simulated layouts (their making is timed apart).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def _rows(manifest: Path) -> list[dict]:
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def _write(rows: list[dict], folder: Path, name: str, base: Path) -> Path:
    out = folder / name
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "image": str(base / r["image"]), "mask": str(base / r["mask"])})
    return out


def fifth(rows: list[dict], seed: int = 0) -> list[dict]:
    """20% of the rows, at least one of every tissue."""
    rng = np.random.default_rng(seed)
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["tissue"], []).append(r)
    keep = []
    for tissue_rows in by.values():
        k = max(1, round(0.2 * len(tissue_rows)))
        keep += [tissue_rows[i] for i in rng.choice(len(tissue_rows), k, replace=False)]
    return keep


def _score(exe: str, manifest: Path, model: Path) -> dict:
    ev = subprocess.run([exe, "evaluate", "--manifest", str(manifest), "--model", str(model),
                         "--split", "val"], check=True, capture_output=True, text=True)
    return json.loads(ev.stdout)


TISSUES = ("dt", "pt", "cap", "tuft", "ves", "ptc")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest", type=Path)
    p.add_argument("generator")
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--synthetic", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--three-player", action="store_true")
    p.add_argument("--only-three-player", action="store_true",
                   help="run the three-player arms alone")
    p.add_argument("--segmenter-adversarial", type=float, default=1.0)
    p.add_argument("--base", default=None,
                   help="the segmenter every fine-tune starts from (default: the bundled one, "
                        "which has learnt from every ki-dev train row, so give one that has "
                        "not, e.g. the simulated-only model of docs/training.md)")
    p.add_argument("--sets", nargs="+", default=["train", "20% of train"],
                   choices=["train", "20% of train"], help="the training sets to run")
    a = p.parse_args()
    exe = shutil.which("omniseg")
    rows = _rows(a.manifest)
    train = [r for r in rows if r.get("split") == "train"]
    few = fifth(train)
    rest = [r for r in train if r not in few]
    work = Path(tempfile.mkdtemp(prefix="usefulness-"))
    base = a.manifest.resolve().parent
    sets = {"train": _write(train, work, "train.csv", base),
            "20% of train": _write(few, work, "fifth.csv", base)}
    unlabelled = _write(rest, work, "rest.csv", base)
    arms = [] if a.only_three_player else [
        (name, manifest, synth, "finetune") for name, manifest in sets.items()
        if name in a.sets for synth in (0, a.synthetic)]
    if a.three_player or a.only_three_player:
        arms += [("train", sets["train"], 0, "three-player"),
                 ("20% of train", sets["20% of train"], 0, "three-player + unlabelled")]
    n_rows = {"train": len(train), "20% of train": len(few)}
    print(f"{time.strftime('%Y-%m-%d')}; budget {a.minutes} min each; synthetic "
          f"{a.synthetic} per tissue; seeds {a.seeds}; base {a.base or 'bundled'}; "
          f"generator {a.generator}")
    print("| training data | how | rows | synthetic pairs | seed | val Dice (mean) | " +
          " | ".join(t.upper() for t in TISSUES) + " | seconds |")
    print("|---|---|---|---|---|---|" + "---|" * 7)
    means: dict[tuple, list[float]] = {}
    for seed in a.seeds:
        for name, manifest, synth, how in arms:
            out = work / f"{manifest.stem}_{synth}_{how[:5]}_{seed}.pt"
            if how == "finetune":
                cmd = [exe, "finetune", "--manifest", str(manifest), "--minutes",
                       str(a.minutes), "--seed", str(seed), "-o", str(out)]
                if a.base:
                    cmd += ["--base", a.base]
                if synth:
                    cmd += ["--synthetic", str(synth), "--generator", a.generator]
            else:
                cmd = [exe, "train", "synthesis", "--manifest", str(manifest), "--simulated",
                       "0", "--init", a.generator, "--minutes", str(a.minutes), "--seed",
                       str(seed), "--segmenter-out", str(out), "-o", str(work / "g.pt"),
                       "--segmenter-adversarial", str(a.segmenter_adversarial)]
                if "unlabelled" in how:
                    cmd += ["--unlabelled", str(unlabelled)]
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            seconds = time.perf_counter() - t
            scores = _score(exe, a.manifest, out)
            cells = [f"{scores['tissues'][c]['dice']:.3f}" if c in scores["tissues"] else "-"
                     for c in TISSUES]
            key = (name, how, synth)
            means.setdefault(key, []).append(scores["mean_dice"])
            print(f"| {name} | {how} | {n_rows[name]} | {synth * 6 if synth else 0} | {seed} | "
                  f"{scores['mean_dice']:.3f} | " + " | ".join(cells) + f" | {seconds:.0f} |",
                  flush=True)
    print("\n| training data | how | synthetic pairs | val Dice, mean over seeds | sd | runs |")
    print("|---|---|---|---|---|---|")
    for (name, how, synth), values in means.items():
        print(f"| {name} | {how} | {synth * 6 if synth else 0} | {np.mean(values):.3f} | "
              f"{np.std(values, ddof=1) if len(values) > 1 else float('nan'):.3f} | "
              f"{len(values)} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
