import torch

from napari_omniseg.nets.omniseg import OmniSegPlus
from napari_omniseg.train.loop import train_loop
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


def test_loop_learns_and_reports_and_checkpoints():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = OmniSegPlus(width=0.25)
    reports, ckpts = [], []
    res = train_loop(model, lambda: _bright_blobs(8, gen),
                     lambda lg, t, v: dice_bce_loss(lg, t, v), max_steps=60, lr=3e-3,
                     bf16=False, progress=lambda d, t, m: reports.append(m),
                     on_checkpoint=ckpts.append, checkpoint_every=0.0)
    assert res.steps == 60 and not res.stopped
    assert sum(res.losses[-10:]) / 10 < 0.6 * sum(res.losses[:10]) / 10
    assert ckpts[-1] == 60 and not model.training


def test_stop_ends_the_run_with_usable_weights():
    gen = torch.Generator().manual_seed(0)
    model = OmniSegPlus(width=0.25)
    calls = []
    res = train_loop(model, lambda: _bright_blobs(2, gen), lambda lg, t, v: dice_bce_loss(lg, t),
                     max_steps=1000, bf16=False, should_stop=lambda: len(calls.append(1) or calls) > 3)
    assert res.stopped and res.steps == 3
    out = model(torch.rand(1, 3, 32, 32), torch.tensor([0]), torch.tensor([0]))
    assert torch.isfinite(out).all()
