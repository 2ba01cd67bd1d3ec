"""The one streaming engine every capability runs through (no Qt, no napari, torch only on demand).

See :func:`run_blocks` (map a block operation over tiles, into memory or OME-Zarr, resumable,
cancellable, optionally on a dask.distributed cluster) and :func:`reduce_blocks` (stream a sum).
Long block functions call :func:`checkpoint` (inside :func:`progress_span` for nested loops) so
that progress moves and Cancel acts within one tile.
"""

from napari_mbdl.engine.progress import CancelToken, Progress, checkpoint, progress_span, run_steps
from napari_mbdl.engine.run import (
    Operation,
    RunResult,
    forget_built_functions,
    reduce_blocks,
    run_blocks,
    while_computing,
)
from napari_mbdl.errors import DeviceMemoryError, InputError, MBDLError, OutputExistsError, RunCancelled

__all__ = [
    "CancelToken",
    "DeviceMemoryError",
    "InputError",
    "MBDLError",
    "Operation",
    "OutputExistsError",
    "Progress",
    "RunCancelled",
    "RunResult",
    "checkpoint",
    "forget_built_functions",
    "progress_span",
    "reduce_blocks",
    "run_blocks",
    "run_steps",
    "while_computing",
]
