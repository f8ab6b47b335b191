"""A least-recently-used cache of same-shaped float16 tiles, kept in large blocks.

Thousands of separately allocated ~128 KB arrays that live for a long time, interleaved with
short-lived buffers of the same size, fragment the C heap: on a 16k x 16k slide the process
grew to three times the size of the tiles it held. Slots in a few large blocks (each its own
memory mapping) keep the resident size close to what is cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import numpy as np

#: Size of one block of slots.
BLOCK_BYTES = 32 * 2 ** 20


class TileCache:
    """LRU cache of ``tile_shape`` float16 arrays (or ``None`` for "nothing here").

    Parameters
    ----------
    tile_shape : tuple of int
        Shape of every cached array.
    max_bytes : float
        Memory for cached arrays; beyond it the least recently used entries are dropped.
    """

    def __init__(self, tile_shape: tuple[int, ...], max_bytes: float) -> None:
        self.tile_shape = tuple(tile_shape)
        per_tile = 2 * int(np.prod(self.tile_shape))
        self.capacity = max(16, int(max_bytes // per_tile))
        self._per_block = max(1, min(self.capacity, BLOCK_BYTES // per_tile))
        self._blocks: list[np.ndarray] = []
        self._free: list[int] = []
        self._lru: OrderedDict[Hashable, int | None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._lru

    @property
    def allocated_bytes(self) -> int:
        """Bytes of slot blocks allocated so far."""
        return sum(b.nbytes for b in self._blocks)

    def _slot(self, index: int) -> np.ndarray:
        return self._blocks[index // self._per_block][index % self._per_block]

    def put(self, key: Hashable, value: np.ndarray | None) -> None:
        """Store a copy of ``value`` (or ``None``) under ``key``."""
        with self._lock:
            old = self._lru.pop(key, None)
            if old is not None:
                self._free.append(old)
            index = None
            if value is not None:
                if not self._free:
                    n = len(self._blocks) * self._per_block
                    self._blocks.append(np.empty((self._per_block, *self.tile_shape), np.float16))
                    self._free.extend(range(n + self._per_block - 1, n - 1, -1))
                index = self._free.pop()
                self._slot(index)[...] = value
            self._lru[key] = index
            while len(self._lru) > self.capacity:
                _, dropped = self._lru.popitem(last=False)
                if dropped is not None:
                    self._free.append(dropped)

    def use(self, key: Hashable, fn: Callable[[np.ndarray | None], None]) -> bool:
        """Call ``fn`` with the cached array (a view, valid only during the call) or ``None``.

        Returns False, without calling ``fn``, when ``key`` is not cached.
        """
        with self._lock:
            if key not in self._lru:
                return False
            self._lru.move_to_end(key)
            index = self._lru[key]
            fn(None if index is None else self._slot(index))
            return True
