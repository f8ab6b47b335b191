"""Training CoNeMOS on phantom volumes with partial label sets.

Each sample is (volume, region, mask) for a region the volume is labelled for; regions the volume
is not labelled for contribute nothing. The region of each sample is drawn inversely
proportionally to how many volumes are labelled for it, so rarely labelled regions (uterus, body)
are not drowned by frequent ones (placenta). The comparison baseline is the same U-Net without
FiLM and with one output channel per region, trained with the same partial-label loss.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import vocab
from ..run import Progress, ShouldStop

#: Phantom seeds of training volumes start here; evaluation uses seeds below it.
TRAIN_SEED0 = 10_000
#: Ways of drawing the region of a training sample (see :meth:`FetalSet.region_probabilities`).
SAMPLINGS = ("balanced", "inverse")
#: Share of crops centred on a voxel of the drawn region (the rest are uniform). The eyes are
#: always centred: with some eye-less crops the soft Dice made "no eyes anywhere" a resting point
#: the first bundled model never left (eyes Dice 0).
FOREGROUND_FRACTION = {"uterus": 0.67, "body": 0.67, "brain": 0.67, "eyes": 1.0,
                       "placenta": 0.67}


@dataclass
class FetalSet:
    """Phantom volumes with every region's mask and which regions each is labelled for."""

    volumes: np.ndarray  # (N, D, H, W) float32 in [0, 1]
    masks: np.ndarray  # (N, R, D, H, W) uint8
    labelled: np.ndarray  # (N, R) bool

    def region_probabilities(self, sampling: str = "balanced") -> np.ndarray:
        """Draw probability of each region.

        ``"balanced"``: each (volume, region) pair is drawn with a probability inversely
        proportional to how many volumes are labelled for its region, so every labelled region
        is drawn equally often (the reference implementation's weighting of training pairs).
        ``"inverse"``: the region itself is drawn inversely to its labelled count, so rarely
        labelled regions are drawn *more* often than frequent ones.
        """
        counts = self.labelled.sum(0).astype(float)
        if sampling == "balanced":
            w = (counts > 0).astype(float)
        elif sampling == "inverse":
            w = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
        else:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, not {sampling!r}")
        return w / w.sum()


def build_fetal_set(seeds: list[int], size: int = 128,
                    progress: Progress | None = None) -> FetalSet:
    """Simulate one phantom per seed (see :func:`~napari_omniseg.simulate_fetal`)."""
    from ..predict.volume import normalize_intensity
    from ..simulate.fetal import simulate_fetal

    vols, masks, lab = [], [], []
    for i, seed in enumerate(seeds):
        f = simulate_fetal(seed, size=size)
        vols.append(normalize_intensity(f.volume))
        masks.append(np.stack([f.masks[c] for c in vocab.FETAL_REGION_CODES]))
        lab.append([c in f.labelled for c in vocab.FETAL_REGION_CODES])
        if progress is not None:
            progress(i + 1, len(seeds), f"phantom {i + 1} of {len(seeds)}")
    return FetalSet(np.stack(vols), np.stack(masks), np.array(lab, bool))


#: Training losses by name (``omniseg train fetal --loss``), defined in
#: :data:`napari_omniseg.train.losses.VOLUME_LOSSES` (named here so that the command line's
#: choices load no torch).
LOSSES = ("dice", "dice+bce")


