"""Do synthetic pairs help fine-tuning? The usefulness table of docs/synthesis.md.

Usage::

    python benchmarks/synthesis_usefulness.py MANIFEST GENERATOR.pt [--minutes 4] [--synthetic 10]

Fine-tunes the bundled renal model on (a) every ``train`` row of the manifest (ki-dev), (b) the
same plus synthetic pairs, (c) 20% of the train rows (at least one per tissue), (d) that 20%
plus synthetic pairs; the same time budget each, with ``omniseg finetune`` as a user runs it.
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest", type=Path)
    p.add_argument("generator")
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--synthetic", type=int, default=10)
    a = p.parse_args()
    exe = shutil.which("omniseg")
    rows = _rows(a.manifest)
    train = [r for r in rows if r.get("split") == "train"]
    work = Path(tempfile.mkdtemp(prefix="usefulness-"))
    base = a.manifest.resolve().parent
    sets = {"train": _write(train, work, "train.csv", base),
            "20% of train": _write(fifth(train), work, "fifth.csv", base)}
    n_rows = {"train": len(train), "20% of train": len(fifth(train))}
    print(f"{time.strftime('%Y-%m-%d')}; budget {a.minutes} min each; synthetic "
          f"{a.synthetic} per tissue")
    print("| training data | rows | synthetic pairs | val Dice (mean) | " +
          " | ".join(["DT", "PT", "CAP", "TUFT", "VES", "PTC"]) + " | seconds |")
    print("|---|---|---|---|" + "---|" * 7)
    for name, manifest in sets.items():
        for synth in (0, a.synthetic):
            out = work / f"{manifest.stem}_{synth}.pt"
            cmd = [exe, "finetune", "--manifest", str(manifest), "--minutes", str(a.minutes),
                   "-o", str(out)]
            if synth:
                cmd += ["--synthetic", str(synth), "--generator", a.generator]
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            seconds = time.perf_counter() - t
            ev = subprocess.run([exe, "evaluate", "--manifest", str(a.manifest), "--model",
                                 str(out), "--split", "val"], check=True, capture_output=True,
                                text=True)
            scores = json.loads(ev.stdout)
            cells = [f"{scores['tissues'][c]['dice']:.3f}" if c in scores["tissues"] else "-"
                     for c in ("dt", "pt", "cap", "tuft", "ves", "ptc")]
            print(f"| {name} | {n_rows[name]} | {synth * 6 if synth else 0} | "
                  f"{scores['mean_dice']:.3f} | " + " | ".join(cells) + f" | {seconds:.0f} |",
                  flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
