import numpy as np
import torch

from napari_omniseg.train.augment import colour, spatial


def test_spatial_moves_image_and_mask_together():
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(4, 64, 64)
    mask[:, 10:30, 20:50] = 1
    images = mask[:, None].repeat(1, 3, 1, 1)
    out_img, out_mask = spatial(images, mask, g)
    agree = ((out_img[:, 0] > 0.5) == (out_mask > 0.5)).float().mean()
    assert agree > 0.98
    assert not torch.equal(out_mask, mask)  # something moved
    assert set(out_mask.unique().tolist()) <= {0.0, 1.0}


def test_colour_changes_stain_but_keeps_range_and_structure():
    g = torch.Generator().manual_seed(1)
    blocks = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(2)) * 0.6 + 0.2
    x = blocks.repeat_interleave(8, 2).repeat_interleave(8, 3)  # structure, not pixel noise
    y = colour(x, g)
    assert y.min() >= 0 and y.max() <= 1
    assert (y - x).abs().mean() > 0.01
    for i in range(6):  # the picture is still the same picture
        assert torch.corrcoef(torch.stack([x[i].flatten(), y[i].flatten()]))[0, 1] > 0.5


def test_stain_vectors_keep_structure_and_change_colour():
    from napari_omniseg.train.augment import stain_vectors

    g = torch.Generator().manual_seed(0)
    from napari_omniseg.train.augment import _HED

    basis = _HED / _HED.norm(dim=1, keepdim=True)
    amounts = torch.rand(4, 3, 32, 32, generator=g) * torch.tensor([1.0, 0.6, 0.1])[:, None, None]
    x = torch.exp(-torch.einsum("nkhw,kc->nchw", amounts, basis))  # a dyed image
    same = stain_vectors(x, g, p=1.0, max_angle=0.0, amount=0.0)
    assert torch.allclose(same, x, atol=1e-5)  # unmixing and mixing again is the identity
    out = stain_vectors(x, g, p=1.0)
    assert (out - x).abs().mean() > 0.01
    # where the image is darker, the re-dyed one is darker too: structure kept
    dark = x.mean(1) < x.mean(1).median()
    assert (out.mean(1)[dark].mean() < out.mean(1)[~dark].mean())
    assert torch.equal(stain_vectors(x, g, p=0.0), x)


def test_jpeg_compresses_a_share_of_the_images():
    from napari_omniseg.train.augment import jpeg

    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 32, 32)
    out = jpeg(x, g, p=1.0, quality=(10, 10))
    assert out.shape == x.shape and 0.02 < (out - x).abs().mean() < 0.5
    assert torch.equal(jpeg(x, g, p=0.0), x)


def test_edge_reflection_mirrors_bands_as_the_tile_engine_pads():
    from napari_omniseg.train.augment import edge_reflection

    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 3, 64, 64)
    target = (torch.rand(6, 64, 64) > 0.5).float()
    out, (t_out,) = edge_reflection(x, [target], g, p=1.0, max_width=20)
    assert not torch.equal(out, x) and torch.equal(x, x.clone())  # inputs untouched
    for i in range(6):
        changed = (out[i] != x[i]).any(0)
        rows, cols = changed.any(1), changed.any(0)
        # changes lie in bands along the sides, each at most max_width deep
        inner = changed[20:-20, 20:-20]
        assert not inner.any() and (rows.any() or cols.any())
        # the target moved exactly as the image: mirrored labels of mirrored tissue
        assert torch.equal((t_out[i] != target[i]), (t_out[i] != target[i]) & changed)
    # one side against numpy's reflect padding, the engine's mode
    from napari_omniseg.train.augment import _reflect_band

    a = np.arange(7 * 9, dtype=float).reshape(7, 9)
    for side, core, pad in ((0, a[3:], ((3, 0), (0, 0))), (1, a[:-3], ((0, 3), (0, 0))),
                            (2, a[:, 3:], ((0, 0), (3, 0))), (3, a[:, :-3], ((0, 0), (0, 3)))):
        t = torch.tensor(a)
        _reflect_band(t, side, 3)
        assert np.array_equal(t.numpy(), np.pad(core, pad, mode="reflect"))
    assert edge_reflection(x, [target], g, p=0.0)[0] is x
