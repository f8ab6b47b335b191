"""The paper's three-player game: a generator, a segmenter and the discriminators, trained together.

The segmenter is the product's Omni-Seg+ network (it answers one tissue at one magnification),
so the game is played in the product's terms: the segmenter's answer for a tissue becomes a
condition with that one tissue known (the known maps of ``nets.condition``), and the finest
level's discriminators judge (image, condition) pairs:

- positives: real images with their annotations;
- negatives: generated images with the masks they were made from, and real images with the
  segmenter's answer;
- semi-supervised: unlabelled images with the segmenter's answer are negatives, and a random
  :data:`UNLABELLED_POSITIVE` of them positives (the Triple-GAN trick the paper uses, which lets
  the generator explore unlabelled content).

Each step updates the discriminators, then the generator (its losses as in
:class:`~napari_omniseg.train.synthesis.SynthesisStep`), then the segmenter: Dice + BCE on the
labelled pairs (weight 1), the adversarial loss of its answers (weight :data:`ADV_WEIGHT`), and
once the warm-up is over Dice + BCE on the generated pairs at the paper's weight 0.03; AdamW at
the paper's segmenter rate 5e-4.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import vocab
from ..choices import GENERATOR, GeneratorArchitecture, Perceptual
from ..nets.condition import N_TISSUES, STAIN_CODES, condition_planes
from ..run import Progress, ShouldStop
from .losses import SYNTHETIC_WEIGHT
from .synthesis import (
    PairSampler,
    SynthesisPairs,
    SynthesisStep,
    _lsgan,
    generator_to_train,
    perceptual_features,
    with_priors,
)

#: Weight of the segmenter's adversarial loss (the paper's Eq. 8 weighs it 1).
ADV_WEIGHT = 1.0
#: Share of pseudo-labelled unlabelled pairs the discriminators see as positives.
UNLABELLED_POSITIVE = 0.3
_MAG0 = 2 * N_TISSUES + len(STAIN_CODES)


class UnlabelledSampler:
    """Random crops of unlabelled images as (image in [-1, 1], condition with only the stain
    and magnification planes) batches."""

    def __init__(self, images: list[np.ndarray], stains: list[str], magnifications: list[int],
                 batch: int, crop: int, seed: int = 0) -> None:
        self.images, self.stains, self.mags = images, stains, magnifications
        self.batch, self.crop = batch, crop
        self.rng = np.random.default_rng([seed, 0xD1])

    def __call__(self) -> tuple[Any, Any]:
        """The next batch of unlabelled images and their condition planes."""
        import torch

        imgs, conds = [], []
        for i in self.rng.integers(0, len(self.images), self.batch):
            img = self.images[i]
            y = int(self.rng.integers(0, img.shape[0] - self.crop + 1))
            x = int(self.rng.integers(0, img.shape[1] - self.crop + 1))
            imgs.append(img[y:y + self.crop, x:x + self.crop].transpose(2, 0, 1))
            empty = np.zeros((N_TISSUES, self.crop, self.crop), np.uint8)
            conds.append(condition_planes(empty, np.zeros(N_TISSUES), self.stains[i],
                                          self.mags[i]))
        images = torch.from_numpy(np.ascontiguousarray(np.stack(imgs))).float() / 127.5 - 1
        return images, torch.from_numpy(np.stack(conds))


class ThreePlayerStep(SynthesisStep):
    """:class:`SynthesisStep` with the segmenter as a third player (module docstring).

    ``synthetic_joined()`` says whether the warm-up is over; ``unlabelled`` samples unlabelled
    batches (semi-supervised) or is None.
    """

    def __init__(self, generator: Any, discriminators: Any, segmenter: Any,
                 sample: Callable[[], tuple], *, synthetic_joined: Callable[[], bool],
                 unlabelled: Callable[[], tuple] | None = None, lr_s: float = 5e-4,
                 adv_weight: float = ADV_WEIGHT, perceptual: Any = None, seed: int = 0
                 ) -> None:
        import torch

        super().__init__(generator, discriminators, sample, perceptual=perceptual, seed=seed)
        self.segmenter, self.unlabelled = segmenter, unlabelled
        self.synthetic_joined, self.adv_weight = synthetic_joined, adv_weight
        self.networks["segmenter"] = segmenter
        self.optimizers.append(torch.optim.AdamW(segmenter.parameters(), lr=lr_s,
                                                 weight_decay=1e-4))
        self.rng = np.random.default_rng([seed, 0x53])

    # -- the segmenter's answers as conditions -----------------------------------------------

    def _ask(self, condition: Any, labelled: bool) -> tuple[Any, Any]:
        """Per sample, the tissue to ask for (a known one when labelled; otherwise one seen
        best at the image's magnification) and the magnification's scale id."""
        import torch

        scale = condition[:, _MAG0:, 0, 0].argmax(1)
        tissues = []
        for i in range(condition.shape[0]):
            if labelled:  # a tissue known somewhere in the crop
                choices = np.flatnonzero(
                    condition[i, N_TISSUES:2 * N_TISSUES].amax((1, 2)).numpy() > 0)
            else:
                mag = vocab.MAGNIFICATIONS[int(scale[i])]
                choices = [t.task_id for t in vocab.TISSUES if t.optimal_magnification == mag]
            tissues.append(int(self.rng.choice(choices if len(choices) else N_TISSUES)))
        return torch.tensor(tissues), scale

    def _segment(self, images: Any, tissues: Any, scales: Any) -> Any:
        return self.segmenter((images + 1) / 2, tissues, scales).float()

    @staticmethod
    def _answer_condition(condition: Any, tissues: Any, probability: Any) -> Any:
        """``condition`` with its masks replaced by the segmenter's answer: one tissue known."""
        c = condition.clone()
        c[:, :2 * N_TISSUES] = 0
        rows = range(c.shape[0])
        c[rows, tissues] = probability
        c[rows, N_TISSUES + tissues] = 1.0
        return c

    # -- the game ------------------------------------------------------------------------------

    def discriminator_phase(self, images: Any, condition: Any) -> tuple[Any, Any]:
        """The real images with the segmenter's answers are fakes (and unlabelled images
        mostly fakes); the tissues asked are the context of the segmenter's update."""
        import torch

        d = self.discriminators.per_level[-1]
        tissues, scales = self._ask(condition, labelled=True)
        with torch.no_grad():
            p = torch.softmax(self._segment(images, tissues, scales), 1)[:, 1]
        loss = _lsgan(d(images, self._answer_condition(condition, tissues, p)), 0.0)
        if self.unlabelled is not None:
            xu, cu = self.unlabelled()
            tu, su = self._ask(cu, labelled=False)
            with torch.no_grad():
                pu = torch.softmax(self._segment(xu, tu, su), 1)[:, 1]
            # each unlabelled pair is a negative, or with a small chance a positive
            target = float(self.rng.random() < UNLABELLED_POSITIVE)
            loss = loss + _lsgan(d(xu, self._answer_condition(cu, tu, pu)), target)
        return loss, (tissues, scales)

    def after_generator_phase(self, images: Any, condition: Any, fakes: Any, context: Any
                              ) -> dict[str, Any]:
        """The segmenter's update: Dice + BCE on known pixels, its adversarial loss, and the
        generated pairs once they have joined."""
        import torch

        from .losses import dice_bce_loss

        d = self.discriminators.per_level[-1]
        tissues, scales = context
        rows = range(images.shape[0])
        target = (condition[rows, tissues] > 0.5).long()
        valid = condition[rows, N_TISSUES + tissues] > 0.5  # only known pixels teach
        logits = self._segment(images, tissues, scales)
        ce = dice_bce_loss(logits, target, valid)
        p = torch.softmax(logits, 1)[:, 1]
        adv = _lsgan(d(images, self._answer_condition(condition, tissues, p)), 1.0)
        synthetic = torch.zeros(())
        if self.synthetic_joined():
            synthetic = dice_bce_loss(self._segment(fakes, tissues, scales), target, valid)
        loss = ce + self.adv_weight * adv + SYNTHETIC_WEIGHT * synthetic
        opt = self.optimizers[2]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.segmenter.parameters(), 5.0)
        opt.step()
        return {"s_loss": loss, "s_ce": ce, "s_adv": adv, "s_synthetic": synthetic}


