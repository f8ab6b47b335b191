"""Training patches of simulated kidney cortex at every magnification.

Rendering a slide costs seconds, so slides are simulated once into a *patch bank*: random
crops of each pyramid level (40, 20, 10, 5x) with their six masks packed as bits. Training then
draws (patch, tissue, magnification) samples from the bank.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import vocab
from ..run import Progress, ShouldStop, check_stop
from ..simulate.renal import LEVEL_MAGNIFICATIONS, simulate_renal
from ..simulate.renal_layout import RenalAnatomy

#: Crops taken per slide at each magnification (a 4096 px slide has 1, 4, 16, 64 tiles of 256 px
#: at 5, 10, 20, 40x); more at low power because glomeruli and arteries are rare.
CROPS_PER_SLIDE = {40: 24, 20: 12, 10: 8, 5: 4}


@dataclass
class PatchBank:
    """Image patches with packed masks.

    Attributes
    ----------
    images : numpy.ndarray
        ``(N, P, P, 3)`` uint8.
    masks : numpy.ndarray
        ``(N, P, P)`` uint8; bit ``task_id`` set where that tissue is.
    magnifications : numpy.ndarray
        ``(N,)`` objective power of each patch.
    stains : numpy.ndarray
        ``(N,)`` stain code of each patch.
    slides : numpy.ndarray
        ``(N,)`` seed of the slide each patch came from.
    """

    images: np.ndarray
    masks: np.ndarray
    magnifications: np.ndarray
    stains: np.ndarray
    slides: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def mask(self, index: int, task_id: int) -> np.ndarray:
        """The 0/1 mask of one tissue in one patch."""
        return (self.masks[index] >> task_id) & 1

    def has(self, task_id: int) -> np.ndarray:
        """Per patch, whether the tissue is present at all."""
        return np.asarray(((self.masks >> task_id) & 1).reshape(len(self), -1).any(1))

    def save(self, path) -> None:
        """Write the bank to an ``.npz`` file (complete or not at all: a run reading a
        half-written bank would fail)."""
        from ..io.atomic import written_atomically

        with written_atomically(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, images=self.images, masks=self.masks,
                                magnifications=self.magnifications, stains=self.stains,
                                slides=self.slides)

    @classmethod
    def load(cls, path) -> PatchBank:
        """A bank written by :meth:`save`."""
        with np.load(path) as z:
            return cls(**{k: z[k] for k in z.files})


def pack_masks(masks: dict[str, np.ndarray]) -> np.ndarray:
    """Six 0/1 masks -> one uint8 image with bit ``task_id`` per tissue."""
    out = np.zeros(next(iter(masks.values())).shape, np.uint8)
    for code, m in masks.items():
        out |= (m.astype(np.uint8) & 1) << vocab.tissue(code).task_id
    return out


def build_patch_bank(
    seeds: list[int],
    stains: tuple[str, ...] = tuple(vocab.STAINS),
    size: int = 4096,
    patch: int = 256,
    crops: dict[int, int] | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    biopsy_fraction: float = 0.0,
    anatomy: RenalAnatomy | None = None,
) -> PatchBank:
    """Simulate one slide per seed (keep training and evaluation seeds apart), its stain
    drawn from ``stains``, ``size`` pixels a side at 40x, and crop ``patch``-pixel patches
    from it at every magnification (``crops`` per slide per magnification, default
    :data:`CROPS_PER_SLIDE`). A ``biopsy_fraction`` of slides are needle biopsies with glass
    around them, so the model learns that glass and tissue edges hold no structure.
    ``anatomy`` selects shapes beyond the simulator's default ones (:func:`simulate_renal`).
    ``progress`` and ``should_stop`` are the run contract, once per slide.
    """
    crops = crops or CROPS_PER_SLIDE
    images, masks, mags, stain_of, slide_of = [], [], [], [], []
    for i, seed in enumerate(seeds):
        check_stop(should_stop)
        rng = np.random.default_rng([seed, 0xBA7C])
        stain = stains[int(rng.integers(len(stains)))]
        shape = "biopsy" if rng.random() < biopsy_fraction else "full"
        s = simulate_renal(size, size, stain=stain, seed=seed, shape=shape, anatomy=anatomy)
        for level, mag in enumerate(LEVEL_MAGNIFICATIONS):
            img = s.image[level]
            packed = pack_masks({c: s.masks[c][level] for c in s.masks})
            h, w = img.shape[:2]
            if h < patch or w < patch:
                continue
            for _ in range(crops.get(mag, 0)):
                y = int(rng.integers(0, h - patch + 1))
                x = int(rng.integers(0, w - patch + 1))
                images.append(img[y:y + patch, x:x + patch])
                masks.append(packed[y:y + patch, x:x + patch])
                mags.append(mag)
                stain_of.append(stain)
                slide_of.append(seed)
        if progress is not None:
            progress(i + 1, len(seeds), f"simulated slide {i + 1} of {len(seeds)} ({stain})")
    return PatchBank(np.stack(images), np.stack(masks), np.array(mags), np.array(stain_of),
                     np.array(slide_of))


def neighbouring_magnifications(optimal: int) -> tuple[int, ...]:
    """The optimal power and the ones next to it (so the scale controller learns scale)."""
    i = vocab.MAGNIFICATIONS.index(optimal)
    return tuple(vocab.MAGNIFICATIONS[j] for j in (i - 1, i, i + 1)
                 if 0 <= j < len(vocab.MAGNIFICATIONS))


#: How often each tissue is drawn: small or rare structures (capillaries, arteries) more often.
TISSUE_WEIGHTS = {"dt": 0.15, "pt": 0.1, "cap": 0.15, "tuft": 0.1, "ves": 0.2, "ptc": 0.3}


class ConditionSampler:
    """Draws (patch index, tissue, magnification) training samples from a bank.

    Tissues are drawn with :data:`TISSUE_WEIGHTS`; the magnification is the tissue's optimal
    one with probability ``p_optimal``, else a neighbouring one; the patch contains the tissue
    with probability ``p_present`` (rare tissues would otherwise be seen mostly as empty
    patches).
    """

    def __init__(self, bank: PatchBank, p_optimal: float = 0.7, p_present: float = 0.8,
                 seed: int = 0) -> None:
        self.bank = bank
        self.p_optimal = p_optimal
        self.p_present = p_present
        self.rng = np.random.default_rng(seed)
        self._by_mag = {m: np.flatnonzero(bank.magnifications == m) for m in vocab.MAGNIFICATIONS}
        self._present = {t.task_id: bank.has(t.task_id) for t in vocab.TISSUES}
        w = np.array([TISSUE_WEIGHTS[t.code] for t in vocab.TISSUES])
        self._weights = w / w.sum()

    def draw(self) -> tuple[int, int, int]:
        """One (patch index, task id, magnification)."""
        t = vocab.TISSUES[int(self.rng.choice(len(vocab.TISSUES), p=self._weights))]
        usable = [m for m in neighbouring_magnifications(t.optimal_magnification)
                  if len(self._by_mag[m])] or [m for m in vocab.MAGNIFICATIONS
                                                if len(self._by_mag[m])]
        if t.optimal_magnification in usable and (self.rng.random() < self.p_optimal
                                                  or len(usable) == 1):
            mag = t.optimal_magnification
        else:
            others = [m for m in usable if m != t.optimal_magnification]
            mag = others[int(self.rng.integers(len(others)))]
        pool = self._by_mag[mag]
        if self.rng.random() < self.p_present:
            with_tissue = pool[self._present[t.task_id][pool]]
            if len(with_tissue):
                pool = with_tissue
        return int(pool[int(self.rng.integers(len(pool)))]), t.task_id, mag
