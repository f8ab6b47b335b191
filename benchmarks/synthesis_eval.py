"""Quality and speed of synthesis: the tables of docs/synthesis.md.

Usage::

    python benchmarks/synthesis_eval.py realism MANIFEST NAME=GENERATOR.pt [NAME=...] [--context]
    python benchmarks/synthesis_eval.py speed GENERATOR.pt [--side 4096]
    python benchmarks/synthesis_eval.py montage MANIFEST OUT.png NAME=GENERATOR.pt [NAME=...]

realism: for every ``val`` row of the manifest (ki-dev), each generator synthesises an image
    from the row's mask (only its tissue known, as in training), in the row's stain and at its
    magnification. Against the real ``val`` images: Fréchet distance and KID on the product's
    own feature space (the bundled renal segmenter's encoder: its global-average-pooled
    deepest features, no ImageNet network), and the cross-validated accuracy of a logistic
    classifier telling real from synthetic on those features (0.5: indistinguishable). Floors:
    real ``train`` images against real ``val`` ones; simulator patches (its own layouts) as a
    row of their own. Fidelity: Dice between each mask and what the bundled segmenter finds
    in the synthetic image, per tissue. ``--context``: a ``val`` row states one tissue, so a mask
    of it alone leaves the rest of the patch to interstitium where the real patch holds tubules
    and glomeruli; with ``--context`` every other tissue is filled in from what the bundled
    segmenter finds in the real image (the row's own tissue stays its label, and fidelity is
    still scored on it alone), so synthetic and real patches share a layout, as when a user
    paints every tissue.
speed: a 4096 x 4096 painted mask at 40x to an image (seconds, peak RSS, fresh process):
    the function in float32 and bfloat16 (with the time from Synthesize to a filled
    512 x 512 view), then ``omniseg synthesize`` as a user runs it.
montage: one ``val`` row per tissue (the first of each), real image | its mask | the image
    each generator makes from that mask (same stain, magnification and seed as realism), in
    one PNG. It holds real patches: look at it, do not commit it.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def features(model, images: list[np.ndarray], space: str = "deep") -> np.ndarray:
    """Features of RGB uint8 images in one of the renal segmenter's encoder spaces: "deep"
    (its global-average-pooled deepest layer, what the segmenter's conditions read) or
    "texture" (channel means and standard deviations of its first two stages: colour and
    fine texture, where nuclei and membranes show; the descriptor Segment's
    out-of-distribution check uses, ``predict/familiarity.py``)."""
    import torch

    from napari_omniseg.predict.familiarity import patch_descriptors

    if space == "texture":
        return np.concatenate([patch_descriptors(model, np.asarray(img)[None])
                               for img in images])
    out = []
    with torch.no_grad():
        for img in images:
            x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255
            out.append(model.backbone(x)[1][0].numpy())
    return np.stack(out)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def kid(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD² with the cubic polynomial kernel (Bińkowski et al.)."""
    d = a.shape[1]

    def k(x, y):
        return (x @ y.T / d + 1) ** 3

    m, n = len(a), len(b)
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean())


def classifier_accuracy(real: np.ndarray, fake: np.ndarray, folds: int = 5, seed: int = 0
                        ) -> float:
    """Cross-validated accuracy of a logistic regression telling real (1) from synthetic."""
    import torch

    x = np.concatenate([real, fake]).astype(np.float32)
    y = np.concatenate([np.ones(len(real)), np.zeros(len(fake))]).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    correct = 0
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
        xt = torch.from_numpy((x[train] - mu) / sd)
        yt = torch.from_numpy(y[train])
        lin = torch.nn.Linear(x.shape[1], 1)
        opt = torch.optim.LBFGS(lin.parameters(), max_iter=200)

        def closure(opt=opt, lin=lin, xt=xt, yt=yt):  # run now, inside this fold
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                lin(xt)[:, 0], yt) + 1e-2 * (lin.weight ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            pred = lin(torch.from_numpy((x[test] - mu) / sd))[:, 0] > 0
        correct += int((pred.numpy() == (y[test] > 0.5)).sum())
    return correct / len(x)


def with_context(seg, pairs) -> tuple[np.ndarray, np.ndarray]:
    """Each row's masks with its unstated tissues filled in from the segmenter's answer on the
    real image (at the row's magnification), and every tissue then known. A tissue is asked
    for only at its optimal magnification or a neighbouring one, as the segmenter learnt it
    (capillaries are not looked for at 5x); elsewhere it stays empty."""
    import torch

    from napari_omniseg import vocab
    from napari_omniseg.train.renal_data import neighbouring_magnifications

    masks = np.array(pairs.masks, bool)
    for i, img in enumerate(pairs.images):
        known = np.broadcast_to(np.asarray(pairs.known[i], bool).reshape(
            len(vocab.TISSUES), -1), (len(vocab.TISSUES), masks[i, 0].size))
        x = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1)[None]
        for t in np.flatnonzero(~known.all(1)):
            mags = neighbouring_magnifications(vocab.TISSUES[t].optimal_magnification)
            if int(pairs.magnifications[i]) not in mags:
                continue
            with torch.no_grad():
                logits = seg(x.float() / 255, torch.tensor([int(t)]), torch.tensor(
                    [vocab.scale_id(pairs.magnifications[i])]))
            found = (logits[0, 1] > logits[0, 0]).numpy()
            masks[i, t] = np.where(known[t].reshape(found.shape), masks[i, t], found)
    return masks, np.ones((len(masks), len(vocab.TISSUES)), bool)


