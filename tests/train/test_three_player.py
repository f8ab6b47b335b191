"""The three-player game: generator, segmenter and discriminators trained together."""

import numpy as np
import torch
from test_synthesis import toy_pairs

from napari_omniseg.checkpoints import load_generator, load_model, read_metadata
from napari_omniseg.train.three_player import ThreePlayerStep, train_three_player


def test_the_segmenters_answer_becomes_a_condition_with_one_tissue_known():
    cond = torch.ones(2, 20, 8, 8)
    p = torch.full((2, 8, 8), 0.25)
    c = ThreePlayerStep._answer_condition(cond, torch.tensor([1, 4]), p)
    assert torch.equal(c[0, 1], p[0]) and torch.equal(c[1, 4], p[1])
    assert c[0, 7].eq(1).all() and c[1, 10].eq(1).all()  # the asked tissue is known
    masks_and_known = c[:, :12].clone()
    masks_and_known[0, [1, 7]] = 0
    masks_and_known[1, [4, 10]] = 0
    assert masks_and_known.eq(0).all()  # nothing said of the others
    assert torch.equal(c[:, 12:], cond[:, 12:])  # stain and magnification stay


def test_a_few_steps_of_the_game_save_a_generator_and_a_segmenter(tmp_path):
    pairs = toy_pairs(4)
    before = {k: v.clone() for k, v in load_model("renal", device="cpu").state_dict().items()}
    recipe = train_three_player(tmp_path / "g.pt", tmp_path / "s.pt", pairs,
                                unlabelled=toy_pairs(3), minutes=5, max_steps=2, warmup=0.0,
                                levels=3, crop=64, batch=2, perceptual="none",
                                trained_on="toy pairs").recipe
    assert recipe["steps"] == 2 and recipe["unlabelled_images"] == 3
    g = load_generator(tmp_path / "g.pt", device="cpu")
    assert g.levels == 3
    s = load_model(tmp_path / "s.pt", device="cpu")
    assert hasattr(s, "forward_conditions")  # a renal segmenter the other tools can use
    assert read_metadata(tmp_path / "s.pt")["game"] == "three-player"
    after = s.state_dict()
    assert any(not torch.equal(before[k].float(), after[k].float()) for k in before
               if before[k].is_floating_point())
    assert all(torch.isfinite(p).all() for p in s.parameters())
    assert np.isfinite(recipe["seconds"])
