"""Fast zarr-backed row reads: whole chunks, decoded once, kept in a bounded LRU cache.

Reading a batch through zarr's slicing costs ~0.3-0.5 ms of Python/async machinery per chunk touched,
against ~5-100 us to read and Blosc-decode that chunk's bytes, and a random batch of image windows
touches hundreds of chunks. `ChunkReader` therefore

  1. maps the batch's rows to chunks and reads each missing chunk once (for the layout `DemoStore`
     writes, a local file decoded straight by Blosc; any other layout goes through zarr slicing),
  2. keeps decoded chunks in one preallocated slab of fixed-size slots, bounded in bytes, evicting the
     least recently used slots that the current batch does not need,
  3. gathers the rows with one fancy index into the slab, the same operation the in-memory path does,
     so a warm cache reads nearly as fast as memory and the values are bit-identical.

Each process (DataLoader worker) holds its own cache; the slab is dropped when a reader is pickled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import zarr
from numcodecs import Blosc
from zarr.codecs import BloscCodec, BytesCodec
from zarr.storage import LocalStore

MB = 1 << 20
# Per process (each DataLoader worker has its own). Enough for a few thousand 84x84 frame pairs; a store
# larger than memory sets its own (`cache_mb`), and 0 turns caching off (chunks are still read whole).
DEFAULT_CACHE_MB = 1024


class _ZarrChunks:
    """Whole chunks (along axis 0) of a zarr array, through zarr's public slicing (any layout)."""

    def __init__(self, array: zarr.Array) -> None:
        self.array = array
        self.rows_per_chunk = int(array.chunks[0])
        self.item_shape = tuple(array.shape[1:])

    def read(self, chunk_ids: np.ndarray) -> np.ndarray:
        r = self.rows_per_chunk
        out = np.zeros((len(chunk_ids), r, *self.item_shape), dtype=self.array.dtype)
        # One zarr call per run of consecutive chunks amortizes its per-call overhead.
        breaks = np.flatnonzero(np.diff(chunk_ids) != 1) + 1
        for run in np.split(np.arange(len(chunk_ids)), breaks):
            lo, hi = int(chunk_ids[run[0]]) * r, min((int(chunk_ids[run[-1]]) + 1) * r, self.array.shape[0])
            block = np.asarray(self.array[lo:hi])
            out[run[0]: run[-1] + 1].reshape(-1, *self.item_shape)[: hi - lo] = block
        return out


class _LocalBloscChunks(_ZarrChunks):
    """The layout `DemoStore` writes (local files, bytes + Blosc, no sharding): read and decode directly."""

    def __init__(self, array: zarr.Array) -> None:
        super().__init__(array)
        self._dir = Path(array.store.root) / array.path
        self._blosc = Blosc()
        self._fill = array.metadata.fill_value
        self._tail = (0,) * len(self.item_shape)
        self._chunk_shape = tuple(array.chunks)

    @staticmethod
    def supports(array: zarr.Array) -> bool:
        meta = array.metadata
        codecs = getattr(meta, "codecs", ())
        return (
            isinstance(array.store, LocalStore)
            and getattr(meta, "zarr_format", 0) == 3
            and len(codecs) == 2
            and isinstance(codecs[0], BytesCodec)
            and getattr(codecs[0].endian, "value", codecs[0].endian) in (None, "little")
            and isinstance(codecs[1], BloscCodec)
            and tuple(array.chunks[1:]) == tuple(array.shape[1:])  # one chunk across the item axes
            and np.dtype(array.dtype).byteorder in ("=", "<", "|")
            and np.little_endian
        )

    def read(self, chunk_ids: np.ndarray) -> np.ndarray:
        out = np.empty((len(chunk_ids), *self._chunk_shape), dtype=self.array.dtype)
        for i, c in enumerate(chunk_ids.tolist()):
            path = self._dir / self.array.metadata.encode_chunk_key((c, *self._tail))
            try:
                raw = path.read_bytes()
            except FileNotFoundError:  # zarr does not write chunks that are all fill value
                out[i] = self._fill
                continue
            out[i] = np.frombuffer(self._blosc.decode(raw), dtype=self.array.dtype).reshape(self._chunk_shape)
        return out


