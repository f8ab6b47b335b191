"""Conditions: painted values, anatomy stated once, what is known."""

import numpy as np
import pytest

from napari_omniseg.errors import OmnisegInputError
from napari_omniseg.nets.condition import (
    CONDITION_CHANNELS,
    condition_planes,
    masks_from_labels,
)


def test_tuft_is_also_capsule():
    lab = np.zeros((10, 10), np.uint8)
    lab[2:4, 2:4] = 4  # TUFT
    lab[6:8, 6:8] = 6  # PTC
    m = masks_from_labels(lab)
    assert m[3, 2, 2] == 1 and m[2, 2, 2] == 1  # tuft and capsule
    assert m[5, 6, 6] == 1 and m[2, 6, 6] == 0
    assert m.sum() == 4 + 4 + 4


@pytest.mark.parametrize("bad", [7, 255])
def test_values_outside_the_vocabulary_are_one_sentence(bad):
    lab = np.zeros((10, 10), np.uint8)
    lab[0, 0] = bad
    with pytest.raises(OmnisegInputError, match="1 DT, 2 PT"):
        masks_from_labels(lab, "my mask")


def test_unknown_tissues_say_nothing():
    masks = np.ones((6, 4, 4), np.uint8)
    known = np.zeros(6, bool)
    known[5] = True
    c = condition_planes(masks, known, "pas", 40)
    assert c.shape == (CONDITION_CHANNELS, 4, 4)
    assert c[:5].sum() == 0 and c[5].sum() == 16  # only PTC is said
    assert c[6:11].sum() == 0 and c[11].sum() == 16
    assert c[12 + 1].all() and c[12:16].sum() == 16  # PAS
    assert c[16 + 3].all() and c[16:20].sum() == 16  # 40x
