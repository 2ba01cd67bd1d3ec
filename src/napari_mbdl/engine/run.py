"""The streaming engine: map a block operation over tiles of arrays far larger than memory.

``run_blocks`` is a generator: it yields :class:`Progress` between tiles (so a napari worker can
show progress and stop it), checks a :class:`CancelToken`, and returns a :class:`RunResult`.
The leading ``n_tiled`` axes of every input are tiled (with a halo of context), the remaining
*core* axes are passed whole.  Reads, compute and writes overlap: chunks are written by a small
thread pool while the next tiles are computed.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_mbdl.engine import device as devices
from napari_mbdl.engine.progress import CallState, CancelToken, Progress, in_call
from napari_mbdl.engine.store import MemoryOutput, ZarrOutput, check_replaceable, write_tiff_from_zarr
from napari_mbdl.engine.tiling import Tile, chunk_box, chunk_indices, plan_tile, shrink_tile, split_into_tiles
from napari_mbdl.errors import DeviceMemoryError, InputError, MBDLError
from napari_mbdl.io.arrays import LabeledArray, open_array

log = logging.getLogger(__name__)

BlockFunction = Callable[..., np.ndarray]
_GENERIC_AXES = "abdefghijklmnopqrsuvw"
# While one call of a block function runs longer than this, progress is still reported this often
# (and Cancel is noticed), so a big tile on a CPU never leaves the progress bar frozen for minutes.
HEARTBEAT_SECONDS = 1.0


@dataclass(frozen=True)
class Operation:
    """A block operation for the engine.

    Parameters
    ----------
    key : str
        Identifies the operation and its parameters; a partial output is resumed only by the
        same key.
    make : callable
        ``make(device) -> fn``; builds the block function once per process (load models here).
        Must be picklable for the distributed mode (a module-level function or ``functools.partial``).
        ``fn(*blocks)`` receives one array per input, shaped ``(B, *tile, *core_in)``, and returns
        ``(B, *tile, *out_core_shape)``.
    halo : tuple of int
        Context in input pixels per tiled axis.
    out_core_shape : tuple of int
        Shape of the output's non-tiled axes.
    out_dtype : str
    bytes_per_voxel : float
        Peak working memory per input element of a tile, used to size tiles.
    uses_torch : bool
        Choose a torch device (cuda > mps > cpu) and back off on out-of-memory.
    min_tile : tuple of int, optional
        Smallest tile the operation accepts (default: twice the halo).
    """

    key: str
    make: Callable[[str], BlockFunction]
    halo: tuple[int, ...] = ()
    out_core_shape: tuple[int, ...] = ()
    out_dtype: str = "float32"
    bytes_per_voxel: float = 16.0
    uses_torch: bool = False
    min_tile: tuple[int, ...] | None = None


@dataclass
class RunResult:
    """What a run produced and how."""

    array: Any
    path: Path | None
    axes: str
    scale: tuple[float, ...]
    units: tuple[str | None, ...]
    tile: tuple[int, ...]
    chunks: tuple[int, ...]
    device: str
    chunks_total: int
    chunks_computed: int
    chunks_resumed: int
    out_of_memory_backoffs: int = 0
    seconds: float = 0.0


# Built block functions, one per (operation key, device) in each process: the model loads once
# per process, and once per worker in the distributed mode.
_FUNCTIONS: dict[tuple[str, str], BlockFunction] = {}


def built_function(op: Operation, device: str) -> BlockFunction:
    key = (op.key, device)
    if key not in _FUNCTIONS:
        _FUNCTIONS[key] = op.make(device)
    return _FUNCTIONS[key]


def forget_built_functions() -> None:
    """Drop cached models (frees their memory)."""
    _FUNCTIONS.clear()
    devices.release_device_memory()


def _prepare_inputs(inputs, n_tiled: int | None, allow_missing_chunks: bool) -> tuple[list[LabeledArray], int]:
    if isinstance(inputs, (list, tuple)):
        arrays = [open_array(x, allow_missing_chunks=allow_missing_chunks) for x in inputs]
    else:
        arrays = [open_array(inputs, allow_missing_chunks=allow_missing_chunks)]
    if not arrays:
        raise InputError("no input was given")
    n_tiled = arrays[0].ndim if n_tiled is None else int(n_tiled)
    if not 1 <= n_tiled <= arrays[0].ndim:
        raise InputError(f"cannot tile {n_tiled} axes of an array with {arrays[0].ndim} axes")
    tiled_shape = arrays[0].shape[:n_tiled]
    for i, array in enumerate(arrays[1:], start=1):
        if array.shape[:n_tiled] != tiled_shape:
            raise InputError(
                f"input {i + 1} has shape {array.shape}, which does not match the first input's "
                f"{tiled_shape} on the tiled axes"
            )
    return arrays, n_tiled


def _where(axes: str, tile: Tile) -> str:
    return ", ".join(f"{a}={s}:{e}" for a, s, e in zip(axes, tile.read_start, tile.read_stop))


def _read(array: LabeledArray, tile: Tile, index: int, axes: str, check_finite: bool) -> np.ndarray:
    try:
        block = np.asarray(array.data[tile.read_slices()])
    except MBDLError:
        raise
    except Exception as error:
        raise InputError(
            f"could not read input {index + 1} at {_where(axes, tile)} (corrupt or truncated chunk?): {error}"
        ) from None
    if check_finite and block.dtype.kind == "f" and not np.isfinite(block).all():
        raise InputError(
            f"input {index + 1} contains NaN or infinite values (at {_where(axes, tile)}); replace or mask them first"
        )
    return block


def compute_tiles(
    fn: BlockFunction,
    arrays: Sequence[LabeledArray],
    tiles: Sequence[Tile],
    batch: int,
    op: Operation,
    axes: str,
    check_finite: bool,
    reader: ThreadPoolExecutor | None = None,
) -> dict[Tile, np.ndarray]:
    """Run ``fn`` on tiles, batched by identical read shape; return each tile's cropped result."""
    groups: dict[tuple[int, ...], list[Tile]] = {}
    for tile in tiles:
        groups.setdefault(tile.read_shape, []).append(tile)
    results: dict[Tile, np.ndarray] = {}
    for read_shape, group in groups.items():
        for start in range(0, len(group), batch):
            members = group[start : start + batch]
            blocks = []
            for i, array in enumerate(arrays):
                if reader is not None and len(members) > 1:
                    parts = list(reader.map(lambda t, a=array, i=i: _read(a, t, i, axes, check_finite), members))
                else:
                    parts = [_read(array, t, i, axes, check_finite) for t in members]
                blocks.append(np.stack(parts))
            out = np.asarray(fn(*blocks))
            expected = (len(members), *read_shape, *op.out_core_shape)
            if out.shape != expected:
                raise RuntimeError(f"operation {op.key!r} returned shape {out.shape}, expected {expected}")
            for member, result in zip(members, out):
                results[member] = result[member.crop()]
    return results


