"""Does Segment's out-of-distribution warning tell real tissue from the training data?

Usage::

    python benchmarks/familiarity.py --model renal --bank BANK.npz --manifest MANIFEST.csv \
        [--slides 1] [--refit] [--write OUT.pt]

The model's familiarity record (``predict/familiarity.py``) is fitted on the bank's simulated
patches (and, with ``--real``, on crops of the manifest's ``train`` rows) when the checkpoint has
none or ``--refit`` is given; ``--write`` saves the model with it (weights unchanged, float16
kept). Then, per set, the share of tiles farther than 95% of held-out training patches, their
median distance over the slide threshold (what 99% of as many training patches stay below) and
whether Segment would warn (above 1):

- held-out simulated slides (``evaluation_seeds``, 2048 px, every stain), written as JPEG
  OME-TIFF pyramids and checked the way Segment checks a slide (tile engine, glass mask);
- the manifest's real patches, ``train`` and ``val`` rows per stain, each patch described at
  its own magnification;
- the same real ``val`` patches opened as a user would (``open_slide`` with their µm/px, tiles
  at every tissue's working magnification), one warning decision per patch;
- the same again made unlike the training data in known ways (inverted, grey, colour channels
  reversed, recoloured brown like an immunostain): how sensitive the warning is.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _brown(x: np.ndarray) -> np.ndarray:
    """Optical density recoloured brown (a DAB-like immunostain)."""
    od = -np.log((x.astype(float) + 1) / 256).mean(-1, keepdims=True)
    return (255 * np.exp(-2 * od * np.array([0.27, 0.57, 0.78]))).clip(0, 255).astype(np.uint8)


#: Known ways to make a patch unlike the training data, for the warning's sensitivity.
SHIFTS = {
    "inverted": lambda x: 255 - x,
    "grey": lambda x: np.repeat(x.mean(-1, keepdims=True), 3, -1).astype(np.uint8),
    "channels reversed": lambda x: np.ascontiguousarray(x[..., ::-1]),
    "recoloured brown": _brown,
}


def main() -> None:
    from napari_omniseg import vocab
    from napari_omniseg.checkpoints import _resolve, load_model, resave_checkpoint
    from napari_omniseg.io.slides import open_slide
    from napari_omniseg.predict.familiarity import (
        familiarity_of,
        patch_descriptors,
        slide_familiarity,
    )
    from napari_omniseg.predict.slide import make_engines
    from napari_omniseg.simulate.renal import write_renal_slide
    from napari_omniseg.train.annotations import read_manifest
    from napari_omniseg.train.renal import _real_rows, evaluation_seeds, training_familiarity
    from napari_omniseg.train.renal_data import PatchBank

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="renal")
    p.add_argument("--bank", type=Path, help="simulated training patches (omniseg train --bank)")
    p.add_argument("--manifest", type=Path, required=True, help="real annotated patches")
    p.add_argument("--real", action="store_true",
                   help="fit on the manifest's train rows too (a model trained on them)")
    p.add_argument("--slides", type=int, default=1, help="held-out simulated slides per stain")
    p.add_argument("--refit", action="store_true")
    p.add_argument("--write", type=Path, help="save the model with its record here")
    args = p.parse_args()

    t0 = time.perf_counter()
    model = load_model(args.model, device="cpu")
    if args.refit or familiarity_of(model) is None:
        if args.bank is None:
            p.error("the model has no familiarity record: give --bank to fit one")
        real = _real_rows(str(args.manifest)) if args.real else []
        record = training_familiarity(model, PatchBank.load(args.bank), real)
        model.omniseg_metadata = {**model.omniseg_metadata, **record}
    fam = familiarity_of(model)
    assert fam is not None
    print(f"<!-- {time.strftime('%Y-%m-%d')}, model {args.model}, record on {fam.patches} "
          f"patches, threshold {fam.threshold:.2f} -->")
    rows = [("set", "tiles", "beyond 95% of training", "median / slide threshold", "warns")]

    with tempfile.TemporaryDirectory(prefix="omniseg-fam-") as tmp:
        for stain in vocab.STAINS:
            for seed in evaluation_seeds(args.slides, 2048):
                image, _ = write_renal_slide(Path(tmp) / f"{stain}{seed}.ome.tif", 2048, 2048,
                                             stain=stain, seed=seed, quality=90)
                slide = open_slide(image)
                r = slide_familiarity(make_engines(slide, ("all",), None, model), model)
                slide.close()
                rows.append((f"simulated {stain} slide {seed}", r.tiles, f"{r.beyond:.2f}",
                             f"{r.median:.2f}", "yes" if r.unfamiliar else "no"))
                print(rows[-1], flush=True)

    by_split = read_manifest(args.manifest)
    for split in ("train", "val"):
        for stain in sorted({a.stain for a in by_split.get(split, [])}):
            patches = [a.image for a in by_split[split] if a.stain == stain]
            side = min(min(x.shape[:2]) for x in patches) // 16 * 16
            batch = np.stack([x[:side, :side, :3] for x in patches])
            d = fam.distances(patch_descriptors(model, batch, bf16=True))
            median = np.median(d) / fam.slide_threshold(len(d))
            rows.append((f"real {stain} {split} patches, as one set", len(d),
                         f"{(d > fam.threshold).mean():.2f}", f"{median:.2f}",
                         "yes" if median > 1 else "no"))

    def warnings(path_of: Any) -> str:
        """Open each val patch (the file ``path_of(a)`` returns) as a slide, as a user would;
        how many Segment would warn on."""
        val = by_split.get("val", [])
        warned = 0
        for a in val:
            slide = open_slide(path_of(a), mpp=10.0 / a.magnification)
            r = slide_familiarity(make_engines(slide, ("all",), None, model), model)
            slide.close()
            warned += bool(r.unfamiliar)
            print(a.name, r, flush=True)
        return f"{warned} of {len(val)}"

    n_val = len(by_split.get("val", []))
    rows.append(("real val patches opened as slides", n_val, "-", "-",
                 warnings(lambda a: Path(args.manifest).parent / a.name)))

    # sensitivity: the same val patches made unlike any training patch in known ways
    import tifffile

    with tempfile.TemporaryDirectory(prefix="omniseg-fam-") as tmp:
        for shift, change in SHIFTS.items():
            def shifted(a: Any, shift: str = shift, change: Any = change) -> Path:
                path = Path(tmp) / f"{shift}.tif"
                tifffile.imwrite(path, change(np.ascontiguousarray(a.image[..., :3])))
                return path

            rows.append((f"real val patches {shift}, opened as slides", n_val, "-", "-",
                         warnings(shifted)))
            print(rows[-1], flush=True)

    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for k, r in enumerate(rows):
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")
        if k == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.write:
        resave_checkpoint(_resolve(args.model), args.write, familiarity=fam.as_dict())
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
