"""Fine-tuning from block labels: a toy problem where only block statistics carry the signal,
the model in use left alone, pixel annotations mixed in, the fit report."""

import numpy as np
import pytest
import torch
from torch import nn

from napari_omniseg.choices import LsrLoss
from napari_omniseg.errors import OmnisegInputError
from napari_omniseg.train.annotations import annotation_from_layers
from napari_omniseg.train.block_labels import (
    BlockAnnotation,
    BlockTable,
    block_fractions,
    classes_of_fractions,
    examples_from_masks,
    upsampled_blocks,
)
from napari_omniseg.train.finetune_blocks import BlockOptions, finetune_blocks, make_block_batches
from napari_omniseg.train.metrics import dice

BLOCK = 8


class PixelModel(nn.Module):
    """A per-pixel classifier with the conditional call of Omni-Seg+ (conditions unused)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 2, 1))

    def forward(self, x, tissue_ids, scale_ids):
        return self.net(x)


def speckled(rng, n):
    """Grey images with red speckles whose density changes from block to block: a block label
    (none / few / many) says how much, never where; only the colour says where."""
    out = []
    for _ in range(n):
        density = rng.choice([0.0, 0.2, 0.6], (32 // BLOCK, 32 // BLOCK))
        dens = np.kron(density, np.ones((BLOCK, BLOCK)))
        mask = rng.random((32, 32)) < dens
        img = np.full((32, 32, 3), 150, np.uint8) + rng.integers(0, 20, (32, 32, 1), np.uint8)
        img[mask] = (220, 60, 60)
        out.append((img, mask))
    return out


def test_block_statistics_alone_teach_where_the_tissue_is():
    rng = np.random.default_rng(0)
    train, test = speckled(rng, 12), speckled(rng, 4)
    blocks = [BlockAnnotation(img, classes_of_fractions(block_fractions(m, BLOCK), 3), BLOCK,
                              "ptc", 40) for img, m in train]
    table = BlockTable.estimate(examples_from_masks(blocks, [m for _, m in train]))
    torch.manual_seed(0)
    model = PixelModel()
    before = [p.detach().clone() for p in model.parameters()]
    result = finetune_blocks(model, blocks, table, options=BlockOptions(crop=32), lr=2e-2,
                             batch=4, max_steps=150)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # in use: as was
    lsr, lowres = [], []
    for img, m in test:
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            pred = result.model(x, None, None).argmax(1)[0].numpy() > 0
        lsr.append(dice(pred, m))
        z = classes_of_fractions(block_fractions(m, BLOCK), 3)
        lowres.append(dice(upsampled_blocks(z, BLOCK, table, "ptc"), m))
    assert np.mean(lsr) > 0.9 > np.mean(lowres) + 0.2


def test_block_batches_are_aligned_crops_with_labelled_blocks():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (64, 96, 3), np.uint8)
    z = np.zeros((4, 6), int)
    z[3, 5] = 2
    nb = make_block_batches([BlockAnnotation(img, z, 16, "pt", 10)], batch=3, crop=32, seed=0)
    b = nb()
    assert b["images"].shape == (3, 3, 32, 32) and b["blocks"].shape == (3, 2, 2)
    assert b["block_size"] == 16 and (b["blocks"] == 2).sum(dim=(1, 2)).tolist() == [1, 1, 1]


def test_pixel_annotations_mix_in_and_a_missing_class_is_named():
    rng = np.random.default_rng(2)
    (img, m), = speckled(rng, 1)
    blocks = [BlockAnnotation(img, classes_of_fractions(block_fractions(m, BLOCK), 3), BLOCK,
                              "ptc", 40)]
    table = BlockTable.estimate(examples_from_masks(blocks, [m]))
    pixels = [annotation_from_layers(img, m.astype(np.uint8), "ptc", 40, annotated=True)]
    r = finetune_blocks(PixelModel(), blocks, table, pixels,
                        options=BlockOptions(crop=32, loss=LsrLoss.INTRA), batch=4, max_steps=3)
    assert r.steps == 3 and "pixel_loss" in r.history[-1] and "block_loss" in r.history[-1]
    partial = BlockTable({k: v for k, v in table.rows.items() if k[1] != 1})
    with pytest.raises(OmnisegInputError, match="block class 1 of ptc is not in the block table"):
        finetune_blocks(PixelModel(), blocks, partial, max_steps=1)