def _sample_digest(array: LabeledArray) -> str:
    """A cheap digest of a few corners and the centre of an input.

    Part of the resume fingerprint, so that a partial result computed from other data of the same
    shape (an edited input) is not resumed.  It reads only a few small windows.
    """
    import hashlib

    digest = hashlib.sha1()
    shape = array.shape
    windows = [
        tuple(slice(0, min(n, 4)) for n in shape),
        tuple(slice(max(0, n // 2 - 2), n // 2 + 2) for n in shape),
        tuple(slice(max(0, n - 4), n) for n in shape),
    ]
    for window in windows:
        try:
            digest.update(np.ascontiguousarray(np.asarray(array.data[window])).tobytes())
        except Exception:  # unreadable windows are reported when the tile is read
            digest.update(b"?")
    return digest.hexdigest()[:16]


def _output_layout(op: Operation, position: str, n_tiled: int):
    n_core = len(op.out_core_shape)
    if position not in ("first", "last"):
        raise ValueError("out_core_position must be 'first' or 'last'")

    def slices_for(box_start, box_stop):
        tiled = tuple(slice(a, b) for a, b in zip(box_start, box_stop))
        core = (slice(None),) * n_core
        return core + tiled if position == "first" else tiled + core

    def arrange(block: np.ndarray) -> np.ndarray:
        if position == "first" and n_core:
            return np.moveaxis(block, tuple(range(n_tiled, n_tiled + n_core)), tuple(range(n_core)))
        return block

    return slices_for, arrange


def run_blocks(
    op: Operation,
    inputs,
    *,
    n_tiled: int | None = None,
    axes: str | None = None,
    tile: Sequence[int] | None = None,
    out: str | Path | None = None,
    out_core_axes: str = "",
    out_core_position: str = "last",
    scale: Sequence[float] | None = None,
    units: Sequence[str | None] | None = None,
    overwrite: bool = False,
    device: str = "auto",
    memory_budget: str | int | None = None,
    max_batch: int = 8,
    scheduler=None,
    cancel: CancelToken | None = None,
    check_finite: bool = True,
    allow_missing_chunks: bool = False,
    stage: str | None = None,
    attrs: dict | None = None,
) -> Generator[Progress, None, RunResult]:
    """Map ``op`` over tiles of ``inputs``; a generator yielding :class:`Progress`, returning :class:`RunResult`.

    Parameters
    ----------
    op : Operation
    inputs : array-like, path, or list of them
        numpy, dask, zarr (v2/v3, OME-Zarr), TIFF; all share the leading ``n_tiled`` axes.
    n_tiled : int, optional
        How many leading axes to tile (default: all axes of the first input).
    axes : str, optional
        Axis letters of the first input (default: from its metadata, else generic).
    tile : sequence of int, optional
        Tile shape over the tiled axes (default: planned from the memory budget).
    out : path, optional
        ``None`` keeps the result in memory (numpy); ``*.zarr`` writes OME-Zarr chunk by chunk
        and resumes an interrupted run; ``*.tif``/``*.tiff`` streams to zarr, then to TIFF.
    out_core_axes, out_core_position : str
        Letters of the output's core axes, and whether they come before or after the tiled axes.
    scale, units : sequence, optional
        Physical step and unit per output axis (default: carried from the input's tiled axes).
    overwrite : bool
        Replace an existing output of the same kind, only once the new one is complete.
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (torch operations only).
    memory_budget : str or int, optional
        Bytes (or ``"2GB"``) to plan tiles for.
    max_batch : int
        Most tiles per call of the block function.
    scheduler : None, "local", address or distributed.Client
        Run on a dask.distributed cluster.
    cancel : CancelToken, optional
        Checked between tiles, and inside a block function wherever it calls
        :func:`~napari_mbdl.engine.progress.checkpoint`; finished chunks of a zarr output are kept
        for resuming.
    check_finite : bool
        Refuse NaN/Inf in float inputs.
    allow_missing_chunks : bool
        Accept zarr inputs that were written sparsely.
    """
    started = time.perf_counter()
    cancel = cancel or CancelToken()
    arrays, n_tiled = _prepare_inputs(inputs, n_tiled, allow_missing_chunks)
    first = arrays[0]
    in_axes = axes or first.axes or _GENERIC_AXES[: first.ndim]
    if len(in_axes) != first.ndim:
        raise InputError(f"axes {in_axes!r} do not match the input's {first.ndim} dimensions {first.shape}")
    tiled_axes = in_axes[:n_tiled]
    tiled_shape = first.shape[:n_tiled]
    halo = tuple(op.halo) if op.halo else (0,) * n_tiled
    if len(halo) != n_tiled:
        raise ValueError(f"operation {op.key!r} has a halo for {len(halo)} axes; {n_tiled} are tiled")
    if len(out_core_axes) not in (0, len(op.out_core_shape)):
        raise ValueError("out_core_axes must name every output core axis")
    core_letters = out_core_axes or "klmnopqrs"[: len(op.out_core_shape)]
    out_axes = core_letters + tiled_axes if out_core_position == "first" else tiled_axes + core_letters

    if scale is None:
        tiled_scale = tuple(first.scale[:n_tiled]) if first.scale else (1.0,) * n_tiled
        core_scale = (1.0,) * len(op.out_core_shape)
        scale = core_scale + tiled_scale if out_core_position == "first" else tiled_scale + core_scale
    if units is None:
        tiled_units = tuple(first.units[:n_tiled]) if first.units else (None,) * n_tiled
        core_units = (None,) * len(op.out_core_shape)
        units = core_units + tiled_units if out_core_position == "first" else tiled_units + core_units
    scale, units = tuple(scale), tuple(units)

    device_name = devices.resolve_device(device) if op.uses_torch else "cpu"
    budget = devices.memory_budget(device_name, memory_budget)
    in_core = sum(math.prod(a.shape[n_tiled:]) for a in arrays)
    out_core = math.prod(op.out_core_shape)
    out_dtype = np.dtype(op.out_dtype)
    min_tile = op.min_tile or tuple(max(1, 2 * h) for h in halo)
    if tile is None:
        tile = plan_tile(
            tiled_shape,
            halo,
            in_core_elements=in_core,
            out_core_elements=out_core,
            bytes_per_voxel=op.bytes_per_voxel,
            budget_bytes=budget,
            out_itemsize=out_dtype.itemsize,
            min_tile=min_tile,
        )
    tile = tuple(min(int(t), s) for t, s in zip(tile, tiled_shape))
    if len(tile) != n_tiled or any(t < 1 for t in tile):
        raise InputError(f"tile {tile} does not fit the {n_tiled} tiled axes {tiled_axes!r}")
    chunks = tile
    working = math.prod(t + 2 * h for t, h in zip(tile, halo)) * max(in_core, 1) * op.bytes_per_voxel
    batch = int(max(1, min(max_batch, budget // max(working, 1))))

    if out_core_position == "first":
        out_shape = (*op.out_core_shape, *tiled_shape)
        out_chunks = (*op.out_core_shape, *chunks)
    else:
        out_shape = (*tiled_shape, *op.out_core_shape)
        out_chunks = (*chunks, *op.out_core_shape)

    tiff_path = None
    temporary_dir = None
    if out is None and scheduler is not None:
        temporary_dir = tempfile.TemporaryDirectory(prefix="mbdl-")
        out = Path(temporary_dir.name) / "result.zarr"
    if out is None:
        store = MemoryOutput(out_shape, out_dtype, out_chunks)
    else:
        out = Path(out)
        zarr_path = out
        if out.suffix.lower() in (".tif", ".tiff"):
            tiff_path = out
            check_replaceable(out, overwrite, kind="file")
            zarr_path = out.with_name(out.name + ".zarr-work")
        fingerprint = {
            "key": op.key,
            "inputs": [[list(a.shape), a.dtype.str, str(a.path or ""), _sample_digest(a)] for a in arrays],
            "halo": list(halo),
        }
        store = ZarrOutput(
            zarr_path,
            out_shape,
            out_dtype,
            out_chunks,
            axes=out_axes,
            scale=scale,
            units=units,
            run_fingerprint=fingerprint,
            overwrite=overwrite or tiff_path is not None,
            extra_attrs=attrs,
            protected=[a.path for a in arrays],
        )

    done = store.done_chunks()
    all_chunks = list(chunk_indices(tiled_shape, chunks))
    todo = [index for index in all_chunks if index not in done]
    total = math.prod(tiled_shape)
    finished = sum(math.prod(b - a for a, b in zip(*chunk_box(i, tiled_shape, chunks))) for i in done)
    stage = stage or op.key.split("/")[0]
    yield Progress(stage, finished, total, f"{len(done)}/{len(all_chunks)} chunks" + (" (resumed)" if done else ""))

    plan = dict(tiled_shape=tiled_shape, chunks=chunks, halo=halo, axes=in_axes, check_finite=check_finite)
    backoffs = 0
    if scheduler is not None:
        from napari_mbdl.engine.cluster import run_distributed

        yield from run_distributed(
            scheduler, op, arrays, plan, store, todo, device, batch, out_core_position, cancel, stage, finished, total
        )
    else:
        backoffs = yield from _run_local(
            op, arrays, plan, store, todo, device_name, tile, min_tile, batch, out_core_position, cancel, stage,
            finished, total,
        )
    array = store.finalize()
    path = store.path
    if tiff_path is not None:
        import tifffile

        write_tiff_from_zarr(store.path, tiff_path, axes=out_axes, scale=scale, overwrite=overwrite)
        shutil.rmtree(store.path, ignore_errors=True)
        array = tifffile.memmap(tiff_path, mode="r")
        path = tiff_path
    if temporary_dir is not None:
        array = np.asarray(array)
        temporary_dir.cleanup()
        path = None
    if op.uses_torch:
        devices.release_device_memory()
    return RunResult(
        array=array,
        path=path,
        axes=out_axes,
        scale=scale,
        units=units,
        tile=tuple(tile),
        chunks=tuple(chunks),
        device=device_name,
        chunks_total=len(all_chunks),
        chunks_computed=len(todo),
        chunks_resumed=len(done),
        out_of_memory_backoffs=backoffs,
        seconds=time.perf_counter() - started,
    )


def _run_local(op, arrays, plan, store, todo, device_name, tile, min_tile, batch, position, cancel, stage, finished, total):
    fn = built_function(op, device_name)
    tiled_shape, chunks, halo = plan["tiled_shape"], plan["chunks"], plan["halo"]
    slices_for, arrange = _output_layout(op, position, len(tiled_shape))
    reader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mbdl-read")
    writer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mbdl-write")
    compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mbdl-compute")
    pending: deque = deque()
    backoffs = 0
    tile = tuple(tile)
    position_in_todo = 0
    try:
        while position_in_todo < len(todo):
            cancel.raise_if_cancelled()
            whole_chunks = tile == tuple(chunks)
            group = todo[position_in_todo : position_in_todo + (batch if whole_chunks else 1)]
            tiles = [t for index in group for t in split_into_tiles(index, tiled_shape, chunks, tile, halo)]
            group_voxels = sum(math.prod(t.shape) for t in tiles)
            try:
                results = yield from while_computing(
                    lambda: compute_tiles(fn, arrays, tiles, batch, op, plan["axes"], plan["check_finite"], reader),
                    cancel, stage=stage, done=finished, span=group_voxels, total=total, label=f"tile {tuple(tile)}",
                    pool=compute,
                )
            except Exception as error:
                if not devices.is_out_of_memory(error):
                    raise
                devices.release_device_memory()
                backoffs += 1
                if batch > 1:
                    batch = max(1, batch // 2)
                    log.warning("out of memory: retrying with %d tiles per batch", batch)
                    continue
                smaller = shrink_tile(tile, min_tile)
                if smaller is None:
                    raise DeviceMemoryError(
                        f"even the smallest tile {tuple(tile)} does not fit in {device_name} memory; "
                        "use a smaller model, another device, or --device cpu"
                    ) from None
                log.warning("out of memory: retrying with tiles of %s", smaller)
                tile = smaller
                continue
            for index in group:
                start, stop = chunk_box(index, tiled_shape, chunks)
                buffer = np.empty(
                    (*[b - a for a, b in zip(start, stop)], *op.out_core_shape), dtype=np.dtype(op.out_dtype)
                )
                for t, result in results.items():
                    if t.chunk_index == index:
                        local = tuple(slice(a - s, b - s) for a, b, s in zip(t.start, t.stop, start))
                        buffer[local] = result
                pending.append(writer.submit(store.write, index, slices_for(start, stop), arrange(buffer)))
                finished += math.prod(b - a for a, b in zip(start, stop))
            position_in_todo += len(group)
            while pending and (pending[0].done() or len(pending) > 4):
                pending.popleft().result()
            yield Progress(stage, finished, total, f"tile {tuple(tile)}")
        while pending:
            pending.popleft().result()
    finally:
        for future in pending:
            try:
                future.result()
            except Exception:  # the first error is already propagating
                pass
        compute.shutdown(wait=True)
        reader.shutdown(wait=True)
        writer.shutdown(wait=True)
    return backoffs


def while_computing(call: Callable[[], Any], cancel: CancelToken, *, stage: str, done: int, span: int, total: int,
                    label: str = "", pool: ThreadPoolExecutor | None = None) -> Generator[Progress, None, Any]:
    """Run ``call()`` in a compute thread and return its result, yielding progress while it runs.

    For steps generators with a long computation in one piece (the engine's calls of a block
    function, one denoiser pass of the deblurring loop).  Every :data:`HEARTBEAT_SECONDS` a
    still-running call reports ``done`` plus the part of ``span`` that it last gave to
    :func:`~napari_mbdl.engine.progress.checkpoint`.  A cancel reaches the call at its next
    checkpoint (a call without checkpoints finishes first); no progress is yielded after a cancel,
    so the run never hands control back while its call still holds the device.

    Parameters
    ----------
    call : callable
        Runs in the compute thread; may call ``checkpoint`` (and ``progress_span``).
    cancel : CancelToken
    stage, done, span, total, label
        The progress events: ``done`` before the call, ``span`` units for the whole call.
    pool : ThreadPoolExecutor, optional
        One-thread pool to reuse across calls (default: a new thread for this call).
    """
    if pool is None:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mbdl-compute") as own_pool:
            return (yield from while_computing(call, cancel, stage=stage, done=done, span=span, total=total,
                                               label=label, pool=own_pool))
    state = CallState(cancel)

    def run():
        torch = sys.modules.get("torch")
        if torch is not None:
            # a new thread starts with OpenMP's default thread count, not torch.set_num_threads's
            torch.set_num_threads(torch.get_num_threads())
        with in_call(state):
            return call()

    future = pool.submit(run)
    started = time.perf_counter()
    try:
        while True:
            try:
                return future.result(timeout=None if cancel.cancelled else HEARTBEAT_SECONDS)
            except TimeoutError:
                pass
            if not cancel.cancelled:
                parts = [p for p in (label, state.message) if p]
                message = ", ".join([*parts, f"{time.perf_counter() - started:.0f} s into this step"])
                yield Progress(stage, done + int(state.fraction * span), total, message)
    except GeneratorExit:
        # the consumer dropped the run: stop the call at its next checkpoint rather than finish it
        state.abandoned = True
        raise


def reduce_blocks(
    fn: Callable[..., Any],
    inputs,
    *,
    n_tiled: int | None = None,
    tile: Sequence[int] | None = None,
    memory_budget: str | int | None = None,
    cancel: CancelToken | None = None,
    check_finite: bool = True,
    allow_missing_chunks: bool = False,
    stage: str = "reduce",
) -> Generator[Progress, None, Any]:
    """Stream tiles of ``inputs`` (no halo) and return the sum of ``fn(*blocks)`` over tiles.

    ``fn`` receives one block per input shaped ``(*tile, *core)`` and returns anything that adds
    (numbers, numpy arrays; tuples are summed element-wise).
    """
    cancel = cancel or CancelToken()
    arrays, n_tiled = _prepare_inputs(inputs, n_tiled, allow_missing_chunks)
    tiled_shape = arrays[0].shape[:n_tiled]
    in_core = sum(math.prod(a.shape[n_tiled:]) for a in arrays)
    itemsize = max(a.dtype.itemsize for a in arrays)
    budget = devices.memory_budget("cpu", memory_budget)
    if tile is None:
        tile = plan_tile(
            tiled_shape, (0,) * n_tiled, in_core_elements=in_core, out_core_elements=in_core,
            bytes_per_voxel=4 * itemsize, budget_bytes=budget // 4, out_itemsize=itemsize, min_tile=(1,) * n_tiled,
        )
    tile = tuple(min(int(t), s) for t, s in zip(tile, tiled_shape))
    axes = arrays[0].axes or _GENERIC_AXES[: arrays[0].ndim]
    tiles = [
        t for i in chunk_indices(tiled_shape, tile) for t in split_into_tiles(i, tiled_shape, tile, tile, (0,) * n_tiled)
    ]
    total_value = None
    done = 0
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="mbdl-read") as reader:

        def load(t):
            return [_read(a, t, i, axes, check_finite) for i, a in enumerate(arrays)]

        ahead = deque(reader.submit(load, t) for t in tiles[:2])
        next_tile = 2
        try:
            for t in tiles:
                cancel.raise_if_cancelled()
                blocks = ahead.popleft().result()
                if next_tile < len(tiles):
                    ahead.append(reader.submit(load, tiles[next_tile]))
                    next_tile += 1
                value = fn(*blocks)
                if total_value is None:
                    total_value = value
                elif isinstance(total_value, tuple):
                    total_value = tuple(a + b for a, b in zip(total_value, value))
                else:
                    total_value = total_value + value
                done += math.prod(t.shape)
                yield Progress(stage, done, math.prod(tiled_shape))
        finally:
            for future in ahead:
                future.cancel()
    return total_value
