"""Readers for slides and volumes; core code, no napari."""
