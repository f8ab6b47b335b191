"""Adaptation without labels: the tables of docs/adaptation.md.

Usage::

    python benchmarks/adaptation.py MANIFEST --protocol real [--source he --target pas]
        [--minutes 5] [--seeds 0 1 2] [--arms ...] [--results FILE.jsonl]
    python benchmarks/adaptation.py MANIFEST --protocol simulator [--minutes 5] [--seeds 0 1 2]

``real`` (the paper's protocol): the source stain's ``train`` rows are labelled, the target
stain's ``train`` images unlabelled, and every arm is scored on the target stain's ``val``
rows. Arms, each with ``omniseg adapt`` as a user runs it, the same time budget, starting from
``--base`` (default: the bundled model, which has learnt from every ki-dev ``train`` row, so
give one that has not, e.g. the simulated-only model of docs/training.md): ``source``
(``--levels none``), ``reinhard`` and ``macenko`` (the source model evaluated with ``omniseg
evaluate --normalise-stain``), ``encoder``, ``decoder``, ``shape`` (one discriminator), ``all``
(three), ``all_then_macenko`` (the ``all`` model scored with Macenko at test time),
``macenko_all`` (three, the targets Macenko-normalised to the source's stain first, scored with
the same normalisation), and ``supervised`` (both stains' train rows labelled, the upper
bound). With ``--mean-of-seeds``, the ``all`` models of every seed are then averaged (``omniseg
train average``) and the mean is scored as it is (``all_mean``) and with Macenko at test time
(``all_mean_then_macenko``). ``simulator``: the base model adapted to every ki-dev ``train``
image (unlabelled; the source is the simulator), scored on all ``val`` rows, against the base
model itself. ``val`` rows are never trained on nor used to pick weights (the manifests handed
to ``omniseg adapt`` hold train rows only). One JSON line per run goes to ``--results``; the
summary (mean and sd over seeds) is printed at the end.
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

ARMS = ("source", "reinhard", "macenko", "encoder", "decoder", "shape", "all", "macenko_all",
        "all_then_macenko", "supervised")
LEVELS = {"source": "none", "encoder": "encoder", "decoder": "decoder", "shape": "shape",
          "all": "encoder,decoder,shape", "macenko_all": "encoder,decoder,shape",
          "supervised": "none"}
#: Arms that adapt to stain-normalised targets and are scored with the same normalisation.
NORMALISED = {"macenko_all": "macenko"}
#: Arms that train nothing: an earlier arm's model of the same seed, scored with a
#: normalisation at test time.
TEST_TIME = {"reinhard": ("source", "reinhard"), "macenko": ("source", "macenko"),
             "all_then_macenko": ("all", "macenko")}


def _rows(manifest: Path) -> list[dict]:
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def _write(rows: list[dict], path: Path, base: Path, split: str | None = None) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "image": str(base / r["image"]), "mask": str(base / r["mask"]),
                        **({"split": split} if split else {})})
    return path


def _run(cmd: list[str]) -> dict:
    out = subprocess.run(["omniseg", *cmd], check=True, capture_output=True, text=True).stdout
    return json.loads(out[out.index("{"):])


def _evaluate(model: str, manifest: Path, normalise: str = "none") -> dict:
    return _run(["evaluate", "--manifest", str(manifest), "--model", model, "--split", "val",
                 "--normalise-stain", normalise])


def main() -> None:
    """Run the chosen arms and seeds; print the summary table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("manifest", type=Path)
    p.add_argument("--protocol", choices=("real", "simulator"), default="real")
    p.add_argument("--source", default="he")
    p.add_argument("--target", default="pas")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--results", type=Path, default=Path("adaptation_results.jsonl"))
    p.add_argument("--base", default="renal",
                   help="the model every arm starts from (default: the bundled one; give a "
                        "model that never saw the target stain's labels)")
    p.add_argument("--mean-of-seeds", action="store_true",
                   help="afterwards, average the 'all' models of the seeds and score the mean")
    a = p.parse_args()
    base = a.manifest.resolve().parent
    rows = _rows(a.manifest)
    work = Path(tempfile.mkdtemp(prefix="adapt-bench-"))
    train = [r for r in rows if r["split"] == "train"]
    if a.protocol == "real":
        src = _write([r for r in train if r["stain"] == a.source], work / "source.csv", base)
        both = _write(train, work / "both.csv", base)
        tgt = _write([r for r in train if r["stain"] == a.target], work / "target.csv", base)
        val = _write([r for r in rows if r["split"] == "val" and r["stain"] == a.target],
                     work / "val.csv", base)
        arms = a.arms
    else:
        src = None
        tgt = _write(train, work / "target.csv", base)
        val = _write([r for r in rows if r["split"] == "val"], work / "val.csv", base)
        arms = ["bundled", "all"]
    print(f"CPU: {cpu_model()}; {a.minutes:g} min per run; work in {work}", flush=True)
    for seed in a.seeds:
        for arm in arms:
            t0 = time.perf_counter()
            if arm == "bundled":
                if seed != a.seeds[0]:
                    continue
                score = _evaluate(a.base, val)
            elif arm in TEST_TIME:
                before, normalise = TEST_TIME[arm]
                model = work / f"{before}-{seed}.pt"
                if not model.exists():
                    print(f"{arm}: run the {before} arm of seed {seed} first", flush=True)
                    continue
                score = _evaluate(str(model), val, normalise)
            else:
                model = work / f"{arm}-{seed}.pt"
                cmd = ["adapt", "--target", str(tgt), "--levels", LEVELS.get(arm, "encoder,"
                       "decoder,shape"), "--minutes", str(a.minutes), "--seed", str(seed),
                       "--base", a.base, "-o", str(model)]
                if arm == "supervised":
                    cmd += ["--manifest", str(both)]
                elif src is not None:
                    cmd += ["--manifest", str(src)]
                normalise = NORMALISED.get(arm, "none")
                _run([*cmd, "--normalise-stain", normalise])
                score = _evaluate(str(model), val, normalise)
            _record(a, arm, seed, score, t0)
    if a.mean_of_seeds:
        models = [work / f"all-{seed}.pt" for seed in a.seeds]
        models = [m for m in models if m.exists()]
        if len(models) < 2:
            print("--mean-of-seeds: fewer than two 'all' models to average", flush=True)
        else:
            t0 = time.perf_counter()
            mean = work / "all-mean.pt"
            subprocess.run(["omniseg", "train", "average", *map(str, models), "-o", str(mean)],
                           check=True, capture_output=True)
            seeds = "mean of " + " ".join(m.stem.split("-")[1] for m in models)
            _record(a, "all_mean", seeds, _evaluate(str(mean), val), t0)
            _record(a, "all_mean_then_macenko", seeds, _evaluate(str(mean), val, "macenko"), t0)
    summarize(a.results)