def train_three_player(generator_out: str | Path, segmenter_out: str | Path,
                       pairs: SynthesisPairs, *, unlabelled: SynthesisPairs | None = None,
                       generator_init: str | None = None, segmenter_init: str = "renal",
                       minutes: float = 10.0, max_steps: int | None = None,
                       warmup: float = 0.5, adv_weight: float = ADV_WEIGHT,
                       levels: int = 4, crop: int = 128,
                       batch: int = 4, perceptual: str = Perceptual.SEGMENTER, seed: int = 0,
                       trained_on: str = "", started: float | None = None,
                       progress: Progress | None = None, should_stop: ShouldStop | None = None
                       ) -> Any:
    """Play the three-player game for ``minutes`` and save both the generator and the
    segmenter (every few minutes and at the end).

    Parameters
    ----------
    generator_out, segmenter_out : str or path-like
        The two checkpoints to write.
    pairs : SynthesisPairs
        Labelled pairs (their known maps say what is labelled).
    unlabelled : SynthesisPairs, optional
        Images whose masks are not used (semi-supervised); only images, stains and
        magnifications are read.
    generator_init : str, optional
        A generator checkpoint to start from (default: a new pyramid generator).
    segmenter_init : str
        The segmenter to start from (the bundled renal model by default).
    warmup : float
        Share of the time budget before generated pairs join the segmenter's training (the
        paper's: half).
    adv_weight : float
        Weight of the segmenter's adversarial loss (the paper's: 1).
    levels : int
        Levels of a new generator (``generator_init`` brings its own).
    minutes, max_steps : float, int, optional
        The budget: time (from ``started``), steps, or both (the first reached ends).
    crop, batch : int
        Training crop side (pixels) and pairs per step.
    perceptual : Perceptual
        The generator's perceptual loss (the segmenter's encoder features, or none).
    seed : int
        Initial weights, batches and noise.
    trained_on : str
        What the pairs were, for the checkpoints' metadata.
    started : float, optional
        ``time.perf_counter()`` when the run began (data preparation counts in ``minutes``).
    progress, should_stop : callable, optional
        The run contract: a stop saves both players as they are.

    Returns
    -------
    TrainResult
        Its ``model`` the generator, its ``recipe`` the recipe and the run's facts, as stored
        in both checkpoints' metadata.
    """
    import torch

    from ..checkpoints import load_model, save_checkpoint
    from ..nets.pyramid_gan import PyramidDiscriminators
    from .engine import train_and_save

    started = time.perf_counter() if started is None else started
    torch.manual_seed(seed)
    g, _ = generator_to_train(generator_init, GeneratorArchitecture.PYRAMID, levels, crop=crop)
    if g.prior and pairs.priors is None:
        pairs = with_priors(pairs, seed, should_stop=should_stop)
    s = load_model(segmenter_init, device="cpu").float().train()
    d = PyramidDiscriminators(g.levels, crop)
    features = perceptual_features(perceptual)
    sampler = None
    if unlabelled is not None and len(unlabelled):
        sampler = UnlabelledSampler(list(unlabelled.images), unlabelled.stains,
                                    unlabelled.magnifications, batch, crop, seed)
    join_at = started + warmup * minutes * 60
    step = ThreePlayerStep(g, d, s, PairSampler(pairs, batch, crop, seed),
                           synthetic_joined=lambda: time.perf_counter() >= join_at,
                           unlabelled=sampler, adv_weight=adv_weight, perceptual=features,
                           seed=seed)
    recipe = {"task": GENERATOR, "game": "three-player", "crop": crop, "batch": batch,
              "perceptual": str(perceptual), "pairs": len(pairs),
              "unlabelled_images": len(unlabelled) if unlabelled is not None else 0,
              "trained_on": trained_on, "seed": seed, "generator_init": generator_init or "",
              "segmenter_init": segmenter_init, "warmup": warmup,
              "weights": {"synthetic": SYNTHETIC_WEIGHT, "segmenter_adversarial": adv_weight,
                          "unlabelled_positive": UNLABELLED_POSITIVE}}

    def save(meta: dict, final: bool) -> None:
        save_checkpoint(g, generator_out, **meta)
        save_checkpoint(s, segmenter_out, **{**meta, "task": "renal",
                                            "base_model": segmenter_init})

    return train_and_save(step, save, recipe, started=started, model=g, minutes=minutes,
                          max_steps=max_steps, progress=progress, should_stop=should_stop)
