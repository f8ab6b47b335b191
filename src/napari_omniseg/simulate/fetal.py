"""Fetal MRI phantoms: EPI-like 3D volumes with nested region masks and partial label sets.

A uterus holds the fetal body (head and trunk), the brain sits in the head, two eyes in front of
the brain, and a thin curved placenta lines part of the uterine wall. Tissue contrast is low,
with a smooth bias field and Rician noise, as in fast fetal EPI. Shape, size and pose change with
the seed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .. import vocab
from ..errors import OmnisegInputError

#: Probability that a volume is labelled for each region, as in the CoNeMOS training data.
LABEL_PROBABILITY = {"uterus": 0.07, "body": 0.07, "brain": 0.44, "eyes": 0.39, "placenta": 0.61}


@dataclass
class FetalSample:
    """A simulated fetal MRI volume.

    Attributes
    ----------
    volume, masks
        ``(Z, Y, X)`` float32 intensities, roughly in [0, 1]; a ``(Z, Y, X)`` uint8 0/1 mask
        of every region (all are known in simulation).
    labelled : tuple of str
        The regions the volume is *annotated* for (its partial label set); training uses only
        these.
    spacing, affine, seed
        Voxel size in mm along ``(Z, Y, X)``; the NIfTI voxel-to-world matrix of the
        ``(X, Y, Z)`` = ``(i, j, k)`` storage order; the phantom's seed.
    """

    volume: np.ndarray
    masks: dict[str, np.ndarray]
    labelled: tuple[str, ...]
    spacing: tuple[float, float, float]
    affine: np.ndarray
    seed: int


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    a, b, c, d = q
    return np.array([
        [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
        [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
        [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
    ])


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma, mode="wrap")
    return f / (f.std() + 1e-6)


def _ellipsoid_sd(p: np.ndarray, centre: np.ndarray, axes: np.ndarray, rot: np.ndarray):
    """Approximate signed distance (mm, positive inside) to a rotated ellipsoid."""
    q = np.einsum("ij,j...->i...", rot.T, p - centre[:, None, None, None])
    r = np.sqrt(sum((q[i] / axes[i]) ** 2 for i in range(3)))
    return (1 - r) * axes.min()


def draw_label_set(rng: np.random.Generator) -> tuple[str, ...]:
    """Draw which regions a volume is annotated for (at least one)."""
    codes = vocab.FETAL_REGION_CODES
    chosen = tuple(c for c in codes if rng.random() < LABEL_PROBABILITY[c])
    if not chosen:
        p = np.array([LABEL_PROBABILITY[c] for c in codes])
        chosen = (codes[int(rng.choice(len(codes), p=p / p.sum()))],)
    return chosen


def simulate_fetal(seed: int = 0, size: int = 128, spacing: float = 3.0) -> FetalSample:
    """Simulate one fetal MRI volume with its region masks and partial label set.

    Parameters
    ----------
    seed : int
        Same seed, same volume.
    size : int
        Voxels along each axis (at most 128, at least 32).
    spacing : float
        Isotropic voxel size in mm (about 3 mm in fetal EPI).

    Returns
    -------
    FetalSample
    """
    if not 32 <= size <= 128:
        raise OmnisegInputError(f"size must be between 32 and 128 voxels, got {size}")
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 0xFE7A1])
    scale = size * spacing / 384.0  # anatomy shrinks with a smaller field of view
    n = size
    ax = (np.arange(n) - (n - 1) / 2) * spacing
    p = np.stack(np.meshgrid(ax, ax, ax, indexing="ij")).astype(np.float32)  # (3, Z, Y, X) mm

    # gentle non-rigid deformation so that no two uteri are ellipsoids of the same family
    warp = np.stack([_smooth_field(rng, (n, n, n), n / 8) for _ in range(3)]) * 6.0 * scale
    pw = p + warp

    rot_u = _rotation(rng)
    u_axes = np.array([rng.uniform(70, 95), rng.uniform(95, 130), rng.uniform(75, 100)]) * scale
    u_centre = rng.uniform(-12, 12, 3) * scale
    uterus_sd = _ellipsoid_sd(pw, u_centre, u_axes, rot_u)

    # fetus: head + trunk inside the uterus, away from the placenta side
    rot_f = _rotation(rng)
    head_r = rng.uniform(32, 45) * scale
    trunk_axes = np.array([rng.uniform(45, 60), rng.uniform(30, 40), rng.uniform(28, 38)]) * scale
    axis = rot_f[:, 0]
    f_centre = u_centre + rng.uniform(-8, 8, 3) * scale
    head_c = f_centre + axis * (trunk_axes[0] * 0.55 + head_r * 0.75)
    trunk_c = f_centre - axis * (head_r * 0.35)
    head_sd = _ellipsoid_sd(p, head_c, np.array([head_r * 1.08, head_r, head_r * 0.95]), rot_f)
    trunk_sd = _ellipsoid_sd(p, trunk_c, trunk_axes, rot_f)
    k = 6.0 * scale
    body_sd = k * np.log(np.exp(head_sd / k) + np.exp(trunk_sd / k))  # smooth union
    body_sd = np.minimum(body_sd, uterus_sd - 10 * scale)

    brain_sd = _ellipsoid_sd(p, head_c - axis * head_r * 0.05,
                             np.array([head_r * 0.86, head_r * 0.8, head_r * 0.76]), rot_f)
    brain_sd = np.minimum(brain_sd, np.minimum(head_sd, body_sd) - 3.5 * scale)
    # eyes: in front of the brain, either side of the midline
    face = rot_f[:, 1]
    side = rot_f[:, 2]
    eye_r = rng.uniform(7.0, 9.5) * scale
    eyes_sd = np.full(p.shape[1:], -1e3, np.float32)
    for sgn in (-1, 1):
        c = head_c + face * head_r * 0.72 + side * sgn * head_r * 0.33 + axis * head_r * 0.05
        eyes_sd = np.maximum(eyes_sd, eye_r - np.linalg.norm(p - c[:, None, None, None], axis=0))
    eyes_sd = np.minimum(eyes_sd, np.minimum(head_sd, body_sd) - 1.0 * scale)
    brain_sd = np.minimum(brain_sd, -eyes_sd - 2.0 * scale)

    # placenta: a curved slab on the inner uterine wall, within a cone around one direction
    d = rng.normal(size=3)
    d -= d.dot(axis) * axis  # not where the head points, so the fetus has room
    d /= np.linalg.norm(d) + 1e-9
    thick = rng.uniform(14, 24) * scale
    rel = pw - u_centre[:, None, None, None]
    cosang = np.einsum("i,i...->...", d, rel) / (np.linalg.norm(rel, axis=0) + 1e-6)
    cone = (cosang - np.cos(np.deg2rad(rng.uniform(45, 65)))) * 60 * scale
    wall = 4.0 * scale  # myometrium
    placenta_sd = np.minimum.reduce([uterus_sd - wall, thick + wall - uterus_sd, cone])
    placenta_sd = np.minimum(placenta_sd, -body_sd - 3 * scale)

    masks = {
        "uterus": uterus_sd > 0,
        "body": body_sd > 0,
        "brain": brain_sd > 0,
        "eyes": eyes_sd > 0,
        "placenta": placenta_sd > 0,
    }
    # EPI-like appearance: fluid bright, tissues darker, low contrast
    mother_sd = _ellipsoid_sd(pw, np.zeros(3), np.array([150, 175, 165]) * scale, rot_u)
    img = np.where(mother_sd > 0, 0.32, 0.02).astype(np.float32)
    img += (mother_sd > 0) * 0.06 * _smooth_field(rng, (n, n, n), 2.0)
    img[masks["uterus"]] = 0.46
    fluid = masks["uterus"] & (uterus_sd > wall)
    img[fluid] = rng.uniform(0.78, 0.9)
    img[masks["placenta"]] = rng.uniform(0.52, 0.6)
    img[masks["body"]] = rng.uniform(0.3, 0.38)
    img[masks["brain"]] = rng.uniform(0.58, 0.66)
    img[masks["eyes"]] = rng.uniform(0.8, 0.9)
    img += 0.03 * _smooth_field(rng, (n, n, n), 1.0) * (mother_sd > 0)
    img = ndimage.gaussian_filter(img, 0.6)
    bias = np.exp(0.18 * _smooth_field(rng, (n, n, n), n / 4))
    img *= bias
    sigma = rng.uniform(0.03, 0.06)
    real, imaginary = rng.normal(0, sigma, img.shape), rng.normal(0, sigma, img.shape)
    img = np.sqrt((img + real) ** 2 + imaginary ** 2)

    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -(n - 1) / 2 * spacing
    img /= np.percentile(img, 99.5)
    return FetalSample(
        volume=img.astype(np.float32),
        masks={c: m.astype(np.uint8) for c, m in masks.items()},
        labelled=draw_label_set(rng),
        spacing=(spacing, spacing, spacing),
        affine=affine,
        seed=seed,
    )


def write_fetal_nifti(sample: FetalSample, out_dir: str | os.PathLike, stem: str | None = None,
                      all_masks: bool = False) -> dict[str, Path]:
    """Write a phantom as NIfTI into ``out_dir`` (created): the volume, one mask per labelled
    region (``all_masks``: every region) and a label list, named ``<stem>...`` (default
    ``fetal_seed<seed>``). Returns the paths: ``"volume"``, ``"labels"`` (JSON) and one per
    region mask."""
    from ..io.export import save_nifti

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"fetal_seed{sample.seed}"
    paths: dict[str, Path] = {}

    def save(arr: np.ndarray, name: str, dtype) -> Path:
        return save_nifti(arr, sample.affine, out / f"{name}.nii.gz", dtype)

    # scanners store MRI as integers; 1000 steps per unit keeps the phantom's precision
    paths["volume"] = save(np.clip(sample.volume * 1000, 0, 65535), stem, np.uint16)
    regions = vocab.FETAL_REGION_CODES if all_masks else sample.labelled
    for r in regions:
        paths[r] = save(sample.masks[r], f"{stem}_{r}", np.uint8)
    labels = out / f"{stem}_labels.json"
    labels.write_text(json.dumps({"labelled": list(sample.labelled), "seed": sample.seed}))
    paths["labels"] = labels
    return paths