def _record(a: argparse.Namespace, arm: str, seed: int | str, score: dict, t0: float) -> None:
    """Print one run's JSON line and append it to ``--results``."""
    record_run(a.results, {
        "protocol": a.protocol, "arm": arm, "base": Path(a.base).name, "seed": seed,
        "minutes": a.minutes, "source": a.source if a.protocol == "real" else "simulator",
        "target": a.target if a.protocol == "real" else "ki-dev train, all stains",
        "val_mean_dice": score["mean_dice"],
        "tissues": {k: v["dice"] for k, v in score["tissues"].items()}}, t0)


def summarize(results: Path) -> None:
    """Mean and sd of each (protocol, arm) over its seeds, and the share of the source ->
    supervised gap each real-protocol arm recovers."""
    lines = [json.loads(x) for x in results.read_text().splitlines() if x.strip()]
    groups: dict[tuple, list[float]] = {}
    for x in lines:
        groups.setdefault((x["protocol"], x["arm"], x["minutes"]), []).append(x["val_mean_dice"])
    for (protocol, arm, minutes), v in sorted(groups.items()):
        src = groups.get((protocol, "source", minutes))
        sup = groups.get((protocol, "supervised", minutes))
        gap = ""
        if src and sup and np.mean(sup) > np.mean(src):
            share = (np.mean(v) - np.mean(src)) / (np.mean(sup) - np.mean(src))
            gap = f", gap recovered {share:.0%}"
        print(f"{protocol:9s} {arm:10s} {minutes:g} min: {np.mean(v):.3f} "
              f"(sd {np.std(v, ddof=1) if len(v) > 1 else 0:.3f}, n={len(v)}){gap}")


if __name__ == "__main__":
    main()
