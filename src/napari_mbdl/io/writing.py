"""Write any array (numpy, dask, zarr) to OME-Zarr or TIFF through the engine (streamed, atomic, resumable)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_mbdl.engine.progress import run_steps
from napari_mbdl.engine.run import Operation, run_blocks


def _identity(device):
    return _copy


def _copy(block):
    return block


def copy_operation(dtype) -> Operation:
    """The identity block operation (streams data into a new store unchanged)."""
    dtype = np.dtype(dtype)
    return Operation(key=f"copy/{dtype.str}", make=_identity, out_dtype=dtype.str, bytes_per_voxel=3 * dtype.itemsize)


def write_array(data, path, *, axes=None, scale=None, units=None, overwrite=False, attrs=None, on_progress=None):
    """Copy ``data`` into ``path`` (``.zarr`` as OME-Zarr, or ``.tif``), chunk by chunk.

    Returns the :class:`~napari_mbdl.engine.run.RunResult`.
    """
    steps = run_blocks(
        copy_operation(data.dtype), data, axes=axes, out=Path(path), scale=scale, units=units, overwrite=overwrite,
        attrs=attrs, check_finite=False, stage="write",
    )
    return run_steps(steps, on_progress)
