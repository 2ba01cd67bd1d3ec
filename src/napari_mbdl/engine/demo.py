"""The engine's own demo: stream a 3D stack through a halo-tiled smoothing into OME-Zarr and resume it."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from napari_mbdl.engine.progress import CancelToken
from napari_mbdl.engine.run import Operation, run_blocks
from napari_mbdl.engine.store import is_zarr_store
from napari_mbdl.errors import RunCancelled


def _make_smoothing(device: str, sigma: float):
    from scipy import ndimage

    def smooth(block):
        return np.stack([ndimage.gaussian_filter(b.astype(np.float32), sigma, truncate=3.0) for b in block])

    return smooth


def run_demo(out_dir: Path, device: str = "auto"):
    """Smooth a synthetic (z, y, x) stack tile by tile; stop half way, then resume to completion."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    stack = rng.poisson(20.0, size=(16, 256, 256)).astype(np.uint16)
    op = Operation(key="smooth/sigma2", make=functools.partial(_make_smoothing, sigma=2.0), halo=(6, 6, 6))
    target = out_dir / "smoothed.ome.zarr"
    overwrite = is_zarr_store(target)  # a previous demo's result
    options = dict(axes="zyx", tile=(16, 64, 64), out=target, scale=(2.0, 0.5, 0.5), units=("micrometer",) * 3,
                   overwrite=overwrite)
    cancel = CancelToken()
    try:
        for event in run_blocks(op, stack, cancel=cancel, stage="smooth (first half)", **options):
            yield event
            if event.done >= event.total // 2:
                cancel.cancel()
    except RunCancelled:  # the half-written store stays as <name>.partial and is resumed below
        pass
    result = yield from run_blocks(op, stack, stage="smooth (resumed)", **options)
    meta = {"scale": result.scale, "axis_labels": tuple(result.axes)}
    return [
        (stack, {"name": "raw stack", **meta}, "image"),
        (result.array, {"name": f"smoothed (resumed after {result.chunks_resumed} of {result.chunks_total} chunks)", **meta}, "image"),
    ]
