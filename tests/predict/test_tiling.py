import itertools

import numpy as np
import torch

from napari_omniseg.predict.tiling import blend_window, predict_array, tile_starts


class Pointwise(torch.nn.Module):
    """A 'segmenter' whose answer at a pixel depends on that pixel only: tiling must not show."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.0))

    def forward_conditions(self, x, conditions):
        outs = [torch.stack([-x[:, 0] * (t + 1), x[:, 0] * (t + 1) * self.w], 1) for t, _ in
                conditions]
        return torch.stack(outs, 1)


def test_tiles_cover_the_image():
    assert tile_starts(100, 256, 192) == [0]
    s = tile_starts(1000, 256, 192)
    assert s[0] == 0 and s[-1] == 744 and all(b - a <= 192 for a, b in itertools.pairwise(s))
    w = blend_window(64, 16)
    assert w.max() == 1 and w.min() > 0


def test_tiled_prediction_equals_whole_image_prediction():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (700, 530, 3), dtype=np.uint8)
    model = Pointwise()
    got = predict_array(model, img, [(0, 0), (2, 1)], tile=128, overlap=32, batch=3)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    want = torch.softmax(model.forward_conditions(x, [(0, 0), (2, 1)]), 2)[0, :, 1].detach()
    assert got.shape == (2, 700, 530)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)


def test_small_images_are_padded():
    img = np.zeros((40, 50, 3), np.uint8)
    out = predict_array(Pointwise(), img, [(0, 0)], tile=64, overlap=16)
    assert out.shape == (1, 40, 50)
