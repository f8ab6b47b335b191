import dask.array as da
import numpy as np
import pytest
import tifffile

from napari_omniseg.io.export import write_mask_pyramid


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
    n = write_mask_pyramid(tmp_path / "m.ome.tif", [level0, *coarse], 0.25, tile=256)
    assert n == m.sum()
    assert len(calls) == 4  # each of the 2 x 2 chunks of level 0, once
    with tifffile.TiffFile(tmp_path / "m.ome.tif") as tif:
        got = [lv.asarray() for lv in tif.series[0].levels]
    for k, f in enumerate((1, 2, 4)):
        np.testing.assert_array_equal(got[k], m[::f, ::f])
    assert [p.name for p in tmp_path.iterdir()] == ["m.ome.tif"]  # nothing else left behind


def test_stop_leaves_no_file(tmp_path):
    m = da.zeros((2048, 2048), chunks=512, dtype=np.uint8)
    with pytest.raises(InterruptedError):
        write_mask_pyramid(tmp_path / "m.ome.tif", [m, m[::2, ::2]], 0.25,
                           should_stop=lambda: True)
    assert list(tmp_path.iterdir()) == []
