import numpy as np
import pytest
import torch
from conftest import constant_logits_model

from napari_omniseg.checkpoints import load_model, read_metadata
from napari_omniseg.errors import OmnisegInputError
from napari_omniseg.nets.omniseg import OmniSegPlus
from napari_omniseg.train.annotations import (
    annotation_from_layers,
    at_optimal_magnification,
    nearest_magnification,
)
from napari_omniseg.train.finetune_renal import (
    evaluate_annotations,
    finetune,
    make_finetune_batches,
    pseudo_labels,
    save_finetuned,
)
from napari_omniseg.train.metrics import dice, hausdorff95


def blobs(seed=0, n=256):
    """Pink image with dark-purple discs: the discs are the 'tissue'."""
    rng = np.random.default_rng(seed)
    img = np.zeros((n, n, 3), np.uint8) + np.array([235, 190, 215], np.uint8)
    mask = np.zeros((n, n), bool)
    yy, xx = np.mgrid[:n, :n]
    for _ in range(6):
        cy, cx, r = [*rng.integers(30, n - 30, 2).tolist(), int(rng.integers(10, 25))]
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    img[mask] = (90, 40, 120)
    return img, mask


def test_unpainted_pixels_are_unknown_unless_inside_an_annotated_region():
    img, mask = blobs()
    strokes = np.zeros(mask.shape, np.uint8)
    strokes[mask & (np.arange(256)[None, :] < 128)] = 1  # paint the discs of the left half
    a = annotation_from_layers(img, strokes, "ptc", 40)
    assert not (a.known & ~a.mask).any()  # nothing is known to be background
    box = np.zeros(mask.shape, bool)
    box[:, :64] = True
    b = annotation_from_layers(img, strokes, "ptc", 40, annotated=box)
    assert (b.known & ~b.mask).any() and b.known.sum() > a.known.sum()
    c = annotation_from_layers(img, strokes, "ptc", 40, annotated=True)
    assert c.known.all()


def test_unknown_pixels_do_not_act_as_background():
    """Train only on painted foreground: the model must not learn 'unpainted = background'."""
    torch.manual_seed(0)
    img, mask = blobs()
    strokes = mask.astype(np.uint8)
    ann = annotation_from_layers(img, strokes, "ptc", 40)
    nb = make_finetune_batches([ann], batch=2, augment=False)
    b = nb()
    assert b["valid"].sum() == b["targets"].sum()  # every known pixel is tissue
    # the gradient of the loss on unknown pixels is zero: changing their target changes nothing
    from napari_omniseg.train.losses import dice_bce_loss
    logits = torch.randn(2, 2, 256, 256)
    flipped = b["targets"].clone()
    flipped[b["valid"] == 0] = 1 - flipped[b["valid"] == 0]
    assert torch.allclose(dice_bce_loss(logits, b["targets"], b["valid"]),
                          dice_bce_loss(logits, flipped, b["valid"]))


def test_batches_keep_masks_and_known_pixels_aligned():
    img, mask = blobs(1)
    ann = annotation_from_layers(img, mask.astype(np.uint8), "dt", 10, annotated=True)
    b = make_finetune_batches([ann], batch=4, seed=3)()
    assert b["images"].shape == (4, 3, 256, 256) and "images2" not in b
    dark = b["images"].mean(1) < 0.45
    t = b["targets"].bool() & b["valid"].bool()
    assert (dark & t).sum() / t.sum() > 0.8  # the targets still sit on the dark discs


def test_disjoint_tissues_learn_the_painted_pixels_as_negatives():
    """A painted artery is known to be no tubule: asked for DT or PT (never for itself, nor for
    PTC, which is not trained at 10x), its painted pixels are negatives, the rest unknown."""
    img, mask = blobs(2)
    ann = annotation_from_layers(img, mask.astype(np.uint8), "ves", 10, annotated=True)
    b = make_finetune_batches([ann], batch=64, seed=1, augment=False, disjoint_p=0.5)()
    tissue, scale = b["conditions"]
    asked = {int(t) for t in tissue}
    assert asked == {0, 1, 2, 3, 4}  # dt, pt, cap, tuft (5x, a neighbour of 10x) and ves
    assert (scale == 1).all()  # the row's own magnification
    other = tissue != 4
    assert 10 < int(other.sum()) < 54
    assert b["targets"][other].sum() == 0  # no positives for the other tissues
    valid = b["valid"][other].bool()
    assert (valid.sum((1, 2)) > 0).all()
    dark = b["images"][other].mean(1) < 0.45
    assert (dark[valid]).float().mean() > 0.95  # the known negatives are the painted discs
    own = b["valid"][~other]
    assert own.mean() == 1  # the artery rows keep their whole annotation
    # without the option nothing changes, and a capillary row (40x) has no disjoint tissue
    # trained at its magnification
    assert set(make_finetune_batches([ann], batch=32, augment=False)()["conditions"][0]
               .tolist()) == {4}
    cap = annotation_from_layers(img, mask.astype(np.uint8), "ptc", 40, annotated=True)
    assert set(make_finetune_batches([cap], batch=32, augment=False, disjoint_p=1.0)()
               ["conditions"][0].tolist()) == {5}


