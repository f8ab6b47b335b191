"""Band-by-band tracing: every object once, whole, exact, whatever the band size."""

import numpy as np
import pytest
from rasterio import features
from scipy import ndimage

from napari_omniseg.quantify.polygons import trace_objects
from napari_omniseg.run import Stopped


def blobs(shape=(300, 260), seed=0, values=(1,)):
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, np.uint8)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for k in range(25):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        r = rng.integers(3, 40)
        ring = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        if k % 4 == 0:  # rings leave holes
            ring &= (yy - cy) ** 2 + (xx - cx) ** 2 >= (r // 2) ** 2
        out[ring] = values[k % len(values)]
    return out


@pytest.mark.parametrize("band_rows", [7, 64, 1000])
def test_objects_match_connected_components_at_any_band_size(band_rows):
    mask = blobs()
    objs = list(trace_objects(mask, band_rows=band_rows))
    labels, n = ndimage.label(mask)
    assert len(objs) == n
    assert sorted(o.pixels for o in objs) == sorted(np.bincount(labels.ravel())[1:].tolist())
    assert all(o.polygon.is_valid and o.polygon.geom_type == "Polygon" for o in objs)
    back = features.rasterize([o.polygon for o in objs], out_shape=mask.shape)
    np.testing.assert_array_equal(back, mask)  # pixel edges: the raster comes back exactly


def test_touching_objects_of_different_values_stay_apart():
    mask = blobs(values=(1, 2, 3))
    objs = list(trace_objects(mask, band_rows=16))
    for v in (1, 2, 3):
        _, n = ndimage.label(mask == v)
        assert sum(o.value == v for o in objs) == n
    back = features.rasterize([(o.polygon, o.value) for o in objs], out_shape=mask.shape)
    np.testing.assert_array_equal(back, mask)


def test_a_region_cuts_objects_at_its_border():
    from shapely.geometry import box

    mask = np.ones((100, 100), np.uint8)
    objs = list(trace_objects(mask, region=box(10, 20, 50, 90), band_rows=30))
    assert len(objs) == 1 and objs[0].pixels == 40 * 70


def test_stop_and_progress():
    mask = blobs()
    seen = []
    list(trace_objects(mask, band_rows=100, progress=lambda d, t, m: seen.append((d, t))))
    assert seen[-1] == (3, 3)
    with pytest.raises(Stopped):
        list(trace_objects(mask, band_rows=100, should_stop=lambda: True))


def test_empty_mask_has_no_objects():
    assert list(trace_objects(np.zeros((50, 60), np.uint8))) == []
