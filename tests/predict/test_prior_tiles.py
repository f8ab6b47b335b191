"""The anatomy prior drawn per tile: the same pixels as one pass, each tile drawn once."""

from __future__ import annotations

import threading

import numpy as np

from napari_omniseg.nets.condition import masks_from_labels
from napari_omniseg.predict.prior_tiles import PriorTiles, read_window, tile_side
from napari_omniseg.simulate.mask_prior import prior_halo, render_prior

MPP = 2.0  # 5x: a small halo keeps the test quick


def labels_with_structures(h: int = 150, w: int = 170) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    lab = np.zeros((h, w), np.uint8)
    lab[(yy - 60) ** 2 + (xx - 70) ** 2 < 40 ** 2] = 3
    lab[(yy - 60) ** 2 + (xx - 70) ** 2 < 25 ** 2] = 4
    lab[100:140, 10:160] = 2
    lab[110:130, 120:150] = 1
    return lab


def test_windows_match_the_prior_of_the_whole_image():
    lab = labels_with_structures()
    c = prior_halo(MPP)
    # the whole image with its context all round, drawn in one pass
    whole = render_prior(masks_from_labels(read_window(lab, -c - 20, -c - 20, 190 + 2 * c,
                                                       210 + 2 * c), "m") > 0,
                         "pas", MPP, 3, -c - 20, -c - 20)[c:-c, c:-c]
    tiles = PriorTiles(lab, "pas", MPP, 3, margin=20)
    tiles.tile = 64  # several tiles across the image and its margin
    for y0, x0, h, w in [(-20, -20, 190, 210), (5, 7, 33, 120), (100, 150, 40, 30)]:
        got = tiles.window(y0, x0, h, w)
        np.testing.assert_array_equal(got, whole[y0 + 20:y0 + 20 + h, x0 + 20:x0 + 20 + w])


def test_each_tile_is_drawn_once_by_concurrent_readers(monkeypatch):
    lab = labels_with_structures()
    tiles = PriorTiles(lab, "pas", MPP, 0)
    tiles.tile = 96
    drawn: list = []
    draw = tiles._draw

    def counting(ty: int, tx: int) -> np.ndarray:
        drawn.append((ty, tx))
        return draw(ty, tx)

    monkeypatch.setattr(tiles, "_draw", counting)
    threads = [threading.Thread(target=tiles.window, args=(0, 0, 150, 170)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(drawn) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_tiles_split_a_span_evenly():
    assert tile_side(2304) == 1152
    assert tile_side(1000) == 1000
    assert tile_side(4000, largest=1536) == 1334
    assert read_window(np.ones((4, 4), np.uint8), -1, 2, 3, 4).sum() == 4