def test_metrics():
    a = np.zeros((50, 50), bool)
    a[10:20, 10:20] = True
    b = np.roll(a, 3, axis=1)
    assert dice(a, a) == 1.0 and dice(a, b) == pytest.approx(0.7)
    assert hausdorff95(a, a) == 0.0
    assert hausdorff95(a, b, spacing=0.5) == pytest.approx(1.5)
    assert np.isnan(hausdorff95(a, np.zeros_like(a)))


def test_bad_inputs_are_explained():
    img, mask = blobs()
    with pytest.raises(OmnisegInputError, match="nothing painted"):
        annotation_from_layers(img, np.zeros_like(mask, np.uint8), "pt", 10)
    with pytest.raises(OmnisegInputError, match="differ in size"):
        annotation_from_layers(img, mask[:100], "pt", 10)
    assert nearest_magnification(38) == 40 and nearest_magnification(6) == 5


def test_finetune_learns_and_leaves_the_model_in_use_alone(tmp_path):
    torch.manual_seed(0)
    model = OmniSegPlus(width=0.25).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train = [annotation_from_layers(*blobs(s)[:1], blobs(s)[1].astype(np.uint8), "ptc", 40,
                                    annotated=True) for s in range(3)]
    val = [annotation_from_layers(blobs(9)[0], blobs(9)[1].astype(np.uint8), "ptc", 40,
                                  annotated=True)]
    start = evaluate_annotations(model, val, bf16=False)["mean_dice"]
    seen = []
    res = finetune(model, train, val, minutes=None, max_steps=40, lr=3e-3, batch=4,
                   semi_supervised=False, validate_every=1e9, on_validate=seen.append)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert res.best_score > max(0.8, start) and seen[0]["step"] == 0 and len(seen) >= 2
    path = save_finetuned(res, tmp_path / "ft.pt", "tiny", train, val)
    meta = read_metadata(path)
    assert meta["tissues_trained"] == ["ptc"] and meta["data"]["ptc"]["patches"] == 3
    assert meta["familiarity"]["patches"] >= 48  # Segment judges slides by its training rows
    again = evaluate_annotations(load_model(path, device="cpu"), val, bf16=False)
    assert again["mean_dice"] == pytest.approx(res.best_score, abs=0.02)


def Confident():
    """Sure of itself everywhere: 'yes' left of the middle, 'no' right of it."""
    def fn(n, k, h, w):
        logits = torch.zeros(n, k, 2, h, w)
        logits[..., 1, :, : w // 2] = 5.0
        logits[..., 0, :, w // 2:] = 5.0
        return logits

    return constant_logits_model(fn)


def test_pseudo_labels_cover_other_tissues_at_their_magnification():
    model = Confident()
    img, mask = blobs()
    a = annotation_from_layers(img, mask.astype(np.uint8), "dt", 10, annotated=True)
    p = pseudo_labels(model, [a], bf16=False)
    got = {(q.tissue, q.magnification, q.image.shape[:2]) for q in p}
    # pt and ves share 10x (same view); cap and tuft at 5x see it half size; ptc (40x) cannot
    assert got == {("pt", 10, (256, 256)), ("ves", 10, (256, 256)), ("cap", 5, (128, 128)),
                   ("tuft", 5, (128, 128))}
    q = p[0]
    assert q.known.all() and q.mask[:, :100].all() and not q.mask[:, -100:].any()


def test_annotations_finer_than_the_optimal_magnification_are_shrunk_to_it():
    img, mask = blobs(n=512)
    box = np.zeros(mask.shape, bool)
    box[:, :256] = True  # fully annotated left half; the right half is unknown
    pt40 = annotation_from_layers(img, mask.astype(np.uint8) * box, "pt", 40, annotated=box)
    pt10 = at_optimal_magnification(pt40)
    assert pt10.magnification == 10 and pt10.extra["painted_at"] == 40
    assert pt10.mask.shape == tuple(round(n / 4) for n in pt40.mask.shape)
    assert pt10.image.shape[:2] == pt10.mask.shape
    cols = np.flatnonzero(pt10.known.any(0))
    assert cols.max() < 64  # unknown pixels stay unknown
    small = mask[::4, ::4][: pt10.mask.shape[0], : pt10.mask.shape[1]]
    assert dice(pt10.mask, small & pt10.known) > 0.85
    ptc = annotation_from_layers(img, mask.astype(np.uint8), "ptc", 40, annotated=True)
    assert at_optimal_magnification(ptc) is ptc  # PTC is at home at 40x
    tiny = annotation_from_layers(img[:100, :100], mask[:100, :100], "pt", 40, annotated=True)
    assert at_optimal_magnification(tiny) is tiny  # would be 25 px: too small to shrink