def _synthetic(spec: str, pairs, index: list[int], seed: int, masks: np.ndarray | None = None,
               known: np.ndarray | None = None) -> tuple[str, list[np.ndarray]]:
    """NAME=checkpoint (or NAME=prior) -> the name and its images of the chosen pairs' masks,
    only each row's known tissues stated, as in training (or ``masks`` and ``known`` given,
    from :func:`with_context`)."""
    from napari_omniseg import vocab
    from napari_omniseg.checkpoints import load_model
    from napari_omniseg.predict.synthesize import generate_window
    from napari_omniseg.simulate.mask_prior import render_prior

    masks = pairs.masks if masks is None else masks
    known = pairs.known if known is None else known
    name, path = spec.split("=", 1)
    if path == "prior":  # the anatomy prior alone: the known tissues' masks drawn in
        def stated(i: int) -> np.ndarray:
            k = np.asarray(known[i], bool)
            return k[:, None, None] if k.ndim == 1 else k

        return name, [render_prior(np.asarray(masks[i], bool) & stated(i), pairs.stains[i],
                                   vocab.mpp_of_magnification(pairs.magnifications[i]), seed)
                      for i in index]
    g = load_model(path, device="cpu").float().eval()
    return name, [generate_window(g, masks[i], pairs.stains[i], pairs.magnifications[i],
                                  seed, known=known[i]) for i in index]


def montage(manifest: str, out: str, generators: list[str], seed: int = 0,
            side: int = 192) -> None:
    import imageio.v3 as iio
    from skimage.transform import resize

    from napari_omniseg.train.synthesis import pairs_from_manifest

    val = pairs_from_manifest(manifest, split="val")
    index, seen = [], set()
    for i in range(len(val)):
        t = int(np.argmax(np.asarray(val.known[i]).reshape(len(val.known[i]), -1).mean(1)))
        if t not in seen:
            seen.add(t)
            index.append((t, i))
    index = [i for _, i in sorted(index)]
    columns = [[val.images[i] for i in index],
               [np.repeat((val.masks[i].max(0) > 0)[..., None] * 255, 3, -1).astype(np.uint8)
                for i in index]]
    names = ["real", "mask"]
    for spec in generators:
        name, images = _synthetic(spec, val, index, seed)
        names.append(name)
        columns.append(images)

    def tile(img: np.ndarray) -> np.ndarray:
        small = resize(img, (side, side), order=1, preserve_range=True, anti_aliasing=True)
        return np.pad(small.astype(np.uint8), ((2, 2), (2, 2), (0, 0)), constant_values=255)

    rows = [np.concatenate([tile(col[r]) for col in columns], 1) for r in range(len(index))]
    iio.imwrite(out, np.concatenate(rows, 0))
    print(f"{out}: rows " + ", ".join(f"{val.stains[i]} {val.magnifications[i]:g}x" for i in index)
          + "; columns " + ", ".join(names))


