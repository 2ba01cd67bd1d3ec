import math

from napari_mbdl.engine.tiling import chunk_indices, plan_tile, shrink_tile, split_into_tiles


def test_tiles_cover_each_chunk_exactly_once():
    shape, chunk, tile, halo = (10, 37), (4, 16), (2, 7), (0, 3)
    seen = set()
    for index in chunk_indices(shape, chunk):
        for t in split_into_tiles(index, shape, chunk, tile, halo):
            for y in range(t.start[0], t.stop[0]):
                for x in range(t.start[1], t.stop[1]):
                    assert (y, x) not in seen
                    seen.add((y, x))
            # halo is clipped at the border, never beyond
            assert all(0 <= r for r in t.read_start)
            assert all(r <= n for r, n in zip(t.read_stop, shape))
    assert len(seen) == math.prod(shape)


def test_plan_tile_respects_budget_and_splits_halo_free_axes_first():
    tile = plan_tile((100, 512, 512), (0, 8, 8), in_core_elements=1, out_core_elements=1,
                     bytes_per_voxel=4, budget_bytes=4 * 300 * 300, out_itemsize=4)
    assert tile[0] == 1  # time axis split before the spatial ones
    assert (tile[1] + 16) * (tile[2] + 16) * 4 <= 4 * 300 * 300
    whole = plan_tile((4, 64, 64), (0, 8, 8), in_core_elements=1, out_core_elements=1,
                      bytes_per_voxel=4, budget_bytes=1e9, out_itemsize=4)
    assert whole == (4, 64, 64)


def test_shrink_tile_stops_at_floor():
    assert shrink_tile((64, 64), (16, 16)) == (32, 64)
    assert shrink_tile((16, 16), (16, 16)) is None
