"""The distributed mode: the same chunks as a local run, as tasks on a dask.distributed cluster.

Each task computes and writes one output chunk straight into the shared zarr store and records it
in the ledger, so a cluster run resumes like a local one.  The block function is built once per
worker process (see :func:`napari_mbdl.engine.run.built_function`).
"""

from __future__ import annotations

import math

import numpy as np

from napari_mbdl.engine.progress import Progress
from napari_mbdl.errors import InputError


class _Opaque:
    """Keeps distributed from looking inside an argument (e.g. a dask array input)."""

    def __init__(self, value):
        self.value = value


def connect(scheduler):
    """Return ``(client, owned)`` for ``"local"``, a scheduler address, or an existing Client."""
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        return scheduler, False
    if scheduler in ("local", True):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster), True
    try:
        return Client(str(scheduler), timeout="10s"), True
    except Exception as error:
        raise InputError(f"cannot reach the dask scheduler at {scheduler!r}: {error}") from None


def describe(scheduler) -> str:
    """One line about a cluster, for ``mbdl info``."""
    client, owned = connect(scheduler)
    try:
        info = client.scheduler_info()
        workers = info.get("workers", {})
        threads = sum(w.get("nthreads", 0) for w in workers.values())
        return f"{info.get('address', '?')}: {len(workers)} workers, {threads} threads"
    finally:
        if owned:
            client.close()


def compute_and_write_chunk(op, inputs, index, plan, store_path, array_path, device, batch, position):
    """Worker task: compute one chunk with the worker's cached block function and write it."""
    import zarr

    from napari_mbdl.engine import device as devices
    from napari_mbdl.engine.run import _output_layout, built_function, compute_tiles
    from napari_mbdl.engine.store import write_chunk
    from napari_mbdl.engine.tiling import chunk_box, split_into_tiles
    from napari_mbdl.io.arrays import LabeledArray

    arrays = [LabeledArray(x.value if isinstance(x, _Opaque) else x) for x in inputs]
    device_name = devices.resolve_device(device) if op.uses_torch else "cpu"
    fn = built_function(op, device_name)
    tiled_shape, chunks, halo = plan["tiled_shape"], plan["chunks"], plan["halo"]
    tiles = split_into_tiles(index, tiled_shape, chunks, chunks, halo)
    results = compute_tiles(fn, arrays, tiles, batch, op, plan["axes"], plan["check_finite"])
    start, stop = chunk_box(index, tiled_shape, chunks)
    buffer = np.empty((*[b - a for a, b in zip(start, stop)], *op.out_core_shape), dtype=np.dtype(op.out_dtype))
    for tile, result in results.items():
        buffer[tuple(slice(a - s, b - s) for a, b, s in zip(tile.start, tile.stop, start))] = result
    slices_for, arrange = _output_layout(op, position, len(tiled_shape))
    target = zarr.open_array(array_path, mode="r+")
    write_chunk(target, store_path, index, slices_for(start, stop), arrange(buffer))
    return math.prod(b - a for a, b in zip(start, stop))


def run_distributed(scheduler, op, arrays, plan, store, todo, device, batch, position, cancel, stage, finished, total):
    """Submit one task per chunk still to do; yield progress as they complete."""
    from distributed import as_completed

    client, owned = connect(scheduler)
    futures = []
    try:
        inputs = []
        for array in arrays:
            data = array.data
            if isinstance(data, np.ndarray):
                inputs.append(client.scatter(data, broadcast=True))
            else:
                inputs.append(_Opaque(data))
        array_path = str(store.partial / "0")
        futures = [
            client.submit(
                compute_and_write_chunk, op, inputs, index, plan, str(store.partial), array_path,
                device, batch, position, pure=False,
                key=f"mbdl-chunk-{op.key}-{'.'.join(map(str, index))}-{id(store)}",
            )
            for index in todo
        ]
        for future in as_completed(futures):
            cancel.raise_if_cancelled()
            finished += future.result()
            yield Progress(stage, finished, total, "distributed")
    finally:
        pending = [f for f in futures if not f.done()]
        if pending:
            client.cancel(pending)
        if owned:
            client.close()