class ChunkReader:
    """Rows of one zarr array by index, through a cache of decoded chunks of at most `budget_bytes`."""

    def __init__(self, array: zarr.Array, budget_bytes: int) -> None:
        self._source = _LocalBloscChunks(array) if _LocalBloscChunks.supports(array) else _ZarrChunks(array)
        self.rows_per_chunk = self._source.rows_per_chunk
        self.item_shape = self._source.item_shape
        self.dtype = np.dtype(array.dtype)
        self.n_chunks = -(-int(array.shape[0]) // self.rows_per_chunk)
        chunk_bytes = self.rows_per_chunk * int(np.prod(self.item_shape, dtype=np.int64)) * self.dtype.itemsize
        self.n_slots = int(min(self.n_chunks, max(0, budget_bytes) // max(chunk_bytes, 1)))
        self.direct = isinstance(self._source, _LocalBloscChunks)
        self.chunks_read = 0  # decoded chunks since creation (for tests and benchmarks)
        self._reset()

    def _reset(self) -> None:
        # np.empty does not touch the pages: memory grows only as slots fill.
        self._slab = np.empty((self.n_slots, self.rows_per_chunk, *self.item_shape), dtype=self.dtype)
        self._slot_of_chunk = np.full(self.n_chunks, -1, dtype=np.int64)
        self._chunk_of_slot = np.full(self.n_slots, -1, dtype=np.int64)
        self._last_used = np.full(self.n_slots, -1, dtype=np.int64)  # batch counter when last needed
        self._tick = 0

    @property
    def array(self) -> zarr.Array:
        """The zarr array read (for naming a damaged chunk)."""
        return self._source.array

    @property
    def nbytes(self) -> int:
        """Bytes the cache may hold (its slab), never more than the budget it was given."""
        return int(self._slab.nbytes)

    @property
    def cached_chunks(self) -> int:
        return int((self._chunk_of_slot >= 0).sum())

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for k in ("_slab", "_slot_of_chunk", "_chunk_of_slot", "_last_used"):
            state.pop(k)  # a worker starts with an empty cache of its own
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def take(self, rows: np.ndarray) -> np.ndarray:
        """`array[rows]` for an integer array of any shape: result shape `(*rows.shape, *item_shape)`."""
        rows = np.asarray(rows, dtype=np.int64)
        flat = rows.ravel()
        chunk, offset = np.divmod(flat, self.rows_per_chunk)
        self._tick += 1
        slot = self._slot_of_chunk[chunk]
        miss = slot < 0
        if not miss.any():
            self._last_used[slot] = self._tick
            return self._slab[slot, offset].reshape(*rows.shape, *self.item_shape)
        out = np.empty((len(flat), *self.item_shape), dtype=self.dtype)
        hit = ~miss
        self._last_used[slot[hit]] = self._tick
        out[hit] = self._slab[slot[hit], offset[hit]]
        need = np.unique(chunk[miss])
        fresh = self._source.read(need)
        self.chunks_read += len(need)
        out[miss] = fresh[np.searchsorted(need, chunk[miss]), offset[miss]]
        self._insert(need, fresh)
        return out.reshape(*rows.shape, *self.item_shape)

    def _insert(self, chunk_ids: np.ndarray, decoded: np.ndarray) -> None:
        # Victims: free slots (last_used -1) first, then the least recently used; never a slot this
        # batch needed (last_used == tick), so a batch larger than the cache caches what fits.
        free = np.flatnonzero(self._last_used < self._tick)
        k = min(len(free), len(chunk_ids))
        if k == 0:
            return
        victims = free[np.argpartition(self._last_used[free], k - 1)[:k]] if k < len(free) else free
        old = self._chunk_of_slot[victims]
        self._slot_of_chunk[old[old >= 0]] = -1
        self._slab[victims] = decoded[:k]
        self._chunk_of_slot[victims] = chunk_ids[:k]
        self._slot_of_chunk[chunk_ids[:k]] = victims
        self._last_used[victims] = self._tick


def _cached_size(array: zarr.Array) -> int:
    """Bytes a cache needs to hold every chunk of `array` (its edge chunk is stored full size)."""
    rows = int(array.chunks[0])
    n_chunks = -(-int(array.shape[0]) // rows)
    return n_chunks * rows * int(np.prod(array.shape[1:], dtype=np.int64)) * np.dtype(array.dtype).itemsize


def split_budget(sizes: Mapping[str, int], budget_bytes: int) -> dict[str, int]:
    """Water-filling: the smallest arrays (low-dim keys) get all they need first, the largest (cameras)
    share what is left equally, and the shares never add up to more than the budget."""
    out, left = {}, max(0, int(budget_bytes))
    order = sorted(sizes, key=lambda k: sizes[k])
    for i, k in enumerate(order):
        out[k] = min(int(sizes[k]), left // (len(order) - i))
        left -= out[k]
    return out


def chunk_readers(arrays: Mapping[str, zarr.Array], cache_mb: float) -> dict[str, ChunkReader]:
    """One reader per array, sharing a cache budget of `cache_mb` MiB (see `split_budget`)."""
    sizes = {k: _cached_size(a) for k, a in arrays.items()}
    shares = split_budget(sizes, int(max(0.0, float(cache_mb)) * MB))
    return {k: ChunkReader(a, shares[k]) for k, a in arrays.items()}


def cache_nbytes(readers: Sequence[ChunkReader] | Mapping[str, ChunkReader]) -> int:
    values = readers.values() if isinstance(readers, Mapping) else readers
    return sum(r.nbytes for r in values)
