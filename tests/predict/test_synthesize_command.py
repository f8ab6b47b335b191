"""omniseg synthesize and omniseg train synthesis, as a person runs them."""

import json

import numpy as np
import pytest
import tifffile

from napari_omniseg.cli import main
from napari_omniseg.io.slides import open_slide


@pytest.fixture
def generator(tmp_path):
    import torch

    from napari_omniseg.checkpoints import save_checkpoint
    from napari_omniseg.nets.pyramid_gan import PyramidGenerator

    torch.manual_seed(0)
    return save_checkpoint(PyramidGenerator(levels=3, width=8), tmp_path / "g.pt") or (
        tmp_path / "g.pt")


def painted_tif(path, mpp=0.5):
    lab = np.zeros((600, 700), np.uint8)
    lab[100:300, 100:400] = 2
    lab[400:450, :] = 6
    tifffile.imwrite(path, lab, resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    return path


def test_synthesize_writes_a_pyramid_with_the_masks_shape_and_pixel_size(tmp_path, generator,
                                                                        capsys):
    mask = painted_tif(tmp_path / "painted.tif")
    out = tmp_path / "synthetic.ome.tif"
    code = main(["synthesize", str(mask), "--stain", "pas", "--seed", "3", "--generator",
                 str(generator), "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert result["magnification"] == 20  # from 0.5 µm/px
    slide = open_slide(out)
    assert slide.shape == (600, 700) and slide.mpp == pytest.approx(0.5)
    assert len(slide.levels) == 2  # 700 px: one halving to 350
    first = np.asarray(slide.levels[0])
    main(["synthesize", str(mask), "--stain", "pas", "--seed", "3", "--generator",
          str(generator), "-o", str(tmp_path / "again.ome.tif")])
    again = np.asarray(open_slide(tmp_path / "again.ome.tif").levels[0])
    np.testing.assert_array_equal(first, again)  # the same seed, the same image


def test_synthesize_with_the_anatomy_prior_alone(tmp_path, capsys):
    """``--generator prior``: no model file; the painted PT rectangle gets tubules (lumens
    brighter than epithelium), and the output is written like any synthetic image."""
    mask = painted_tif(tmp_path / "painted.tif")
    out = tmp_path / "prior.ome.tif"
    code = main(["synthesize", str(mask), "--stain", "he", "--generator", "prior", "-o",
                 str(out)])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["generator"] == "prior"
    rgb = np.asarray(open_slide(out).levels[0]).astype(float)
    assert rgb.shape == (600, 700, 3)
    region = rgb[110:290, 110:390].mean(-1)
    assert region.std() > 20 and np.percentile(region, 95) - np.percentile(region, 5) > 60


@pytest.mark.parametrize("case, words", [
    ("not a generator", "not a histology generator"),
    ("garbage file", "g.pt"),
    ("bad values", "label values 9"),
    ("no pixel size", "--magnification"),
])
def test_bad_input_is_one_sentence_and_nothing_written(tmp_path, generator, capsys, case,
                                                       words):
    mask = painted_tif(tmp_path / "painted.tif")
    gen = str(generator)
    if case == "not a generator":
        from conftest import tiny_renal_checkpoint

        gen = str(tiny_renal_checkpoint(tmp_path / "seg.pt"))
    elif case == "garbage file":
        (tmp_path / "g.pt").write_bytes(b"not a checkpoint")
    elif case == "bad values":
        lab = tifffile.imread(mask)
        lab[0, 0] = 9
        tifffile.imwrite(mask, lab, resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    else:
        tifffile.imwrite(mask, tifffile.imread(mask))
    out = tmp_path / "o.ome.tif"
    code = main(["synthesize", str(mask), "--stain", "he", "--generator", gen, "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))


def toy_manifest(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    lines = ["image,mask,tissue,stain,magnification,split"]
    for i in range(3):
        img = rng.integers(100, 255, (64, 64, 3), dtype=np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        mask[10:40, 10:40] = 255
        Image.fromarray(img).save(tmp_path / f"p{i}.png")
        Image.fromarray(mask).save(tmp_path / f"p{i}_mask.png")
        lines.append(f"p{i}.png,p{i}_mask.png,pt,pas,10,{'val' if i == 2 else 'train'}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    return tmp_path / "m.csv"


def test_train_synthesis_from_a_manifest(tmp_path, capsys):
    toy_manifest(tmp_path)
    code = main(["train", "synthesis", "--manifest", str(tmp_path / "m.csv"), "--simulated",
                 "0", "--minutes", "0.05", "--crop", "64", "--levels", "3", "--width", "8",
                 "--perceptual", "none", "-o", str(tmp_path / "g.pt")])
    assert code == 0, capsys.readouterr().err
    recipe = json.loads(capsys.readouterr().out)
    assert recipe["pairs"] == 2 and "m.csv (train rows, 2 patches)" in recipe["trained_on"]
    assert (tmp_path / "g.pt").is_file()


def test_the_three_player_game_writes_a_generator_and_a_segmenter(tmp_path, capsys):
    from napari_omniseg.checkpoints import read_metadata

    m = str(toy_manifest(tmp_path))
    code = main(["train", "synthesis", "--manifest", m, "--simulated", "0", "--steps", "1",
                 "--crop", "64", "--levels", "3", "--perceptual", "none", "--unlabelled", m,
                 "--segmenter-adversarial", "0.1", "--segmenter-out", str(tmp_path / "s.pt"),
                 "-o", str(tmp_path / "g.pt")])
    assert code == 0, capsys.readouterr().err
    recipe = json.loads(capsys.readouterr().out)
    assert recipe["game"] == "three-player" and recipe["unlabelled_images"] == 2
    assert recipe["weights"]["segmenter_adversarial"] == 0.1
    assert read_metadata(tmp_path / "s.pt")["architecture"] == "omniseg_plus"
    assert read_metadata(tmp_path / "g.pt")["architecture"] == "pyramid_cgan"


def test_three_player_options_alone_are_refused(tmp_path, capsys):
    m = str(toy_manifest(tmp_path))
    code = main(["train", "synthesis", "--manifest", m, "--simulated", "0", "--unlabelled",
                 m, "-o", str(tmp_path / "g.pt")])
    assert code == 2 and "--segmenter-out" in capsys.readouterr().err
    assert not (tmp_path / "g.pt").exists()


def test_train_synthesis_goes_on_from_a_generator(tmp_path, capsys, generator):
    m = str(toy_manifest(tmp_path))
    code = main(["train", "synthesis", "--manifest", m, "--simulated", "0", "--steps", "1",
                 "--crop", "64", "--perceptual", "none", "--init", str(generator),
                 "-o", str(tmp_path / "g2.pt")])
    assert code == 0, capsys.readouterr().err
    recipe = json.loads(capsys.readouterr().out)
    assert recipe["init"] == str(generator) and recipe["levels"] == 3 and recipe["width"] == 8
