"""Beer-Lambert stain model: tissue materials -> stain uptake -> optical density -> RGB.

Each stain protocol is a set of dyes (optical-density colour vectors) and an affinity table that
says how much of each dye every tissue material takes up. A slide draws its own variation of
dye colours, dye strengths, illumination and optical blur from its seed, like real batches do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import vocab

#: Tissue materials the renderer paints, in the order of the concentration stack.
MATERIALS: tuple[str, ...] = (
    "nucleus", "cyto_pt", "cyto_dt", "brush", "bm", "rbc",
    "collagen", "muscle", "mesangium", "plasma", "elastic",
)

# Dye optical-density vectors (R, G, B), before normalisation. Hematoxylin and eosin follow
# Ruifrok & Johnston's colour deconvolution values; the others are chosen from their hues.
_DYES: dict[str, tuple[float, float, float]] = {
    "hematoxylin": (0.65, 0.70, 0.29),
    "eosin": (0.26, 0.86, 0.44),
    "schiff": (0.30, 0.92, 0.24),       # PAS magenta
    "silver": (0.56, 0.60, 0.58),       # reduced silver, near-black
    "aniline_blue": (0.80, 0.55, 0.12),  # trichrome collagen blue
    "fuchsin": (0.06, 0.86, 0.50),      # trichrome cytoplasm red
    "iron_hematoxylin": (0.58, 0.62, 0.50),
}

# material -> {dye: uptake}
_AFFINITY: dict[str, dict[str, dict[str, float]]] = {
    "he": {
        "nucleus": {"hematoxylin": 0.95, "eosin": 0.10},
        "cyto_pt": {"eosin": 0.48, "hematoxylin": 0.05},
        "cyto_dt": {"eosin": 0.30, "hematoxylin": 0.10},
        "brush": {"eosin": 0.75},
        "bm": {"eosin": 0.28},
        "rbc": {"eosin": 1.15, "hematoxylin": 0.04},
        "collagen": {"eosin": 0.32, "hematoxylin": 0.02},
        "muscle": {"eosin": 0.62, "hematoxylin": 0.05},
        "mesangium": {"eosin": 0.38, "hematoxylin": 0.14},
        "plasma": {"eosin": 0.09},
        "elastic": {"eosin": 0.55},
    },
    "pas": {
        "nucleus": {"hematoxylin": 0.90},
        "cyto_pt": {"schiff": 0.26, "hematoxylin": 0.08},
        "cyto_dt": {"schiff": 0.18, "hematoxylin": 0.12},
        "brush": {"schiff": 1.00},
        "bm": {"schiff": 1.20},
        "rbc": {"schiff": 0.30, "eosin": 0.15},
        "collagen": {"schiff": 0.24},
        "muscle": {"schiff": 0.28},
        "mesangium": {"schiff": 0.80, "hematoxylin": 0.08},
        "plasma": {"schiff": 0.06},
        "elastic": {"schiff": 0.40},
    },
    "sil": {
        "nucleus": {"hematoxylin": 0.60, "silver": 0.05},
        "cyto_pt": {"eosin": 0.30},
        "cyto_dt": {"eosin": 0.20, "hematoxylin": 0.04},
        "brush": {"eosin": 0.30, "silver": 0.10},
        "bm": {"silver": 1.40},
        "rbc": {"eosin": 0.75},
        "collagen": {"silver": 0.22, "eosin": 0.10},
        "muscle": {"eosin": 0.32},
        "mesangium": {"silver": 0.65},
        "plasma": {"eosin": 0.04},
        "elastic": {"silver": 0.75},
    },
    "tri": {
        "nucleus": {"iron_hematoxylin": 0.90},
        "cyto_pt": {"fuchsin": 0.58},
        "cyto_dt": {"fuchsin": 0.40, "iron_hematoxylin": 0.05},
        "brush": {"fuchsin": 0.62},
        "bm": {"aniline_blue": 0.75},
        "rbc": {"fuchsin": 1.10},
        "collagen": {"aniline_blue": 0.38},
        "muscle": {"fuchsin": 0.72},
        "mesangium": {"aniline_blue": 0.50, "fuchsin": 0.10},
        "plasma": {"fuchsin": 0.05},
        "elastic": {"fuchsin": 0.30},
    },
}


@dataclass(frozen=True)
class StainStyle:
    """One slide's stain appearance.

    Attributes
    ----------
    stain : str
        Stain code (``he``, ``pas``, ``sil``, ``tri``).
    material_od : numpy.ndarray
        ``(n_materials, 3)`` optical density per unit concentration of each material.
    background : numpy.ndarray
        Illumination (glass) RGB intensity, ``(3,)``.
    blur_px : float
        Optical blur (Gaussian sigma) at 40x, in pixels.
    noise : float
        Sensor noise standard deviation, in 8-bit intensity units.
    """

    stain: str
    material_od: np.ndarray
    background: np.ndarray
    blur_px: float
    noise: float


def stain_style(stain: str, seed: int, variation: float = 1.0) -> StainStyle:
    """Draw one slide's stain appearance.

    Parameters
    ----------
    stain : str
        Stain code.
    seed : int
        Slide seed; the same seed gives the same appearance.
    variation : float
        0 gives the textbook appearance; 1 the usual batch-to-batch spread.
    """
    stain = vocab.stain(stain)
    rng = np.random.default_rng([seed, 0x57A1])
    dyes = {}
    for name, vec in _DYES.items():
        v = np.asarray(vec, np.float64) + variation * rng.normal(0, 0.05, 3)
        v = np.clip(v, 0.02, None)
        dyes[name] = v / np.linalg.norm(v) * (1 + variation * rng.uniform(-0.22, 0.22))
    table = _AFFINITY[stain]
    od = np.zeros((len(MATERIALS), 3), np.float32)
    for i, mat in enumerate(MATERIALS):
        for dye, uptake in table[mat].items():
            od[i] += uptake * dyes[dye]
    od *= 1 + variation * rng.uniform(-0.12, 0.12)
    background = 246 + variation * rng.uniform(-10, 6, 3)
    return StainStyle(
        stain=stain,
        material_od=od.astype(np.float32),
        background=background.astype(np.float32),
        blur_px=float(0.7 + variation * rng.uniform(-0.2, 0.35)),
        noise=float(1.5 + variation * rng.uniform(0, 1.5)),
    )


def od_to_rgb(od: np.ndarray, style: StainStyle, noise: np.ndarray | None = None) -> np.ndarray:
    """Beer-Lambert transmission ``I = I0 * 10**-OD`` as uint8 RGB, with optional sensor noise."""
    rgb = style.background * np.power(np.float32(10.0), -od)
    if noise is not None:
        rgb += noise[..., None] * style.noise
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
