import numpy as np

from napari_omniseg.predict.tile_cache import TileCache


def test_lru_slots_are_reused_and_values_kept():
    c = TileCache((2, 4, 4), max_bytes=16 * 2 * 32)  # room for 16 tiles
    assert c.capacity == 16
    for k in range(40):
        c.put(k, np.full((2, 4, 4), k, np.float16) if k % 3 else None)
    assert len(c) == 16 and 0 not in c and 39 in c
    assert c.allocated_bytes <= 16 * 2 * 32  # slots were reused, not added
    seen = []
    assert c.use(38, lambda p: seen.append(float(p.mean())))
    assert c.use(39, lambda p: seen.append(p))
    assert seen == [38.0, None] and not c.use(0, seen.append)


def test_recently_used_entries_survive():
    c = TileCache((1, 2, 2), max_bytes=16 * 8)
    for k in range(16):
        c.put(k, np.zeros((1, 2, 2)))
    c.use(0, lambda p: None)  # touch the oldest
    c.put(99, np.ones((1, 2, 2)))
    assert 0 in c and 1 not in c
