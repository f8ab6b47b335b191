"""Measurements and vector export of masks: polygons, QuPath GeoJSON, object and tissue
statistics, Visium spots."""
