"""Does a slide look like what the model was trained on? Distances in the model's own features.

A renal checkpoint may carry, in its metadata, a *familiarity* record: the mean, the leading
principal directions and the spread of a descriptor of its training patches in the network's
own feature space (the per-channel mean and spread of its first two encoder maps, the texture
the network sees), and the distances of training patches the fit did not see. Before a slide
is trusted, a few tiles on its tissue are described the same way; when their median distance
is larger than that of 99% of equally many training patches, the slide is unlike the training
data and the masks deserve suspicion.

Why the first maps and not the bottleneck: the deep context is trained to be the same for a
tissue whatever it looks like, so real kidney and simulated kidney lie together there (ki-dev
patches: area under the ROC curve 0.58 against held-out simulated patches), while the texture
of the first maps tells them apart (0.92; benchmarks/familiarity.py, docs/training.md).

The distance is a Mahalanobis distance in the leading directions plus the remainder's length
against its typical size (a probabilistic PCA), so a few hundred patches suffice to fit it.
No pretrained network is involved: the features are the segmenter's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

#: Leading directions kept (the rest is summarised by its length).
COMPONENTS = 16
#: Share of training patches that lie within a patch's threshold.
QUANTILE = 0.95
#: A slide is unfamiliar when its tiles' median distance exceeds this quantile of the medians
#: of as many held-out training patches.
SLIDE_QUANTILE = 0.99
#: Training patches a record is fitted on.
FIT_PATCHES = 256
#: Tiles described per working magnification when a slide is checked.
TILES_PER_MAGNIFICATION = 12


def patch_descriptors(model: Any, images: np.ndarray, batch: int = 8,
                      bf16: bool = False) -> np.ndarray:
    """One descriptor per RGB patch in the model's feature space.

    Parameters
    ----------
    model : torch.nn.Module
        A renal segmenter with ``feature_maps`` (Omni-Seg+).
    images : numpy.ndarray
        ``(N, H, W, 3)`` uint8, H and W multiples of 16.
    batch : int
        Patches per forward pass.
    bf16 : bool
        bfloat16 autocast (pass the segmentation engine's precision).

    Returns
    -------
    numpy.ndarray
        ``(N, D)`` float64: the per-channel mean and standard deviation of the first and of
        the second encoder map.
    """
    import torch

    dev = next(model.parameters()).device
    out = []
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch])).to(dev)
            x = x.permute(0, 3, 1, 2).float().div_(255)
            encoder = model.feature_maps(x)[2]
            stats = [s for e in encoder[:2] for s in (e.float().mean((2, 3)),
                                                      e.float().std((2, 3)))]
            out.append(torch.cat(stats, 1).cpu().double().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


@dataclass(frozen=True)
class Familiarity:
    """The training patches' descriptor distribution (see the module's text).

    Attributes
    ----------
    mean, scale : list of float
        Per-dimension mean and standard deviation (descriptors are standardised first).
    components : list of list of float
        ``COMPONENTS`` leading unit directions of the standardised descriptors.
    variances : list of float
        Their variances.
    residual : float
        Mean squared length of what the directions leave, per remaining dimension.
    threshold : float
        The :data:`QUANTILE` of held-out training patches' distances.
    held : list of float
        The distances of the held-out training patches.
    held_groups : list of int
        The slide or image each of them came from.
    patches : int
        How many patches it was fitted on.
    """

    mean: list
    scale: list
    components: list
    variances: list
    residual: float
    threshold: float
    held: list
    held_groups: list
    patches: int

    def distances(self, descriptors: np.ndarray) -> np.ndarray:
        """Per descriptor, its distance from the training patches (about 1 for a typical
        one)."""
        z = (np.asarray(descriptors, float) - np.asarray(self.mean)) / np.asarray(self.scale)
        comps = np.asarray(self.components)
        proj = z @ comps.T
        rest = (z ** 2).sum(1) - (proj ** 2).sum(1)
        _k, d = comps.shape
        d2 = (proj ** 2 / np.asarray(self.variances)).sum(1) + rest / self.residual
        return np.sqrt(np.maximum(d2, 0) / d)

    def slide_threshold(self, tiles: int, quantile: float = SLIDE_QUANTILE) -> float:
        """The median distance that ``tiles`` tiles of a training-like slide stay below with
        probability ``quantile`` (the same answer every call).

        Tiles of one slide resemble each other more than tiles of different slides, so the
        held-out patches are resampled slide by slide (a held-out slide, then ``tiles`` of its
        patches): drawn from all slides at once, one simulated slide of eight lay beyond.
        """
        held = np.asarray(self.held, float)
        groups = np.asarray(self.held_groups) if self.held_groups else np.arange(len(held))
        rng = np.random.default_rng(0)
        draws = max(tiles, 1)
        # a group of one is a patch, not a slide; groups of two or more are slides (a small
        # one must not send every slide to the pooled resampling, which is far too tight)
        members = [m for m in (np.flatnonzero(groups == g) for g in np.unique(groups))
                   if len(m) >= 2]
        if len(members) >= 5:
            chosen = rng.integers(len(members), size=2000)
            picks = np.stack([rng.choice(members[g], draws) for g in chosen])
        else:  # each patch its own image: resample them all
            picks = rng.integers(len(held), size=(2000, draws))
        return float(np.quantile(np.median(held[picks], axis=1), quantile))

    def as_dict(self) -> dict:
        """JSON-ready (rounded: the record lives in a checkpoint's metadata)."""
        def rounded(v: Any) -> Any:  # six significant digits: spreads span decades
            return np.vectorize(lambda x: float(f"{x:.6g}"))(np.asarray(v, float)).tolist()

        d = asdict(self)
        return {k: (rounded(v) if k in ("mean", "scale", "components", "variances", "held")
                    else v)
                for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> Familiarity:
        """The inverse of :meth:`as_dict`."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def fit_familiarity(descriptors: np.ndarray, groups: np.ndarray | None = None,
                    components: int = COMPONENTS, quantile: float = QUANTILE, seed: int = 0
                    ) -> Familiarity:
    """Fit the record on training patches' descriptors ``(N, D)`` (N of a few hundred).

    The patches of two thirds of the ``groups`` (the slide or image each patch came from;
    default: each patch its own) fit the directions and spreads; the distances of the other
    third's patches calibrate the thresholds. A new slide differs from the training slides more
    than their patches differ from each other, and with fewer patches than dimensions the fitted
    spreads are too small even for those: thresholds taken on the fitted patches themselves
    called another simulated slide of the same kind unfamiliar.
    """
    x = np.asarray(descriptors, float)
    if len(x) < 3 * components:
        raise ValueError(f"{len(x)} patches are too few to describe a training set "
                         f"(at least {3 * components})")
    groups = np.arange(len(x)) if groups is None else np.asarray(groups)
    names = np.unique(groups)
    rng = np.random.default_rng(seed)
    held_out = np.isin(groups, rng.permutation(names)[:max(1, len(names) // 3)])
    if len(names) < 3 or held_out.sum() < components or (~held_out).sum() < 2 * components:
        held_out = np.zeros(len(x), bool)  # too few groups: split the patches instead
        held_out[rng.permutation(len(x))[:len(x) // 3]] = True
    fit, held = x[~held_out], x[held_out]
    mean, scale = fit.mean(0), fit.std(0)
    # a channel that never fires (ReLU) has no spread: it must not divide by zero
    scale = np.maximum(scale, 1e-3 * max(float(np.median(scale)), 1e-9))
    z = (fit - mean) / scale
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    k = min(components, len(s) - 1)
    var = s ** 2 / (len(z) - 1)
    residual = float(var[k:].sum() / max(z.shape[1] - k, 1)) + 1e-6
    fam = Familiarity(mean.tolist(), scale.tolist(), vt[:k].tolist(),
                      (var[:k] + 1e-6).tolist(), residual, 0.0, [], [], len(x))
    distances = fam.distances(held)
    return replace(fam, threshold=float(np.quantile(distances, quantile)),
                   held=distances.tolist(), held_groups=[int(g) for g in groups[held_out]])


def familiarity_of(model: Any) -> Familiarity | None:
    """The record a loaded model's checkpoint carries, or None (older checkpoints, other
    architectures)."""
    meta = getattr(model, "omniseg_metadata", None) or {}
    record = meta.get("familiarity")
    if not record or not hasattr(model, "feature_maps"):
        return None
    try:
        return Familiarity.from_dict(record)
    except (KeyError, TypeError):
        return None


def familiarity_metadata(model: Any, images: np.ndarray, groups: np.ndarray | None = None,
                         seed: int = 0, max_patches: int = 2 * FIT_PATCHES) -> dict:
    """``{"familiarity": ...}`` for a checkpoint, fitted on (at most ``max_patches`` of) the
    training patches ``images`` ``(N, H, W, 3)`` uint8, each from the slide or image
    ``groups[i]`` (:func:`fit_familiarity`); empty when there are too few."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.permutation(len(images))[:max_patches])
    was_training = model.training
    model.eval()
    try:
        descriptors = patch_descriptors(model, np.asarray(images)[pick])
    finally:
        model.train(was_training)
    try:
        return {"familiarity": fit_familiarity(
            descriptors, None if groups is None else np.asarray(groups)[pick]).as_dict()}
    except ValueError:
        return {}


def random_crops(images: Sequence[np.ndarray], size: int = 256, per_image: int = 4,
                 seed: int = 0) -> np.ndarray:
    """``per_image`` random ``size`` x ``size`` crops of each RGB image (reflected when
    smaller), ``(N, size, size, 3)`` uint8, image after image: training images of any size as
    patches to fit on (crop ``i`` comes from image ``i // per_image``)."""
    rng = np.random.default_rng(seed)
    out = []
    for img in images:
        img = np.asarray(img)[..., :3]
        h, w = img.shape[:2]
        if h < size or w < size:
            pad = ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0))
            img = np.pad(img, pad, mode="reflect" if min(h, w) > size // 2 else "edge")
            h, w = img.shape[:2]
        for _ in range(per_image):
            y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
            out.append(img[y:y + size, x:x + size])
    return np.stack(out).astype(np.uint8) if out else np.zeros((0, size, size, 3), np.uint8)


def engine_tiles(engine: Any, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` network tiles of a :class:`~napari_omniseg.predict.slide.TileEngine`'s
    working grid on tissue (not glass), chosen at random, as ``(n, T, T, 3)`` uint8."""
    from .slide import is_background

    rng = np.random.default_rng(seed)

    def inside(side: int) -> tuple[int, int]:
        # interior tiles where there are any (the first row and column lie on the image's
        # border, and an image smaller than a tile is read reflected, which is not tissue)
        last = (side + engine.overlap - engine.tile) // engine.stride
        return (1, last) if last >= 1 else (0, -(-side // engine.stride))

    (ty0, ty1), (tx0, tx1) = inside(engine.shape[0]), inside(engine.shape[1])
    mask = engine.tissue_mask
    if mask is not None and mask.inner is not None and mask.inner.any():
        # tiles under random tissue pixels of the glass mask: cheap on a slide of any size
        rows, cols = np.nonzero(mask.inner)
        pick = rng.permutation(len(rows))[:8 * n]
        level0 = np.stack([rows[pick], cols[pick]], 1) * mask.downsample
        working = level0 * engine.scale0 + engine.overlap - engine.tile / 2
        keys = list(dict.fromkeys(
            (int(np.clip(round(y / engine.stride), ty0, ty1)),
             int(np.clip(round(x / engine.stride), tx0, tx1))) for y, x in working))
    else:
        ny, nx = ty1 - ty0 + 1, tx1 - tx0 + 1
        keys = [(ty0 + int(k // nx), tx0 + int(k % nx))
                for k in rng.permutation(ny * nx)[:8 * n]]
    tiles = []
    for key in keys:
        rgb = engine._read(*key)
        if not is_background(rgb, 0.5):
            tiles.append(rgb)
        if len(tiles) == n:
            break
    return np.stack(tiles) if tiles else np.zeros((0, engine.tile, engine.tile, 3), np.uint8)


@dataclass(frozen=True)
class SlideFamiliarity:
    """How a slide's tiles lie against the model's training patches.

    Attributes
    ----------
    tiles : int
        Tiles described.
    beyond : float
        Share of them farther than 95% of the held-out training patches.
    median : float
        Their median distance over the slide threshold
        (:meth:`Familiarity.slide_threshold`): above 1, the slide is unfamiliar.
    """

    tiles: int
    beyond: float
    median: float

    @property
    def unfamiliar(self) -> bool:
        """Whether the slide looks unlike the training data."""
        return self.tiles > 0 and self.median > 1

    def sentence(self, model_name: str = "the model") -> str:
        """One sentence for the user (empty when the slide looks familiar)."""
        if not self.unfamiliar:
            return ""
        return (f"this slide looks unlike what {model_name} was trained on ({self.beyond:.0%} "
                f"of {self.tiles} tiles lie outside its training data in its feature space), "
                "so check the masks; correcting a few labels (Correct) or adapting the model to "
                "these slides (Fine-tune, adapt) usually helps")


def slide_familiarity(engines: dict[str, tuple[Any, int]], model: Any,
                      per_magnification: int = TILES_PER_MAGNIFICATION, seed: int = 0
                      ) -> SlideFamiliarity | None:
    """Check the tiles of a slide's engines (:func:`~napari_omniseg.predict.slide.make_engines`)
    against the model's familiarity record; None when the model carries none."""
    fam = familiarity_of(model)
    if fam is None:
        return None
    seen: dict[int, Any] = {id(e): e for e, _ in engines.values()}
    distances: list[np.ndarray] = []
    for engine in seen.values():
        tiles = engine_tiles(engine, per_magnification, seed)
        if len(tiles):
            with engine._model_lock:
                distances.append(fam.distances(patch_descriptors(model, tiles,
                                                                 bf16=engine.bf16)))
    if not distances:
        return SlideFamiliarity(0, 0.0, 0.0)
    d = np.concatenate(distances)
    return SlideFamiliarity(len(d), float((d > fam.threshold).mean()),
                            float(np.median(d) / fam.slide_threshold(len(d))))


def check_slide(engines: dict[str, tuple[Any, int]], model: Any,
                model_name: str | None = None) -> str:
    """The warning sentence for a slide, or "" (familiar, or no record to judge by).

    It runs after the masks are made: a tile that cannot be read or described here must not
    turn a finished segmentation into a failure, so such an error gives no warning either.
    """
    try:
        result = slide_familiarity(engines, model)
    except (OSError, ValueError, RuntimeError, KeyError):
        return ""
    if result is None:
        return ""
    from ..checkpoints import BUNDLED

    source = getattr(model, "omniseg_source", None)
    name = model_name or ("the bundled model" if source in BUNDLED.values() else source)
    return result.sentence(str(name or "the model"))
