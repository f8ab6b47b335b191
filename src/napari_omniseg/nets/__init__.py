"""Pure torch networks: no I/O, no napari."""
