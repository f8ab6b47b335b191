"""Training the pyramid generator on (image, tissue masks) pairs, on the training engine.

Pairs come from the simulator (every tissue known) and from annotated patches such as ki-dev's
(one tissue known per patch: the condition's known maps say so, and nothing is assumed about
the other tissues). All pyramid levels train together, each against its own discriminators:
the paper trains them one after another, coarsest first, with a budget per level that this CPU
cannot give.

Generator losses (the paper's Eq. 2): least-squares adversarial loss, reconstruction
(alpha 0.001, L2 to the real image at each level), discriminator feature matching (beta 10) and,
in place of the paper's VGG loss (its weights would have to be downloaded), optionally an L1
between features of the product's own renal segmenter's encoder (gamma 10).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import vocab
from ..choices import GENERATOR, GeneratorArchitecture, Perceptual
from ..nets.condition import N_TISSUES, condition_planes, implied
from ..run import Progress, ShouldStop
from .annotations import pad_to

_CAP = vocab.tissue("cap").task_id

ALPHA_REC = 0.001
BETA_FM = 10.0
GAMMA_PERCEPTUAL = 10.0


@dataclass
class SynthesisPairs:
    """Training pairs: ``images`` ``(N, P, P, 3)`` uint8, ``masks`` ``(N, 6, P, P)`` uint8,
    ``known`` ``(N, 6)`` or ``(N, 6, P, P)`` bool (which tissues are known, everywhere or per
    pixel), and per pair its stain code and magnification; ``priors`` ``(N, P, P, 3)`` uint8,
    the anatomy prior of each pair's masks, for a generator that reads one
    (:func:`with_priors`)."""

    images: np.ndarray
    masks: np.ndarray
    known: np.ndarray
    stains: list[str]
    magnifications: list[int]
    sources: list[str] = field(default_factory=list)
    priors: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    def __add__(self, other: SynthesisPairs) -> SynthesisPairs:
        a, b = self.known, other.known
        if a.ndim != b.ndim:  # one set known everywhere, the other per pixel
            side = self.masks.shape[-2:]
            a, b = (k if k.ndim == 4 else np.broadcast_to(k[:, :, None, None], k.shape + side)
                    for k in (a, b))
        if (self.priors is None) != (other.priors is None):
            raise ValueError("join pairs with priors to pairs with priors only")
        priors = (None if self.priors is None
                  else np.concatenate([self.priors, other.priors]))
        return SynthesisPairs(np.concatenate([self.images, other.images]),
                              np.concatenate([self.masks, other.masks]),
                              np.concatenate([a, b]),
                              self.stains + other.stains,
                              self.magnifications + other.magnifications,
                              self.sources + other.sources, priors)

    def subset(self, index: np.ndarray) -> SynthesisPairs:
        """The pairs at ``index``."""
        index = list(np.asarray(index))
        return SynthesisPairs(self.images[index], self.masks[index], self.known[index],
                              [self.stains[i] for i in index],
                              [self.magnifications[i] for i in index],
                              [self.sources[i] for i in index] if self.sources else [],
                              None if self.priors is None else self.priors[index])


def pairs_from_bank(bank: Any) -> SynthesisPairs:
    """Simulated patches (a :class:`~napari_omniseg.train.renal_data.PatchBank`): every tissue
    known everywhere."""
    masks = np.stack([(bank.masks >> t.task_id) & 1 for t in vocab.TISSUES], 1).astype(np.uint8)
    masks = np.stack([implied(m) for m in masks])
    n = len(bank)
    return SynthesisPairs(bank.images, masks, np.ones((n, N_TISSUES), bool),
                          [str(s) for s in bank.stains], [int(m) for m in bank.magnifications],
                          ["simulator"] * n)


def pairs_from_annotations(annotations: list, size: int = 256, source: str = "annotations",
                           default_stain: str = "he") -> SynthesisPairs:
    """Pairs from annotations of one tissue each (a manifest's rows, layers painted in
    napari): each is cut into ``size`` windows (padded when smaller), and only its tissue is
    known, where its label is known (painted, or inside a fully annotated region); windows
    with nothing known are left out. A tuft is inside a capsule: that much is known of the
    capsule too."""
    from ..errors import OmnisegInputError

    images, masks, known, stains, mags = [], [], [], [], []
    for a in annotations:
        t = vocab.tissue(a.tissue).task_id
        image = pad_to(a.image, size, "reflect")
        mask, ok = (pad_to(m.astype(np.uint8), size, "constant") for m in (a.mask, a.known))
        h, w = mask.shape
        for y in _starts(h, size):
            for x in _starts(w, size):
                k = ok[y:y + size, x:x + size] > 0
                if not k.any():
                    continue
                tm = np.zeros((N_TISSUES, size, size), np.uint8)
                tk = np.zeros((N_TISSUES, size, size), bool)
                tm[t], tk[t] = mask[y:y + size, x:x + size] * k, k
                if a.tissue == "tuft":
                    tm = implied(tm)
                    tk[_CAP] |= tm[t] > 0
                images.append(image[y:y + size, x:x + size])
                masks.append(tm)
                known.append(tk)
                stains.append(vocab.stain(a.stain or default_stain))
                mags.append(int(round(a.magnification)))
    if not images:
        raise OmnisegInputError("the annotations know no pixel: paint some tissue, or mark "
                                "the annotation complete")
    return SynthesisPairs(np.stack(images), np.stack(masks), np.stack(known), stains, mags,
                          [source] * len(images))


def pairs_from_manifest(path: str | Path, split: str | None = "train",
                        split_column: str | None = "split", size: int = 256) -> SynthesisPairs:
    """Annotated patches of a renal manifest (the ki-dev format: one tissue per patch, its mask
    complete for that tissue; :func:`pairs_from_annotations`). Rows of other splits are left
    out (``split`` None keeps all)."""
    from .annotations import read_manifest

    groups = read_manifest(path, split_column)
    rows = [a for name, g in groups.items() if split is None or name == split for a in g]
    return pairs_from_annotations(rows, size, str(Path(path).name))


def with_priors(pairs: SynthesisPairs, seed: int = 0, progress: Progress | None = None,
                should_stop: ShouldStop | None = None) -> SynthesisPairs:
    """The pairs with each one's anatomy prior: the simulator's anatomy drawn in its known
    masks (:func:`~napari_omniseg.simulate.mask_prior.render_prior`) at its magnification's
    pixel size and in its stain. The masks are mirrored past the patch's edge first, so that a
    tubule cut by the edge is drawn open, as it would be inside a larger painted mask."""
    from ..predict.synthesize import window_prior
    from ..run import check_stop, report

    priors = np.empty_like(pairs.images)
    for i in range(len(pairs)):
        check_stop(should_stop)
        priors[i] = window_prior(pairs.masks[i], pairs.stains[i], pairs.magnifications[i],
                                 seed + i)
        report(progress, i + 1, len(pairs), f"anatomy prior {i + 1} of {len(pairs)}")
    return dataclasses.replace(pairs, priors=priors)


#: Simulator seeds of the slides a generator trains on: apart from the segmenter's training
#: (from 10,000) and evaluation (below 100) slides.
SIMULATED_SEED0 = 7000
#: Side of those slides in pixels at 40x.
SIMULATED_SLIDE = 4096


def training_pairs(manifest: str | Path | None = None, split: str | None = "train",
                   simulated: int = 0, progress: Progress | None = None
                   ) -> tuple[SynthesisPairs, list[str]]:
    """The pairs a generator trains on, and what they are in words (for the checkpoint).

    Parameters
    ----------
    manifest : path, optional
        A patch manifest whose rows give real (mask, image) pairs.
    split : str, optional
        The manifest rows used (None: all).
    simulated : int
        Simulated slides (seeds from :data:`SIMULATED_SEED0`) cut into 256-px pairs.
    progress
        Told as the slides are simulated.

    Returns
    -------
    (SynthesisPairs, list of str)
        The pairs, and one description per source.

    Raises
    ------
    OmnisegInputError
        Neither a manifest nor simulated slides.
    """
    from ..errors import OmnisegInputError

    parts, sources = [], []
    if manifest is not None:
        parts.append(pairs_from_manifest(manifest, split=split))
        sources.append(f"{Path(manifest).name} ({split or 'all'} rows, {len(parts[-1])} "
                       "patches)")
    if simulated:
        from .renal_data import build_patch_bank

        bank = build_patch_bank(list(range(SIMULATED_SEED0, SIMULATED_SEED0 + simulated)),
                                size=SIMULATED_SLIDE, patch=256, progress=progress)
        parts.append(pairs_from_bank(bank))
        sources.append(f"simulator ({simulated} slides, {len(bank)} patches)")
    if not parts:
        raise OmnisegInputError("nothing to train on: give --manifest or --simulated N")
    pairs = parts[0]
    for more in parts[1:]:
        pairs = pairs + more
    return pairs, sources


def _starts(n: int, size: int) -> list[int]:
    """Window starts covering ``n`` pixels with windows of ``size`` (the last one flush)."""
    starts = list(range(0, n - size + 1, size))
    return [*starts, n - size] if starts[-1] != n - size else starts


class PairSampler:
    """Random batches of (image in [-1, 1], condition) tensors with flips and right-angle
    rotations, ``crop`` pixels a side; and the prior in [-1, 1] third when the pairs have
    priors."""

    def __init__(self, pairs: SynthesisPairs, batch: int, crop: int, seed: int = 0) -> None:
        self.pairs, self.batch, self.crop = pairs, batch, crop
        self.rng = np.random.default_rng(seed)

    def __call__(self) -> tuple[Any, ...]:
        """The next batch: images in [-1, 1] and their condition planes (and priors)."""
        import torch

        imgs, conds, priors = [], [], []
        p = self.pairs
        for i in self.rng.integers(0, len(p), self.batch):
            side = p.images.shape[1]
            y, x = self.rng.integers(0, side - self.crop + 1, 2)
            window = (slice(y, y + self.crop), slice(x, x + self.crop))
            img = p.images[i][window].transpose(2, 0, 1)
            known = p.known[i]
            if known.ndim == 3:
                known = known[:, window[0], window[1]]
            cond = condition_planes(p.masks[i][:, window[0], window[1]],
                                    known, p.stains[i], p.magnifications[i])
            parts = [img, cond] + ([p.priors[i][window].transpose(2, 0, 1)]
                                   if p.priors is not None else [])
            k = int(self.rng.integers(4))
            flip = bool(self.rng.integers(2))
            parts = [np.rot90(a, k, axes=(1, 2)) for a in parts]
            if flip:
                parts = [a[:, :, ::-1] for a in parts]
            imgs.append(np.ascontiguousarray(parts[0]))
            conds.append(np.ascontiguousarray(parts[1]))
            if p.priors is not None:
                priors.append(np.ascontiguousarray(parts[2]))
        images = torch.from_numpy(np.stack(imgs)).float() / 127.5 - 1
        if priors:
            return (images, torch.from_numpy(np.stack(conds)),
                    torch.from_numpy(np.stack(priors)).float() / 127.5 - 1)
        return images, torch.from_numpy(np.stack(conds))


class SegmenterFeatures:
    """The first three stages of the renal segmenter's encoder, frozen: a perceptual feature
    space the product has without downloading anything."""

    def __init__(self, model: Any) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def __call__(self, image: Any) -> list[Any]:
        """The segmenter's encoder features of ``image`` (in [-1, 1])."""
        m = self.model
        x = (image + 1) / 2  # the segmenter reads [0, 1]
        x = m.conv1(x)
        f0 = m.layer0(x)
        f1 = m.layer1(f0)
        f2 = m.layer2(f1)
        return [f0, f1, f2]


