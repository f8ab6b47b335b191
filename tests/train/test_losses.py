import torch

from napari_omniseg.train.losses import dice_bce_loss, ring_weights


def _logits(mask, confidence=8.0):
    m = mask.float() * 2 - 1
    return torch.stack([-m, m], dim=1) * confidence


def test_perfect_prediction_has_low_loss_and_wrong_has_high():
    target = torch.zeros(2, 32, 32)
    target[:, 8:20, 10:22] = 1
    good = dice_bce_loss(_logits(target), target)
    bad = dice_bce_loss(_logits(1 - target), target)
    assert good < 0.01 < 1.0 < bad


def test_ring_is_two_pixels_outside_objects():
    target = torch.zeros(1, 16, 16)
    target[0, 6:10, 6:10] = 1
    w = ring_weights(target)[0]
    assert w[8, 8] == 1 and w[5, 8] == 1.2 and w[4, 8] == 1.2 and w[3, 8] == 1
    assert w.max() == 1.2


def test_unknown_pixels_contribute_nothing():
    target = torch.zeros(1, 32, 32)
    target[0, :, :16] = 1
    valid = torch.zeros(1, 32, 32)
    valid[0, :, 8:24] = 1
    pred = target.clone()
    a = dice_bce_loss(_logits(pred), target, valid)
    pred[0, :, :4] = 0  # wrong, but only where the label is unknown
    pred[0, :, 28:] = 1
    b = dice_bce_loss(_logits(pred), target, valid)
    assert torch.isclose(a, b)
    pred[0, :, 10:12] = 0  # wrong where it is known
    assert dice_bce_loss(_logits(pred), target, valid) > a + 0.01
