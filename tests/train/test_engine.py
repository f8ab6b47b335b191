import pytest
import torch

from napari_omniseg.nets.omniseg import OmniSegPlus
from napari_omniseg.train.engine import (
    SegmentationStep,
    finetune_copy,
    learning_rate_factor,
    run_training,
)
from napari_omniseg.train.losses import dice_bce_loss


def _bright_blobs(batch, gen):
    """A task a tiny model learns in a few dozen steps: segment the bright squares."""
    x = torch.rand(batch, 3, 32, 32, generator=gen) * 0.3
    y = torch.zeros(batch, 32, 32)
    for i in range(batch):
        r, c = torch.randint(0, 20, (2,), generator=gen).tolist()
        x[i, :, r:r + 10, c:c + 10] += 0.6
        y[i, r:r + 10, c:c + 10] = 1
    zeros = torch.zeros(batch, dtype=torch.long)
    return {"images": x, "targets": y, "conditions": (zeros, zeros)}


def _step(model, gen, batch=8, lr=3e-3):
    return SegmentationStep(model, lambda: _bright_blobs(batch, gen),
                            lambda lg, t, v: dice_bce_loss(lg, t, v), lr=lr, bf16=False)


def test_segmentation_step_learns_and_reports_and_checkpoints():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = OmniSegPlus(width=0.25)
    reports, ckpts = [], []
    res = run_training(_step(model, gen), max_steps=60,
                       progress=lambda d, t, m: reports.append((d, t, m)),
                       checkpoint=ckpts.append, checkpoint_every=0.0)
    assert res.steps == 60 and not res.stopped
    assert sum(res.losses[-10:]) / 10 < 0.6 * sum(res.losses[:10]) / 10
    assert ckpts[-1] == 60 and not model.training
    assert res.history[-1]["step"] == 60 and res.history[-1]["loss"] > 0


def test_stop_ends_the_run_with_usable_weights():
    gen = torch.Generator().manual_seed(0)
    model = OmniSegPlus(width=0.25)
    calls = []
    res = run_training(_step(model, gen, batch=2), max_steps=1000,
                       should_stop=lambda: len(calls.append(1) or calls) > 3)
    assert res.stopped and res.steps == 3
    out = model(torch.rand(1, 3, 32, 32), torch.tensor([0]), torch.tensor([0]))
    assert torch.isfinite(out).all()


def test_schedule_warms_up_then_follows_a_cosine():
    assert learning_rate_factor(0, 0.0) == pytest.approx(1 / 50)
    assert learning_rate_factor(49, 0.0) == 1.0
    assert learning_rate_factor(100, 0.5) == pytest.approx(0.5)
    assert learning_rate_factor(100, 1.0) == pytest.approx(0.0)


class _ToyGanStep:
    """Two networks, two optimisers, two named losses: the shape of a GAN step."""

    def __init__(self):
        torch.manual_seed(0)
        self.gen = torch.nn.Linear(2, 2)
        self.disc = torch.nn.Linear(2, 1)
        self.networks = {"generator": self.gen, "discriminator": self.disc}
        self.optimizers = [torch.optim.SGD(self.gen.parameters(), lr=0.1),
                           torch.optim.SGD(self.disc.parameters(), lr=0.01)]
        self.lrs = []

    def __call__(self):
        self.lrs.append([o.param_groups[0]["lr"] for o in self.optimizers])
        real = torch.randn(16, 2) + 3
        fake = self.gen(torch.randn(16, 2))
        d_loss = (torch.nn.functional.softplus(-self.disc(real)).mean()
                  + torch.nn.functional.softplus(self.disc(fake.detach())).mean())
        self.optimizers[1].zero_grad()
        d_loss.backward()
        self.optimizers[1].step()
        g_loss = torch.nn.functional.softplus(-self.disc(fake)).mean()
        self.optimizers[0].zero_grad()
        g_loss.backward()
        self.optimizers[0].step()
        return {"loss": g_loss.item(), "discriminator": d_loss.item()}


def test_a_two_network_step_runs_on_the_engine_and_keeps_its_best_weights():
    step = _ToyGanStep()
    # validation: how close the generator's mean output is to the real mean (higher is better)
    score = lambda: -(step.gen(torch.zeros(1, 2)) - 3).abs().mean().item()  # noqa: E731
    seen = []
    res = run_training(step, max_steps=80, score=score, validate_every=0.0,
                       on_validate=seen.append)
    assert res.steps == 80 and len(res.history) == len(seen) > 80
    assert {"loss", "discriminator", "val_dice"} <= set(res.history[-1])
    # each optimiser keeps its own rate, scaled by the same schedule
    ratios = {round(g / d, 6) for g, d in step.lrs[1:]}
    assert ratios == {10.0}
    assert step.lrs[0][0] == pytest.approx(0.1 / 50)
    # keep-best: the networks end holding the best-scoring weights, not the last ones
    assert res.best_score == max(e["val_dice"] for e in res.history)
    assert score() == pytest.approx(res.best_score)
    assert not step.gen.training and not step.disc.training


def test_finetune_copy_leaves_the_starting_model_alone():
    import time

    gen = torch.Generator().manual_seed(0)
    model = OmniSegPlus(width=0.25)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = finetune_copy(model, lambda: _bright_blobs(2, gen),
                        lambda lg, t, v: dice_bce_loss(lg, t, v), None,
                        started=time.perf_counter(), lr=1e-3, max_steps=3)
    assert res.model is not model and res.steps == 3 and res.best_score is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
