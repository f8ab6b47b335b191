"""Names and ids of everything the models can be asked about.

This module is the only place where tissue, magnification, stain and fetal-region ids live.
Other modules look names up here instead of writing ids of their own, so that a checkpoint, a
widget and the CLI always agree on what "task 5" means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import OmnisegInputError


@dataclass(frozen=True)
class Tissue:
    """A renal structure the Omni-Seg+ model can segment.

    Attributes
    ----------
    code : str
        Short code used on the command line and in file names (``"ptc"``).
    name : str
        Name a pathologist reads (``"peritubular capillary"``).
    task_id : int
        Index of the tissue in the model's task one-hot.
    optimal_magnification : int
        Objective power at which the tissue is best segmented.
    color : tuple of float
        RGBA in [0, 1] used for its labels layer.
    """

    code: str
    name: str
    task_id: int
    optimal_magnification: int
    color: tuple[float, float, float, float]

    @property
    def label(self) -> str:
        """Upper-case code used in layer names, e.g. ``"PTC"``."""
        return self.code.upper()


TISSUES: tuple[Tissue, ...] = (
    Tissue("dt", "distal tubule", 0, 10, (0.12, 0.47, 0.71, 1.0)),
    Tissue("pt", "proximal tubule", 1, 10, (1.0, 0.50, 0.05, 1.0)),
    Tissue("cap", "glomerular unit (capsule)", 2, 5, (0.17, 0.63, 0.17, 1.0)),
    Tissue("tuft", "glomerular tuft", 3, 5, (0.84, 0.15, 0.16, 1.0)),
    Tissue("ves", "artery", 4, 10, (0.58, 0.40, 0.74, 1.0)),
    Tissue("ptc", "peritubular capillary", 5, 40, (0.09, 0.75, 0.81, 1.0)),
)
TISSUE_CODES: tuple[str, ...] = tuple(t.code for t in TISSUES)
#: Smallest object of each tissue (µm²) that Quantify counts and export writes; smaller pieces
#: are specks (they still count in a tissue's area). Each is well below the tissue's smallest
#: real section: a 5 µm capillary lumen is 20 µm², a tubule cut by the view edge some hundreds.
MIN_OBJECT_UM2: dict[str, float] = {"dt": 25.0, "pt": 25.0, "cap": 100.0, "tuft": 100.0,
                                    "ves": 50.0, "ptc": 5.0}

#: Tissue pairs that can share a pixel. Every other pair lies in different kidney compartments
#: (tubules, glomerulus, arteries, interstitial capillaries), so a pixel painted as one is known
#: to be none of the others; the tuft lies inside the capsule.
OVERLAPPING_TISSUES: frozenset[frozenset[str]] = frozenset({frozenset({"cap", "tuft"})})


def disjoint_tissues(code: str) -> tuple[str, ...]:
    """The tissues that never cover a pixel of tissue ``code`` (compartments of the kidney)."""
    code = tissue(code).code
    return tuple(t for t in TISSUE_CODES
                 if t != code and frozenset({t, code}) not in OVERLAPPING_TISSUES)


#: Objective powers the model knows, with their scale id in the scale one-hot.
MAGNIFICATIONS: tuple[int, ...] = (5, 10, 20, 40)
SCALE_IDS: dict[int, int] = {m: i for i, m in enumerate(MAGNIFICATIONS)}

#: Micrometres per pixel at 40x; other powers scale inversely (20x is 0.5 um/px).
MPP_AT_40X = 0.25

#: Stain codes and the short names pathologists use (PAS: periodic acid-Schiff).
STAINS: dict[str, str] = {
    "he": "H&E",
    "pas": "PAS",
    "sil": "Jones silver",
    "tri": "trichrome",
}


@dataclass(frozen=True)
class FetalRegion:
    """A region of a fetal MRI volume that the CoNeMOS model can segment."""

    code: str
    name: str
    region_id: int
    color: tuple[float, float, float, float]


FETAL_REGIONS: tuple[FetalRegion, ...] = (
    FetalRegion("uterus", "uterus", 0, (0.95, 0.75, 0.10, 1.0)),
    FetalRegion("body", "fetal body", 1, (0.20, 0.60, 0.90, 1.0)),
    FetalRegion("brain", "fetal brain", 2, (0.90, 0.30, 0.60, 1.0)),
    FetalRegion("eyes", "fetal eyes", 3, (0.30, 0.85, 0.30, 1.0)),
    FetalRegion("placenta", "placenta", 4, (0.60, 0.35, 0.15, 1.0)),
)
FETAL_REGION_CODES: tuple[str, ...] = tuple(r.code for r in FETAL_REGIONS)


def _by_code(items: tuple, code: str, what: str) -> Any:
    for item in items:
        if item.code == code.lower():
            return item
    raise OmnisegInputError(
        f"unknown {what} {code!r}; choose one of {', '.join(i.code for i in items)}")


def tissue(code: str) -> Tissue:
    """Return the tissue with this code.

    Raises
    ------
    OmnisegInputError
        If the code is unknown; the message lists the valid codes (a ValueError).
    """
    return _by_code(TISSUES, code, "tissue")


def fetal_region(code: str) -> FetalRegion:
    """Return the fetal region with this code (raises like :func:`tissue`)."""
    return _by_code(FETAL_REGIONS, code, "fetal region")


def scale_id(magnification: float) -> int:
    """Return the scale id of a supported magnification (5, 10, 20 or 40)."""
    m = int(round(magnification))
    if m not in SCALE_IDS:
        raise OmnisegInputError(
            f"magnification {magnification}x is not supported; choose one of "
            + ", ".join(f"{m}x" for m in MAGNIFICATIONS)
        )
    return SCALE_IDS[m]


def stain(code: str) -> str:
    """Validate a stain code and return it in lower case."""
    c = code.lower()
    if c not in STAINS:
        raise OmnisegInputError(f"unknown stain {code!r}; choose one of {', '.join(STAINS)}")
    return c


def mpp_of_magnification(magnification: float) -> float:
    """Micrometres per pixel conventionally associated with an objective power."""
    return MPP_AT_40X * 40.0 / magnification


def magnification_of_mpp(mpp: float) -> float:
    """Objective power conventionally associated with a pixel size (0.25 um/px is 40x)."""
    return MPP_AT_40X * 40.0 / mpp