class SynthesisStep:
    """One discriminator update, then one generator update, over every pyramid level."""

    def __init__(self, generator: Any, discriminators: Any, sample: Callable[[], tuple],
                 lr_g: float = 2e-4, lr_d: float = 2e-4, perceptual: Any = None,
                 seed: int = 0) -> None:
        import torch

        self.generator, self.discriminators, self.sample = generator, discriminators, sample
        self.perceptual = perceptual
        self.networks = {"generator": generator, "discriminators": discriminators}
        self.optimizers = [torch.optim.Adam(generator.parameters(), lr=lr_g, betas=(0.5, 0.999)),
                           torch.optim.Adam(discriminators.parameters(), lr=lr_d,
                                            betas=(0.5, 0.999))]
        self.torch_rng = torch.Generator().manual_seed(seed)

    def __call__(self) -> dict[str, float]:
        """One discriminator and one generator step; returns the step's losses."""
        import torch
        import torch.nn.functional as F

        from ..nets.pyramid_gan import condition_pyramid, generator_conditions, image_pyramid

        g, ds = self.generator, self.discriminators.per_level
        images, cond, *prior = self.sample()
        levels = g.levels
        conds = condition_pyramid(cond, levels)
        reals = image_pyramid(images, levels)
        noises = [torch.randn(c.shape[0], 3, *c.shape[-2:], generator=self.torch_rng)
                  for c in conds]
        # the generator reads the prior; the discriminators judge (image, condition) only
        fakes = g(generator_conditions(g, conds, prior[0] if prior else None), noises)

        opt_g, opt_d = self.optimizers[:2]
        d_loss = 0.0
        for d, real, fake, c in zip(ds, reals, fakes, conds):
            d_loss = d_loss + _lsgan(d(real, c), 1.0) + _lsgan(d(fake.detach(), c), 0.0)
        extra, context = self.discriminator_phase(images, cond)
        d_loss = d_loss + extra
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        adv: Any = 0.0
        fm: Any = 0.0
        rec: Any = 0.0
        perc: Any = 0.0
        for d, real, fake, c in zip(ds, reals, fakes, conds):
            with torch.no_grad():
                real_feats = d(real, c)
            fake_feats = d(fake, c)
            adv = adv + _lsgan(fake_feats, 1.0)
            for fake_out, real_out in zip(fake_feats, real_feats):
                fm = fm + sum(F.l1_loss(a, b) for a, b in zip(fake_out[:-1], real_out[:-1])
                              ) / (len(fake_out) - 1)
            rec = rec + F.mse_loss(fake, real)
        if self.perceptual is not None:
            with torch.no_grad():
                real_f = self.perceptual(reals[-1])
            perc = sum(F.l1_loss(a, b) for a, b in zip(self.perceptual(fakes[-1]), real_f))
        g_loss = adv + BETA_FM * fm + ALPHA_REC * rec + GAMMA_PERCEPTUAL * perc
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        losses = {"loss": g_loss, "d": d_loss, "adv": adv, "fm": fm, "perceptual": perc,
                  **self.after_generator_phase(images, cond, fakes[-1].detach(), context)}
        return {name: float(v.detach()) if hasattr(v, "detach") else float(v)
                for name, v in losses.items()}

    # -- the phases a variant extends (the three-player game, an adaptation step) -------------

    def discriminator_phase(self, images: Any, condition: Any) -> tuple[Any, Any]:
        """Terms added to the discriminators' loss of this step, and a context handed to
        :meth:`after_generator_phase` of the same step (none here)."""
        return 0.0, None

    def after_generator_phase(self, images: Any, condition: Any, fakes: Any, context: Any
                              ) -> dict[str, Any]:
        """Updates after the generator's (another network's), with the context of this step's
        :meth:`discriminator_phase`; returns their named losses (none here)."""
        return {}


