from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.fixture
def renal_masks_file() -> Path:
    """The bundled PAS sample's six masks (0.25 µm/px, 2560 x 6144)."""
    return SAMPLES / "renal_pas_masks.ome.tif"