def make_fetal_batches(data: FetalSet, batch: int = 1, crop: int = 64, seed: int = 0,
                       augment: bool = True, baseline: bool = False,
                       foreground_fraction: float | dict[str, float] | None = None,
                       regions_per_crop: int = 1, sampling: str = "balanced"):
    """``next_batch()`` for :class:`~napari_omniseg.train.engine.SegmentationStep`.

    CoNeMOS batches hold one (volume, region) pair per sample; baseline batches hold a volume
    with all region channels and a validity mask that keeps only its labelled regions.
    A ``foreground_fraction`` of crops (one number, or one per region code; default
    :data:`FOREGROUND_FRACTION`) is centred on a voxel of the drawn region: small regions (the
    eyes are about a hundred voxels of two million) would otherwise almost never be seen, and
    the network learns to answer "nothing".

    With ``regions_per_crop`` > 1, each CoNeMOS crop also joins the batch under up to that many
    minus one *other* regions its volume is labelled for (the same crop, each augmented on its
    own), the way the baseline learns every labelled region of its crop at once. The drawn
    region still follows ``sampling`` (see :meth:`FetalSet.region_probabilities`); each extra
    sample costs one more forward.
    """
    import torch

    from .augment3d import intensity3d, spatial3d

    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    probs = data.region_probabilities(sampling)
    n_regions = data.masks.shape[1]
    ff = FOREGROUND_FRACTION if foreground_fraction is None else foreground_fraction
    fractions = [ff[c] if isinstance(ff, dict) else float(ff) for c in vocab.FETAL_REGION_CODES]

    def crop_box(i: int, r: int):
        shape = data.volumes.shape[1:]
        if rng.random() < fractions[r]:
            zyx = np.argwhere(data.masks[i, r])
            if len(zyx):
                c = zyx[int(rng.integers(len(zyx)))]
                return [int(np.clip(c[k] - crop // 2, 0, shape[k] - crop)) for k in range(3)]
        return [int(rng.integers(0, s - crop + 1)) for s in shape]

    def next_batch():
        vols, targets, regions, valid = [], [], [], []
        for _ in range(batch):
            r = int(rng.choice(n_regions, p=probs))
            candidates = np.flatnonzero(data.labelled[:, r])
            i = int(candidates[rng.integers(len(candidates))])
            z, y, x = crop_box(i, r)
            sl = (slice(z, z + crop), slice(y, y + crop), slice(x, x + crop))
            vols.append(data.volumes[i][sl])
            if baseline:
                every_region = (slice(None), *sl)
                targets.append(data.masks[i][every_region])
                valid.append(data.labelled[i])
            else:
                others = [o for o in np.flatnonzero(data.labelled[i]) if o != r]
                extra = rng.permutation(others)[:regions_per_crop - 1].tolist()
                for k, rr in enumerate([r, *extra]):
                    if k:
                        vols.append(vols[-1])
                    targets.append(data.masks[i, rr][sl][None])
                    regions.append(int(rr))
        v = torch.from_numpy(np.stack(vols))[:, None].float()
        t = torch.from_numpy(np.stack(targets)).float()
        if augment:
            v, t = spatial3d(v, t, g)
            v = intensity3d(v, g)
        out = {"images": v, "targets": t}
        if baseline:
            vmask = torch.from_numpy(np.stack(valid)).float()[:, :, None, None, None]
            out.update(conditions=(), valid=vmask.expand_as(t))
        else:
            out["conditions"] = (torch.tensor(regions),)
        return out

    return next_batch


_LOSS_WORDS = {"dice": "soft Dice", "dice+bce": "soft Dice + binary cross-entropy"}
_SAMPLING_WORDS = {
    "balanced": "every region equally often (a volume-region pair inversely to how many "
                "volumes are labelled for its region)",
    "inverse": "region drawn inversely to how many volumes are labelled for it"}


@dataclass(frozen=True)
class FetalRecipe:
    """How CoNeMOS (or the unconditioned baseline) is trained; :meth:`metadata` is what its
    checkpoint records.

    Attributes
    ----------
    volumes : int
        Phantom training volumes (seeds from :data:`TRAIN_SEED0`).
    batch : int
        Crops per step.
    crop : int
        Side of the cubic crops in voxels.
    lr : float
        Learning rate.
    baseline : bool
        The unconditioned multi-output baseline instead of CoNeMOS.
    regions_per_crop : int
        Regions trained per crop (CoNeMOS only; the baseline trains all).
    loss : {"dice", "dice+bce"}
        The loss on the labelled regions (:data:`LOSSES`).
    sampling : {"balanced", "inverse"}
        How the region of a sample is drawn (:data:`SAMPLINGS`).
    """

    volumes: int = 60
    batch: int = 2
    crop: int = 64
    lr: float = 5e-4
    baseline: bool = False
    regions_per_crop: int = 1
    loss: str = "dice+bce"
    sampling: str = "balanced"

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, not {self.loss!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, not {self.sampling!r}")

    def seeds(self) -> list[int]:
        """The phantom seeds of the training volumes."""
        return list(range(TRAIN_SEED0, TRAIN_SEED0 + self.volumes))

    def metadata(self, labelled: dict[str, int]) -> dict:
        """The fields and, in words, what they select; ``labelled``: volumes per region."""
        seeds = self.seeds()
        out = dataclasses.asdict(self)
        out.update(
            trained_on=f"{self.volumes} phantom volumes (seeds {seeds[0]}-{seeds[-1]}), "
                       f"labelled per region {labelled}",
            conditioned=not self.baseline,
            loss=_LOSS_WORDS[self.loss] + " on labelled regions only",
            sampling=_SAMPLING_WORDS[self.sampling],
            foreground_fraction=FOREGROUND_FRACTION,
            regions_per_crop=1 if self.baseline else self.regions_per_crop,
            augmentation="affine (rotation, scaling, shear, translation), elastic, flips, bias "
                         "field, gamma, contrast, noise, random crops")
        return out


def train_fetal(out: str | os.PathLike, recipe: FetalRecipe | None = None, *,
                minutes: float = 100.0, progress: Progress | None = None,
                should_stop: ShouldStop | None = None) -> Any:
    """Train CoNeMOS (or the unconditioned baseline) on phantoms and write its checkpoint.

    Parameters
    ----------
    out : path
        The checkpoint to write (every few minutes and at the end).
    recipe : FetalRecipe, optional
        Data, network and loss (default: the bundled model's).
    minutes : float
        The training budget after the phantoms are built.
    progress, should_stop
        The run contract (:mod:`napari_omniseg.run`).

    Returns
    -------
    TrainResult
        Its ``model`` the network, its ``recipe`` the recipe and timings stored in the
        checkpoint's metadata.
    """
    import time

    import torch

    from ..checkpoints import pick_device, save_checkpoint
    from ..nets.conemos import CoNeMOS
    from .engine import SegmentationStep, train_and_save
    from .losses import VOLUME_LOSSES

    recipe = recipe or FetalRecipe()
    t0 = time.perf_counter()
    data = build_fetal_set(recipe.seeds(), progress=progress)
    t_data = time.perf_counter() - t0
    torch.manual_seed(0)
    device = pick_device()
    model = CoNeMOS(conditioned=not recipe.baseline).to(device)
    labelled = dict(zip(vocab.FETAL_REGION_CODES, data.labelled.sum(0).tolist()))
    meta = {**recipe.metadata(labelled), "device": str(device)}
    batches = make_fetal_batches(data, recipe.batch, recipe.crop, baseline=recipe.baseline,
                                 regions_per_crop=recipe.regions_per_crop,
                                 sampling=recipe.sampling)
    step = SegmentationStep(model, batches, VOLUME_LOSSES[recipe.loss], lr=recipe.lr)
    return train_and_save(step, lambda meta, final: save_checkpoint(model, out, **meta), meta,
                          started=t0, data_seconds=t_data, model=model, minutes=minutes,
                          progress=progress, should_stop=should_stop)


def evaluate_fetal(model, seeds: list[int], size: int = 128, bf16: bool | None = None,
                   clean_up: bool = True, flips: bool = True) -> dict:
    """Dice of every region on held-out phantoms (all regions are known in simulation).

    The masks are made as :func:`~napari_omniseg.segment_volume` makes them (``clean_up``
    and ``flips`` as there; ``bf16`` None: :func:`~napari_omniseg.checkpoints.default_bf16`).
    """
    from ..checkpoints import default_bf16
    from ..predict.volume import region_masks
    from ..simulate.fetal import simulate_fetal
    from .metrics import PooledDice

    if bf16 is None:
        bf16 = default_bf16(model)
    pooled = PooledDice(vocab.FETAL_REGION_CODES)
    for seed in seeds:
        f = simulate_fetal(seed, size=size)
        masks = region_masks(model, f.volume, vocab.FETAL_REGION_CODES, flips=flips, bf16=bf16,
                             clean_up=clean_up)
        for k, code in enumerate(vocab.FETAL_REGION_CODES):
            pooled.add(code, masks[k] > 0, f.masks[code] > 0)
    return pooled.scores()