def _lsgan(outputs: list[list[Any]], target: float) -> Any:
    """Least-squares GAN loss of every scale's patch scores against ``target``."""
    import torch.nn.functional as F

    return sum(F.mse_loss(out[-1], out[-1].new_full(out[-1].shape, target)) for out in outputs)


def train_generator(out: str | Path, pairs: SynthesisPairs, *, minutes: float | None = None,
                    max_steps: int | None = None, levels: int = 4, width: int = 32,
                    crop: int = 256, batch: int = 4, perceptual: str = Perceptual.SEGMENTER,
                    architecture: str = GeneratorArchitecture.PYRAMID, init: Any = None,
                    seed: int = 0, prior: bool = False,
                    trained_on: str = "", started: float | None = None,
                    progress: Progress | None = None, should_stop: ShouldStop | None = None,
                    on_validate: Callable[[dict], None] | None = None,
                    validate_every: float = 60.0) -> Any:
    """Train a pyramid generator on ``pairs`` and save it to ``out`` (every few minutes and at
    the end, so a stop leaves a usable generator).

    Parameters
    ----------
    out : str or path-like
        The generator checkpoint to write.
    pairs : SynthesisPairs
        (mask, image) pairs; their known maps say what is labelled.
    minutes, max_steps : float, int, optional
        The budget: time (from ``started``), steps, or both (the first reached ends).
    levels, width : int
        Pyramid levels and first-layer width of a new generator.
    crop, batch : int
        Training crop side (pixels) and pairs per step.
    perceptual : Perceptual
        The perceptual loss on the bundled renal segmenter's encoder features, or none.
    architecture : GeneratorArchitecture
        The pyramid generator (``levels`` levels), or the single-scale pix2pix-style U-Net
        baseline (one level, one set of discriminators; ``width`` is its first layer's).
    init : str or PyramidGenerator, optional
        A generator (a checkpoint, ``GENERATOR`` ("synthesis") for the bundled one, or a
        loaded generator, which is copied) to go on training; its architecture and size
        replace ``architecture``, ``levels`` and ``width``.
    on_validate, validate_every
        The engine's history entries (losses), every ``validate_every`` seconds.
    seed : int
        Initial weights, batches and noise.
    prior : bool
        A new pyramid generator reads the anatomy prior beside the mask (rendered for the
        pairs that lack one, :func:`with_priors`); a generator given as ``init`` keeps its own.
    trained_on : str
        What the pairs were, for the checkpoint's metadata (e.g. "simulator + ki-dev train").
    started : float, optional
        ``time.perf_counter()`` when the run began (data preparation counts in ``minutes``).
    progress, should_stop : callable, optional
        The run contract: a stop saves the generator as it is.

    Returns
    -------
    TrainResult
        Its ``model`` the generator, its ``recipe`` the recipe and the run's facts, as stored
        in the checkpoint's metadata.
    """
    import torch

    from ..checkpoints import save_checkpoint
    from ..nets.pyramid_gan import PyramidDiscriminators
    from .engine import train_and_save

    started = time.perf_counter() if started is None else started
    torch.manual_seed(seed)
    g, init = generator_to_train(init, architecture, levels, width, crop, prior)
    levels, width = g.levels, getattr(g, "width", width)
    if getattr(g, "prior", False) and pairs.priors is None:
        pairs = with_priors(pairs, seed, progress, should_stop)
    architecture = GeneratorArchitecture(
        GeneratorArchitecture.SINGLE if levels == 1 else GeneratorArchitecture.PYRAMID)
    d = PyramidDiscriminators(levels, crop)
    features = perceptual_features(perceptual)
    step = SynthesisStep(g, d, PairSampler(pairs, batch, crop, seed), perceptual=features,
                         seed=seed)
    recipe = {"task": GENERATOR, "generator": str(architecture), "levels": levels,
              "width": width, "crop": crop,
              "batch": batch, "perceptual": str(perceptual), "pairs": len(pairs),
              "anatomy_prior": bool(getattr(g, "prior", False)),
              "trained_on": trained_on, "seed": seed, "init": init,
              "losses": {"alpha_rec": ALPHA_REC, "beta_fm": BETA_FM,
                         "gamma_perceptual": GAMMA_PERCEPTUAL if features else 0.0}}
    return train_and_save(step, lambda meta, final: save_checkpoint(g, out, **meta), recipe,
                          started=started, model=g, minutes=minutes, max_steps=max_steps,
                          progress=progress, should_stop=should_stop, on_validate=on_validate,
                          validate_every=validate_every)


