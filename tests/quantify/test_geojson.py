"""QuPath GeoJSON: field names and types, valid geometry, the vocabulary's colours."""

import json
import uuid

import numpy as np
from rasterio import features
from shapely.geometry import shape

from napari_omniseg import vocab
from napari_omniseg.io.labels import LabelImage, pyramid_of
from napari_omniseg.quantify.geojson import write_geojson


def painted():
    lab = np.zeros((400, 500), np.uint8)
    yy, xx = np.mgrid[:400, :500]
    lab[(yy - 100) ** 2 + (xx - 120) ** 2 < 60 ** 2] = 3  # CAP
    lab[(yy - 100) ** 2 + (xx - 120) ** 2 < 30 ** 2] = 4  # TUFT inside it
    lab[250:300, 300:460] = 2  # PT
    lab[260:270, 320:330] = 0  # with a hole
    lab[350:358, 50:58] = 6  # a PTC
    return lab


def test_features_have_qupaths_fields_types_and_colours(tmp_path):
    lab = painted()
    n = write_geojson(tmp_path / "x.geojson", [LabelImage(pyramid_of(lab), 0.5, "painted")])
    fc = json.loads((tmp_path / "x.geojson").read_text())
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == n == 4
    colours = {t.label: [round(255 * c) for c in t.color[:3]] for t in vocab.TISSUES}
    for f in fc["features"]:
        assert f["type"] == "Feature"
        uuid.UUID(f["id"])
        assert f["geometry"]["type"] in ("Polygon", "MultiPolygon")
        assert shape(f["geometry"]).is_valid
        p = f["properties"]
        assert p["objectType"] == "detection"
        cls = p["classification"]
        assert isinstance(cls["name"], str) and cls["color"] == colours[cls["name"]]
        assert all(isinstance(c, int) for c in cls["color"])
        assert isinstance(p["measurements"], dict)
        assert all(isinstance(v, float) for v in p["measurements"].values())
    pt = next(f for f in fc["features"] if f["properties"]["classification"]["name"] == "PT")
    assert len(pt["geometry"]["coordinates"]) == 2  # the hole is kept
    assert pt["properties"]["measurements"]["Area µm^2"] == (50 * 160 - 100) * 0.25


def test_raster_round_trip_per_class(tmp_path):
    lab = painted()
    write_geojson(tmp_path / "x.geojson", [LabelImage(pyramid_of(lab), 0.5, "painted")])
    fc = json.loads((tmp_path / "x.geojson").read_text())
    value = {t.label: t.task_id + 1 for t in vocab.TISSUES}
    back = features.rasterize(
        [(shape(f["geometry"]), value[f["properties"]["classification"]["name"]])
         for f in fc["features"]], out_shape=lab.shape)
    for v in (2, 3, 4, 6):
        a, b = lab == v, back == v
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.99


def test_annotations_one_per_class(tmp_path):
    lab = np.zeros((100, 100), np.uint8)
    lab[10:20, 10:20] = 1
    lab[50:60, 50:60] = 1
    image = LabelImage([lab], 0.25, "m", tissue="ptc")
    write_geojson(tmp_path / "a.geojson", [image], object_type="annotation")
    (f,) = json.loads((tmp_path / "a.geojson").read_text())["features"]
    assert f["properties"]["objectType"] == "annotation"
    assert f["properties"]["classification"]["name"] == "PTC"
    assert f["geometry"]["type"] == "MultiPolygon"
    assert f["properties"]["measurements"]["Num objects"] == 2


def test_an_empty_mask_is_an_empty_feature_collection(tmp_path):
    n = write_geojson(tmp_path / "e.geojson",
                      [LabelImage([np.zeros((64, 64), np.uint8)], 0.25, "m", tissue="dt")])
    assert n == 0
    assert json.loads((tmp_path / "e.geojson").read_text()) == {
        "type": "FeatureCollection", "features": [],
        "properties": {"minimum object area µm^2": {"DT": 25.0}}}


def test_a_stopped_export_leaves_no_file(tmp_path):
    import pytest

    from napari_omniseg.run import Stopped

    with pytest.raises(Stopped):
        write_geojson(tmp_path / "s.geojson", [LabelImage([painted()], 0.5, "p")],
                      should_stop=lambda: True)
    assert list(tmp_path.iterdir()) == []
