"""Block labels: covering the image, the block table, derivation from masks."""

import csv

import numpy as np
import pytest
import skimage.io

from napari_omniseg.errors import OmnisegInputError
from napari_omniseg.train.block_labels import (
    MIN_SD,
    BlockAnnotation,
    BlockTable,
    block_fractions,
    blocks_from_masks,
    check_cover,
    classes_of_fractions,
    examples_from_masks,
    read_block_manifest,
    upsampled_blocks,
)


def test_fractions_and_classes():
    mask = np.zeros((4, 8), bool)
    mask[:2, :2] = True
    mask[2:, 4:] = True
    mask[3, 2] = True
    f = block_fractions(mask, 2)
    assert f.tolist() == [[1, 0, 0, 0], [0, 0.25, 1, 1]]
    # class 1 = none; 2..4 split (0, 1] in thirds
    assert classes_of_fractions(np.array([0, 0.1, 1 / 3, 0.34, 0.7, 1]), 4).tolist() == [
        1, 2, 2, 3, 4, 4]
    with pytest.raises(OmnisegInputError, match="cannot tell anything apart"):
        classes_of_fractions(f, 1)


def test_a_block_layer_must_cover_the_image_and_the_size_divide_it():
    img = np.zeros((64, 96, 3), np.uint8)
    BlockAnnotation(img, np.zeros((2, 3)), 32, "pt", 10)
    with pytest.raises(OmnisegInputError, match="does not divide"):
        BlockAnnotation(img, np.zeros((2, 3)), 24, "pt", 10)
    with pytest.raises(OmnisegInputError, match="does not cover the image"):
        BlockAnnotation(img, np.zeros((2, 2)), 32, "pt", 10)
    with pytest.raises(OmnisegInputError, match=r"does not divide odd\.png"):
        check_cover((100, 96), (3, 3), 32, "odd.png")
    with pytest.raises(OmnisegInputError, match="at least 2 x 2"):
        check_cover((100, 96), (100, 96), 1)


def test_table_refuses_bad_rows_and_names_a_missing_class(tmp_path):
    with pytest.raises(OmnisegInputError, match="means are fractions"):
        BlockTable({("pt", 1): (1.2, 0.1)})
    with pytest.raises(OmnisegInputError, match="sd must be above 0"):
        BlockTable({("pt", 1): (0.2, 0.0)})
    table = BlockTable({("pt", 1): (0.0, 0.02), ("pt", 2): (0.4, 0.1)})
    a = BlockAnnotation(np.zeros((4, 4, 3), np.uint8), np.array([[1, 3], [2, 0]]), 2, "pt", 10)
    with pytest.raises(OmnisegInputError, match="block class 3 of pt is not in the block table"):
        table.check_covers([a])
    path = table.save(tmp_path / "t.csv")
    assert BlockTable.load(path).rows == table.rows
    (tmp_path / "bad.csv").write_text("tissue,block_class,mean,sd\npt,1,-0.1,0.1\n")
    with pytest.raises(OmnisegInputError, match=r"bad\.csv line 2: .*means are fractions"):
        BlockTable.load(tmp_path / "bad.csv")


def test_mask_estimated_table_from_painted_blocks():
    mask = np.zeros((4, 4), bool)
    mask[:2, :1] = True  # block (0, 0): 0.5
    mask[2:, 2:] = True  # block (1, 1): 1.0
    a = BlockAnnotation(np.zeros((4, 4, 3), np.uint8), np.array([[2, 1], [1, 2]]), 2, "dt", 10)
    table = BlockTable.estimate(examples_from_masks([a], [mask]))
    assert table.rows[("dt", 2)] == pytest.approx((0.75, 0.25))
    assert table.rows[("dt", 1)] == (0.0, MIN_SD)
    assert upsampled_blocks(a.blocks, 2, table, "dt").sum() == 8


def test_blocks_from_masks_writes_a_manifest_finetune_reads(tmp_path):
    rows = ["image,mask,tissue,stain,magnification,split"]
    rng = np.random.default_rng(0)
    for i, split in enumerate(["train", "train", "val"]):
        skimage.io.imsave(tmp_path / f"p{i}.png", rng.integers(0, 255, (64, 64, 3), np.uint8),
                          check_contrast=False)
        mask = np.zeros((70, 64), np.uint8)
        mask[: 16 * (i + 1), :20] = 255
        mask = mask[:64]
        skimage.io.imsave(tmp_path / f"m{i}.png", mask, check_contrast=False)
        rows.append(f"p{i}.png,m{i}.png,pt,he,10,{split}")
    (tmp_path / "in.csv").write_text("\n".join(rows) + "\n")
    manifest, table_path = blocks_from_masks(tmp_path / "in.csv", 16, 3, tmp_path / "out")
    with open(manifest) as f:
        out = list(csv.DictReader(f))
    assert [r["split"] for r in out] == ["train", "train", "val"]
    assert "mask" not in out[0] and out[0]["block_size"] == "16"
    table = BlockTable.load(table_path)
    assert sorted(table.rows) == [("pt", 1), ("pt", 2), ("pt", 3)]
    blocks = read_block_manifest(manifest)
    assert blocks["train"][0].blocks.shape == (4, 4)
    # block (0, 0) all tissue, (0, 1) a quarter, the rest none
    assert blocks["train"][0].blocks[0].tolist() == [3, 2, 1, 1]


def test_blocks_from_masks_refuses_images_that_are_not_whole_blocks(tmp_path):
    skimage.io.imsave(tmp_path / "p.png", np.zeros((70, 64, 3), np.uint8), check_contrast=False)
    skimage.io.imsave(tmp_path / "m.png", np.zeros((70, 64), np.uint8), check_contrast=False)
    (tmp_path / "in.csv").write_text("image,mask,tissue,magnification\np.png,m.png,pt,10\n")
    with pytest.raises(OmnisegInputError, match=r"in\.csv line 2: block size 16 does not divide"):
        blocks_from_masks(tmp_path / "in.csv", 16, 3, tmp_path / "out")