def generator_to_train(init: Any, architecture: str = GeneratorArchitecture.PYRAMID,
                       levels: int = 4, width: int = 32, crop: int = 128,
                       prior: bool = False) -> tuple[Any, str]:
    """The generator a training run starts from, in training mode on the CPU, and how its
    metadata names the start ("" for a new one).

    ``init`` is None (a new ``architecture`` generator: "pyramid" with ``levels`` and
    ``width``, or "single"), a checkpoint or "synthesis" (the bundled one), or a loaded
    generator (copied). ``prior``: a new pyramid generator reads the anatomy prior. A ``crop``
    the generator cannot train on, or a prior asked of the single-scale baseline, is one
    sentence.
    """
    from ..errors import OmnisegInputError
    from ..nets.pyramid_gan import PyramidGenerator

    if init is not None and hasattr(init, "parameters"):  # a generator in memory: a copy
        import copy

        g = copy.deepcopy(init).float().cpu().train()
        init = getattr(init, "omniseg_source", "a generator in use")
    elif init:
        from ..checkpoints import load_generator

        g = load_generator(init, device="cpu").float().train()
    elif GeneratorArchitecture(architecture) == GeneratorArchitecture.SINGLE:
        if prior:
            raise OmnisegInputError("the anatomy prior is read by the pyramid generator only; "
                                    "the single-scale baseline is kept as it was published")
        from ..nets.pix2pix import UNetGenerator

        g = UNetGenerator(width=width)
    else:
        g = PyramidGenerator(levels=levels, width=width, prior=prior)
    f, coarsest = g.factor, 16 * 2 ** (g.levels - 1)
    if crop % f or crop < coarsest:
        raise OmnisegInputError(f"this generator trains on crops that are a multiple of {f} "
                                f"pixels and at least {coarsest} (its coarsest level must be "
                                f"16 pixels for the discriminator); got {crop}")
    return g, str(init or "")


