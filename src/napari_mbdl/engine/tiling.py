"""Tile geometry: chunk grids, tiles with halos, and tile sizes from a memory budget.

Vocabulary: a *chunk* is the unit written to the output store (and the unit of resume); a *tile*
is the unit of computation, a sub-box of a chunk (usually the whole chunk; smaller after an
out-of-memory back-off).  A tile is read with a *halo* of context around it, clipped at the array
border (never padded), and the halo is cropped away from the result.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

Box = tuple[tuple[int, ...], tuple[int, ...]]  # (start, stop) per tiled axis


@dataclass(frozen=True)
class Tile:
    """A tile to compute: its output box, the halo-extended box to read, and where to crop."""

    chunk_index: tuple[int, ...]
    start: tuple[int, ...]
    stop: tuple[int, ...]
    read_start: tuple[int, ...]
    read_stop: tuple[int, ...]

    @property
    def read_shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.read_start, self.read_stop))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.start, self.stop))

    def crop(self) -> tuple[slice, ...]:
        """Slices that take this tile's own box out of its halo-extended result."""
        return tuple(
            slice(a - r, a - r + (b - a)) for a, b, r in zip(self.start, self.stop, self.read_start)
        )

    def read_slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.read_start, self.read_stop))


def n_chunks(shape: Sequence[int], chunk: Sequence[int]) -> tuple[int, ...]:
    return tuple(max(1, math.ceil(s / c)) for s, c in zip(shape, chunk))


def chunk_box(index: Sequence[int], shape: Sequence[int], chunk: Sequence[int]) -> Box:
    start = tuple(i * c for i, c in zip(index, chunk))
    stop = tuple(min(a + c, s) for a, c, s in zip(start, chunk, shape))
    return start, stop


def chunk_indices(shape: Sequence[int], chunk: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Chunk indices in C order (last axis fastest), so neighbouring tiles stream together."""
    return itertools.product(*(range(n) for n in n_chunks(shape, chunk)))


def split_into_tiles(
    index: tuple[int, ...],
    shape: Sequence[int],
    chunk: Sequence[int],
    tile: Sequence[int],
    halo: Sequence[int],
) -> list[Tile]:
    """The tiles (with halo read boxes) that cover one chunk."""
    start, stop = chunk_box(index, shape, chunk)
    ranges = []
    for a, b, t in zip(start, stop, tile):
        ranges.append([(s, min(s + t, b)) for s in range(a, b, t)])
    tiles = []
    for spans in itertools.product(*ranges):
        t_start = tuple(s for s, _ in spans)
        t_stop = tuple(e for _, e in spans)
        read_start = tuple(max(0, s - h) for s, h in zip(t_start, halo))
        read_stop = tuple(min(n, e + h) for e, h, n in zip(t_stop, halo, shape))
        tiles.append(Tile(tuple(index), t_start, t_stop, read_start, read_stop))
    return tiles


def plan_tile(
    shape: Sequence[int],
    halo: Sequence[int],
    *,
    in_core_elements: int,
    out_core_elements: int,
    bytes_per_voxel: float,
    budget_bytes: float,
    out_itemsize: int,
    max_chunk_bytes: int = 64 * 2**20,
    min_tile: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """Largest tile whose working set fits the budget and whose output chunk stays reasonable.

    Axes without a halo are shrunk first (splitting them costs nothing), largest first; then the
    halo axes, halving the largest, never below ``min_tile`` (default: twice the halo, at least 1).
    """
    tile = [int(s) for s in shape]
    floor = [max(1, 2 * h) if min_tile is None else max(1, m) for h, m in zip(halo, min_tile or halo)]
    floor = [min(f, s) for f, s in zip(floor, shape)]

    def working_set(t: Sequence[int]) -> float:
        read = math.prod(n + 2 * h for n, h in zip(t, halo))
        return read * max(in_core_elements, 1) * bytes_per_voxel

    def chunk_bytes(t: Sequence[int]) -> float:
        return math.prod(t) * max(out_core_elements, 1) * out_itemsize

    def too_big(t: Sequence[int]) -> bool:
        return working_set(t) > budget_bytes or chunk_bytes(t) > max_chunk_bytes

    for group in ([a for a, h in enumerate(halo) if h == 0], [a for a, h in enumerate(halo) if h > 0]):
        while too_big(tile):
            shrinkable = [a for a in group if tile[a] > floor[a]]
            if not shrinkable:
                break
            axis = max(shrinkable, key=lambda a: tile[a])
            tile[axis] = max(floor[axis], math.ceil(tile[axis] / 2))
    return tuple(tile)


def shrink_tile(tile: Sequence[int], floor: Sequence[int]) -> tuple[int, ...] | None:
    """Halve the largest axis that can still shrink; None when nothing can."""
    shrinkable = [a for a, (t, f) in enumerate(zip(tile, floor)) if t > max(f, 1)]
    if not shrinkable:
        return None
    axis = max(shrinkable, key=lambda a: tile[a])
    new = list(tile)
    new[axis] = max(max(floor[axis], 1), math.ceil(tile[axis] / 2))
    return tuple(new)