def realism(manifest: str, generators: list[str], seed: int = 0, context: bool = False) -> None:
    import torch

    from napari_omniseg import vocab
    from napari_omniseg.checkpoints import load_model
    from napari_omniseg.train.synthesis import pairs_from_manifest

    torch.set_num_threads(2)
    seg = load_model("renal", device="cpu").float().eval()
    val = pairs_from_manifest(manifest, split="val")
    train = pairs_from_manifest(manifest, split="train")
    rows = []
    from napari_omniseg.train.renal_data import build_patch_bank

    bank = build_patch_bank([9100, 9101, 9102], stains=("he", "pas"), size=2048,
                            crops={40: 4, 20: 0, 10: 6, 5: 4})
    rows.append(("real train vs real val (floor)", list(train.images), None))
    rows.append(("simulator's own images (its layouts)", list(bank.images), None))
    masks, known = with_context(seg, val) if context else (None, None)
    for spec in generators:
        name, fakes = _synthetic(spec, val, list(range(len(val))), seed, masks, known)
        rows.append((name, fakes, fakes))
    print(f"CPU: {_cpu()}; {time.strftime('%Y-%m-%d')}; {len(val)} val, {len(train)} train "
          "patches; features of the bundled renal segmenter's encoder"
          + ("; masks with context (other tissues from the segmenter)" if context else ""))
    for space in ("deep", "texture"):
        real_val = features(seg, list(val.images), space)
        print(f"\nfeature space: {space} ({real_val.shape[1]}-d)")
        print("| images | Fréchet distance | KID x 1000 | real/synthetic classifier accuracy |")
        print("|---|---|---|---|")
        for name, images, _ in rows:
            feats = features(seg, images, space)
            print(f"| {name} | {frechet(real_val, feats):.3f} | "
                  f"{1000 * kid(real_val, feats):.2f} | "
                  f"{classifier_accuracy(real_val, feats):.2f} |")
    print()
    print("Fidelity: Dice between the mask and the bundled segmenter on the synthetic image")
    print("| generator | " + " | ".join(t.label for t in vocab.TISSUES) + " | real val images |")
    print("|---|" + "---|" * (len(vocab.TISSUES) + 1))
    real_dice = _fidelity(seg, val, list(val.images))
    for name, _, fakes in rows:
        if fakes is None:
            continue
        d = _fidelity(seg, val, fakes)
        print(f"| {name} | " + " | ".join(f"{np.mean(d[t.code]):.3f}" if d[t.code] else "-"
                                          for t in vocab.TISSUES)
              + f" | {np.mean([v for vs in real_dice.values() for v in vs]):.3f} |")
    print("| real val images | " + " | ".join(
        f"{np.mean(real_dice[t.code]):.3f}" if real_dice[t.code] else "-"
        for t in vocab.TISSUES) + " | |")


def _fidelity(seg, pairs, images) -> dict:
    import torch

    from napari_omniseg import vocab

    out = {t.code: [] for t in vocab.TISSUES}
    for i, img in enumerate(images):
        # the row's tissue is known everywhere (a tuft row also knows some capsule pixels)
        t = int(np.argmax(pairs.known[i].reshape(len(pairs.known[i]), -1).mean(1)))
        code = vocab.TISSUES[t].code
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            logits = seg(x, torch.tensor([t]), torch.tensor([vocab.scale_id(
                pairs.magnifications[i])]))
        pred = (logits[0, 1] > logits[0, 0]).numpy()
        truth = pairs.masks[i, t] > 0
        if truth.sum() + pred.sum():
            out[code].append(2 * (pred & truth).sum() / (pred.sum() + truth.sum()))
    return out


_SPEED_CHILD = r"""
import json, resource, sys, time
import numpy as np
path, side, bf16 = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "bf16"
from napari_omniseg.checkpoints import load_model
from napari_omniseg.predict.synthesize import synthesize
sys.path.insert(0, sys.argv[4])
from synthesis_eval import painted_mask
g = load_model(path, device="cpu")
lab = painted_mask(side)
t = time.perf_counter()
img = synthesize(g, lab, "pas", 40, seed=0, bf16=bf16).compute(num_workers=2)
full = time.perf_counter() - t
t = time.perf_counter()
view = synthesize(g, lab[:512, :512], "pas", 40, seed=0, bf16=bf16).compute()
first = time.perf_counter() - t
print(json.dumps({"path": "synthesize(...).compute(num_workers=2)",
                  "precision": "bfloat16" if bf16 else "float32", "side": side,
                  "seconds": round(full, 1), "view_seconds": round(first, 2),
                  "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


_TIMED_COMMAND = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
subprocess.run(json.loads(sys.argv[1]), check=True, capture_output=True)
print(json.dumps([time.perf_counter() - t,
                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))
"""


