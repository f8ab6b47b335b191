"""Dock widgets (Qt and napari live here and in the thin reader/sample modules only)."""
