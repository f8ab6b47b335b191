import itertools

import dask.array as da
import numpy as np
import pytest
import tifffile

from napari_omniseg.io.export import write_mask_pyramids
from napari_omniseg.run import Stopped


def _never(block):
    raise AssertionError("coarse levels must not be computed")


def test_mask_pyramid_computes_level_0_once_and_samples_the_rest(tmp_path):
    rng = np.random.default_rng(0)
    m = (rng.random((1500, 1300)) > 0.7).astype(np.uint8)
    calls = []

    def count(block):
        calls.append(block.shape)
        return block

    level0 = da.from_array(m, chunks=1024).map_blocks(count, dtype=np.uint8,
                                                      meta=np.empty((0, 0), np.uint8))
    coarse = [da.zeros(s, chunks=512, dtype=np.uint8).map_blocks(_never, dtype=np.uint8)
              for s in ((750, 650), (375, 325))]
    (n,) = write_mask_pyramids([(tmp_path / "m.ome.tif", [level0, *coarse], "m")], 0.25, tile=256)
    assert n == m.sum()
    assert len(calls) == 4  # each of the 2 x 2 chunks of level 0, once
    with tifffile.TiffFile(tmp_path / "m.ome.tif") as tif:
        got = [lv.asarray() for lv in tif.series[0].levels]
    for k, f in enumerate((1, 2, 4)):
        np.testing.assert_array_equal(got[k], m[::f, ::f])
    assert [p.name for p in tmp_path.iterdir()] == ["m.ome.tif"]  # nothing else left behind


def test_stop_leaves_no_file(tmp_path):
    m = da.zeros((2048, 2048), chunks=512, dtype=np.uint8)
    with pytest.raises(Stopped):
        write_mask_pyramids([(tmp_path / "m.ome.tif", [m, m[::2, ::2]], "m")], 0.25,
                            should_stop=lambda: True)
    assert list(tmp_path.iterdir()) == []


def test_several_files_are_written_band_by_band_in_step(tmp_path):

    rng = np.random.default_rng(1)
    masks = [(rng.random((1200, 1000)) > p).astype(np.uint8) for p in (0.5, 0.9)]
    order = []

    def levels(k):
        def log(block, block_info=None):
            order.append((block_info[0]["array-location"][0][0], k))
            return block
        lv0 = da.from_array(masks[k], chunks=512).map_blocks(log, dtype=np.uint8)
        return [lv0, da.zeros((600, 500), chunks=512, dtype=np.uint8)]

    seen = []
    counts = write_mask_pyramids([(tmp_path / f"{k}.ome.tif", levels(k), f"m{k}")
                                  for k in range(2)], 0.5, tile=256,
                                 progress=lambda d, t, m: seen.append((d, t)))
    assert counts == [int(m.sum()) for m in masks]
    # every band of the first file, then the same band of the second, and so on
    rows = [r for r, _ in order]
    assert rows == sorted(rows) and {k for _, k in order} == {0, 1}
    for k, m in enumerate(masks):
        with tifffile.TiffFile(tmp_path / f"{k}.ome.tif") as tif:
            got = [lv.asarray() for lv in tif.series[0].levels]
        np.testing.assert_array_equal(got[0], m)
        np.testing.assert_array_equal(got[1], m[::2, ::2])
    assert seen[-1][0] == seen[-1][1] and all(b[0] > a[0] for a, b in itertools.pairwise(seen))


def test_a_failing_file_leaves_no_file_behind(tmp_path):

    def boom(block):
        raise RuntimeError("network failed")

    good = da.zeros((1024, 1024), chunks=512, dtype=np.uint8)
    bad = good.map_blocks(boom, dtype=np.uint8)
    with pytest.raises(RuntimeError, match="network failed"):
        write_mask_pyramids([(tmp_path / "a.ome.tif", [good], "a"),
                             (tmp_path / "b.ome.tif", [bad], "b")], 0.5)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError):  # a writer that cannot write stops them all
        write_mask_pyramids([(tmp_path / "a.ome.tif", [good], "a"),
                             (tmp_path / "missing" / "b.ome.tif", [good], "b")], 0.5)
    assert list(tmp_path.iterdir()) == []