def painted_mask(side: int) -> np.ndarray:
    """A painted 40x mask of ``side`` pixels: tubules, glomeruli and capillaries as discs."""
    rng = np.random.default_rng(0)
    lab = np.zeros((side, side), np.uint8)
    yy, xx = np.ogrid[:side, :side]
    for v, n, r in ((2, 60, 90), (1, 40, 70), (3, 6, 220), (6, 400, 12)):
        for _ in range(n * side * side // 4096 ** 2):
            cy, cx = rng.integers(0, side, 2)
            lab[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = v
    return lab


def speed(generator: str, side: int) -> None:
    """The function in both precisions and the command, each in a fresh process."""
    import json
    import shutil
    import tempfile

    import tifffile

    here = str(Path(__file__).parent)
    from napari_omniseg.checkpoints import cpu_has_native_bf16

    native = cpu_has_native_bf16()
    print(f"CPU: {_cpu()} (bfloat16 in hardware: {native}); {time.strftime('%Y-%m-%d')}; "
          f"a {side} x {side} mask at 40x")
    # emulated bfloat16 runs many times slower than float32 and is not the default there
    precisions = ("fp32", "bf16") if native else ("fp32",)
    for precision in (() if generator == "prior" else precisions):
        out = subprocess.run([sys.executable, "-c", _SPEED_CHILD, generator, str(side),
                              precision, here], capture_output=True, text=True, check=True)
        print(out.stdout.strip().splitlines()[-1])
    work = Path(tempfile.mkdtemp(prefix="synth-speed-"))
    try:
        mask = work / "painted.tif"
        tifffile.imwrite(mask, painted_mask(side), resolution=(1e4 / 0.25, 1e4 / 0.25),
                         resolutionunit="CENTIMETER")
        cmd = [shutil.which("omniseg"), "synthesize", str(mask), "--stain", "pas",
               "--generator", generator, "-o", str(work / "out.ome.tif")]
        # a fresh parent, so that its children's peak memory is the command's alone
        out = subprocess.run([sys.executable, "-c", _TIMED_COMMAND, json.dumps(cmd)],
                             capture_output=True, text=True, check=True)
        seconds, peak = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps({"path": "omniseg synthesize",
                          "precision": "bfloat16" if native else "float32",
                          "side": side, "seconds": round(seconds, 1),
                          "peak_mb": round(peak)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def local_sd_floor(manifest: str, k: int = 9) -> None:
    """Median k x k local standard deviation per channel inside the eroded DT/PT masks of
    the real `train` patches: how far from flat a real tubule is (a floor for tests)."""
    import csv

    from PIL import Image
    from scipy import ndimage

    root = Path(manifest).parent
    per_patch = []
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        if row["split"] != "train" or row["tissue"] not in ("dt", "pt"):
            continue
        rgb = np.asarray(Image.open(root / row["image"]).convert("RGB"), float)
        inner = ndimage.binary_erosion(np.asarray(Image.open(root / row["mask"]).convert("L"))
                                       > 127, iterations=4)
        if inner.sum() < 100:
            continue
        sds = []
        for c in range(3):
            mean = ndimage.uniform_filter(rgb[..., c], k)
            var = ndimage.uniform_filter(rgb[..., c] ** 2, k) - mean ** 2
            sds.append(float(np.median(np.sqrt(np.clip(var, 0, None))[inner])))
        per_patch.append(sds)
    v = np.array(per_patch)
    print(f"{len(v)} train tubule patches; local sd (R, G, B): min {np.round(v.min(0), 1)}, "
          f"median {np.round(np.median(v, 0), 1)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    r = sub.add_parser("realism")
    r.add_argument("manifest")
    r.add_argument("generators", nargs="+",
                   help="NAME=checkpoint.pt, or NAME=prior for the anatomy prior alone")
    r.add_argument("--context", action="store_true",
                   help="fill each row's unstated tissues from the segmenter on the real image")
    s = sub.add_parser("speed")
    s.add_argument("generator")
    s.add_argument("--side", type=int, default=4096)
    f = sub.add_parser("local-sd")
    f.add_argument("manifest")
    m = sub.add_parser("montage")
    m.add_argument("manifest")
    m.add_argument("out")
    m.add_argument("generators", nargs="+", help="as for realism")
    a = p.parse_args()
    if a.what == "realism":
        realism(a.manifest, a.generators, context=a.context)
    elif a.what == "montage":
        montage(a.manifest, a.out, a.generators)
    elif a.what == "local-sd":
        local_sd_floor(a.manifest)
    else:
        speed(a.generator, a.side)


if __name__ == "__main__":
    main()
