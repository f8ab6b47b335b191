"""npe2 sample data: synthetic kidney biopsies (one per stain) and a synthetic fetal MRI.

The files live in ``sample_data/`` (regenerate with ``omniseg simulate samples``); each sample
opens the image and, hidden, its ground-truth labels.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from . import vocab
from ._reader import slide_layer_data, volume_layer_data

SAMPLE_STAINS = ("he", "pas", "sil", "tri")
#: Ground truth drawn in this order, so nested structures stay visible (tuft over capsule).
_RENAL_PAINT_ORDER = ("ves", "cap", "tuft", "pt", "dt", "ptc")
_FETAL_PAINT_ORDER = ("uterus", "placenta", "body", "brain", "eyes")


def sample_dir() -> Path:
    """The folder holding the sample files, in a wheel or in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "sample_data", here.parents[1] / "sample_data"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("the sample_data folder is missing; run `omniseg simulate samples`")


def renal_sample_paths(stain: str) -> tuple[Path, Path]:
    """Image and masks file of the renal sample in one stain."""
    d = sample_dir()
    return d / f"renal_{stain}.ome.tif", d / f"renal_{stain}_masks.ome.tif"


def fetal_sample_paths() -> tuple[Path, Path]:
    """Volume and ground-truth label file of the fetal sample."""
    d = sample_dir()
    return d / "fetal_mri.nii.gz", d / "fetal_mri_regions.nii.gz"


def _renal(stain: str) -> list[tuple]:
    import tifffile

    from .io.slides import open_slide

    image_path, masks_path = renal_sample_paths(stain)
    slide = open_slide(image_path)
    layers = [slide_layer_data(slide, name=f"synthetic kidney ({vocab.STAINS[stain]})")]
    with tifffile.TiffFile(masks_path) as tif:
        levels = [lv.asarray() for lv in tif.series[0].levels]
    gt = []
    for lv in levels:
        lab = np.zeros(lv.shape[1:], np.uint8)
        for code in _RENAL_PAINT_ORDER:
            t = vocab.tissue(code)
            lab[lv[t.task_id] > 0] = t.task_id + 1
        gt.append(lab)
    colors: dict[int | None, tuple] = {t.task_id + 1: t.color for t in vocab.TISSUES}
    colors[None] = (0, 0, 0, 0)
    layers.append((gt, {
        "name": "ground truth (simulated)",
        "scale": (slide.mpp, slide.mpp),
        "units": ("µm", "µm"),
        "multiscale": True,
        "visible": False,
        "colormap": _direct_colormap(colors),
        "metadata": {"tissues": {t.task_id + 1: t.code for t in vocab.TISSUES}},
    }, "labels"))
    return layers


def _direct_colormap(colors: dict) -> object:
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict=colors)


#: The synthetic kidney biopsy in each stain (H&E, PAS, Jones silver, trichrome).
renal_he, renal_pas, renal_sil, renal_tri = (partial(_renal, s) for s in SAMPLE_STAINS)


def fetal_mri() -> list[tuple]:
    """Synthetic fetal MRI volume with its (hidden) region ground truth."""
    from .io.volumes import open_volume

    vol_path, gt_path = fetal_sample_paths()
    vol = open_volume(vol_path)
    gt = open_volume(gt_path)
    colors: dict[int | None, tuple] = {r.region_id + 1: r.color for r in vocab.FETAL_REGIONS}
    colors[None] = (0, 0, 0, 0)
    return [
        volume_layer_data(vol, name="synthetic fetal MRI"),
        (np.asarray(gt.data).astype(np.uint8), {
            "name": "ground truth (simulated)",
            "scale": gt.spacing,
            "units": ("mm", "mm", "mm"),
            "visible": False,
            "colormap": _direct_colormap(colors),
            "metadata": {"regions": {r.region_id + 1: r.code for r in vocab.FETAL_REGIONS}},
        }, "labels"),
    ]


def write_samples(out_dir: str | Path, progress=None) -> list[Path]:
    """Regenerate every sample file into out_dir (the command behind `omniseg simulate samples`).

    Returns
    -------
    list of Path
        The files written.
    """
    from .io.export import save_nifti
    from .simulate.fetal import simulate_fetal
    from .simulate.renal import write_renal_slide

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for i, stain in enumerate(SAMPLE_STAINS):
        if progress:
            progress(i, len(SAMPLE_STAINS) + 1, f"kidney biopsy ({stain})")
        img, msk = write_renal_slide(
            out / f"renal_{stain}.ome.tif", 2560, 6144, stain=stain, seed=100 + i,
            shape="biopsy", masks_path=out / f"renal_{stain}_masks.ome.tif", quality=80,
        )
        written += [img] if msk is None else [img, msk]
    if progress:
        progress(len(SAMPLE_STAINS), len(SAMPLE_STAINS) + 1, "fetal MRI")
    f = simulate_fetal(seed=100)
    lab = np.zeros(f.volume.shape, np.uint8)
    for code in _FETAL_PAINT_ORDER:
        r = vocab.fetal_region(code)
        lab[f.masks[code] > 0] = r.region_id + 1
    for arr, name, dtype in ((np.clip(f.volume * 1000, 0, 65535), "fetal_mri", np.uint16),
                             (lab, "fetal_mri_regions", np.uint8)):
        written.append(save_nifti(arr, f.affine, out / f"{name}.nii.gz", dtype))
    if progress:
        progress(len(SAMPLE_STAINS) + 1, len(SAMPLE_STAINS) + 1, "done")
    return written