def perceptual_features(perceptual: str) -> SegmenterFeatures | None:
    """The perceptual loss's feature space: "segmenter" (the bundled renal segmenter's
    encoder) or "none"."""
    if Perceptual(perceptual) == Perceptual.NONE:  # an unknown name raises ValueError here
        return None
    from ..checkpoints import load_model

    return SegmenterFeatures(load_model("renal", device="cpu").float())


def synthetic_annotations(generator: Any, n: int, tissues: list[str], stains: list[str],
                          seed: int = 0, size: int = 256, progress: Progress | None = None,
                          should_stop: ShouldStop | None = None,
                          seconds: float | None = None) -> list:
    """``n`` synthetic training pairs per tissue for fine-tuning: the simulator's layouts
    (masks only) turned into images by ``generator``, each tissue at its optimal
    magnification, in the given stains in turn; every pixel's label is known. With
    ``seconds``, making them stops when that time is up and the pairs made so far are
    returned (a fine-tuning budget holds, whatever ``n`` is asked).

    Returns
    -------
    list of Annotation
        With ``extra["synthetic"] = True``.
    """
    from ..predict.synthesize import generate_window
    from ..run import check_stop, report
    from ..simulate.renal import LEVEL_MAGNIFICATIONS, simulate_renal
    from .annotations import Annotation

    rng = np.random.default_rng([seed, 0x5EED])
    out: list[Annotation] = []
    total = n * len(tissues)
    # a layout just large enough for a window at the coarsest magnification asked for
    levels = 1 + max(LEVEL_MAGNIFICATIONS.index(vocab.tissue(c).optimal_magnification)
                     for c in tissues)
    side = size << (levels - 1)
    deadline = None if seconds is None else time.perf_counter() + seconds
    for k in range(n):
        if deadline is not None and out and time.perf_counter() > deadline:
            break
        stain = stains[k % len(stains)]
        sim = simulate_renal(side, side, stain=stain, seed=int(rng.integers(1 << 30)),
                             levels=levels)
        for code in tissues:
            check_stop(should_stop)
            t = vocab.tissue(code)
            level = LEVEL_MAGNIFICATIONS.index(t.optimal_magnification)
            masks = np.stack([np.asarray(sim.masks[c.code][level]) for c in vocab.TISSUES])
            h, w = masks.shape[1:]
            y = int(rng.integers(0, h - size + 1)) if h > size else 0
            x = int(rng.integers(0, w - size + 1)) if w > size else 0
            crop = implied(masks[:, y:y + size, x:x + size].astype(np.uint8))
            image = generate_window(generator, crop, stain, t.optimal_magnification,
                                    seed=int(rng.integers(1 << 30)))
            out.append(Annotation(image, crop[t.task_id] > 0, np.ones(crop.shape[1:], bool),
                                  code, t.optimal_magnification,
                                  name=f"synthetic {code} {k}", stain=stain,
                                  extra={"synthetic": True}))
            report(progress, len(out), total, f"synthetic pair {len(out)} of {total}")
    return out
