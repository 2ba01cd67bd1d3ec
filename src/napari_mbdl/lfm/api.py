"""Public light-field API: PSF computation and (streamed) volume reconstruction.

``lfm_psf`` / ``lfm_reconstruct`` are plain calls; ``*_steps`` are the generators (yielding
:class:`~napari_mbdl.engine.Progress`) that the widget, the CLI and the demo drive.  A light field ``(H, W)`` or
time series ``(T, H, W)`` is reconstructed frame by frame through the streaming engine (tiled over ``t``; the
light field is a core axis and the volume ``(z, y, x)`` the output core), so memory stays bounded however long
the series, and a zarr output resumes after an interruption.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np

from napari_mbdl.engine import InputError, Operation, OutputExistsError, checkpoint, run_blocks, run_steps
from napari_mbdl.lfm.calibration import LensletGrid, rectify
from napari_mbdl.lfm.optics import LFOptics, LFPsf, default_cache_dir, load_or_compute_psf, psf_steps

METHODS = ("unfolded", "rl", "isra")
DEFAULT_ITERATIONS = {"rl": 30, "isra": 30}
OPTICS_ATTR = "lfm_optics"
OUTPUT_SUFFIXES = (".zarr", ".tif", ".tiff")


def as_optics(optics) -> LFOptics:
    """``LFOptics`` from an instance, a mapping, a YAML path, a napari-LF ``.lfc`` calibration file, or None
    (the default optics)."""
    if optics is None:
        return LFOptics()
    if isinstance(optics, LFOptics):
        return optics
    if isinstance(optics, dict):
        return LFOptics.from_dict(optics)
    if isinstance(optics, (str, Path)) and Path(optics).suffix.lower() == ".lfc":
        from napari_mbdl.lfm.lfc import optics_from_lfc

        return optics_from_lfc(optics)
    if isinstance(optics, (str, Path)):
        return LFOptics.from_yaml(optics)
    raise InputError(f"optics must be LFOptics, a mapping, a YAML or .lfc file, not {type(optics).__name__}")


def as_psf(psf) -> LFPsf:
    """``LFPsf`` from an instance, a zarr path written by :func:`lfm_psf`, or optics (computed, cached)."""
    if psf is None:
        raise InputError("no PSF: give a PSF file (mbdl lfm-psf) or the microscope optics")
    if isinstance(psf, LFPsf):
        psf.check()
        return psf
    if isinstance(psf, (str, Path)) and Path(psf).suffix.lower() in (".yaml", ".yml", ".lfc"):
        return load_or_compute_psf(as_optics(psf), default_cache_dir())
    if isinstance(psf, (str, Path)):
        return LFPsf.load(psf)
    if isinstance(psf, (LFOptics, dict)):
        return load_or_compute_psf(as_optics(psf), default_cache_dir())
    raise InputError(f"psf must be an LFPsf, a PSF zarr path or optics, not {type(psf).__name__}")


def check_output_path(out) -> Path | None:
    """The output path, refused unless it names a ``.zarr`` / ``.tif`` file.

    A folder such as the working directory must never become an output: replacing it would delete it.
    """
    if out is None:
        return None
    text = str(out).strip()
    if not text:
        return None
    path = Path(text)
    if not path.name.lower().endswith(OUTPUT_SUFFIXES):
        raise InputError(f"output {text!r} must end in .zarr (OME-Zarr) or .tif; folders are never overwritten")
    if path.exists() and path.is_dir() and path.suffix.lower() == ".zarr":
        has_zarr_meta = any((path / name).exists() for name in ("zarr.json", ".zattrs", ".zgroup", ".zarray"))
        if not has_zarr_meta:
            raise InputError(f"refusing to write over {path}: it exists and is not a zarr store")
    return path


def lfm_psf_steps(optics=None, out: str | Path | None = None, overwrite: bool = False):
    """Compute the wave-optics PSF (one Progress per depth); write it to ``out`` (zarr) when given.

    Returns
    -------
    LFPsf
    """
    optics = as_optics(optics)
    if out is not None:
        if not str(out).lower().endswith(".zarr"):
            raise InputError(f"the PSF output {str(out)!r} must end in .zarr")
        if Path(out).exists() and not overwrite:
            raise OutputExistsError(f"{out} already exists; choose another path or pass overwrite")
    psf = yield from psf_steps(optics)
    if out is not None:
        psf.save(out, overwrite=overwrite)
    return psf


def lfm_psf(optics=None, out: str | Path | None = None, overwrite: bool = False) -> LFPsf:
    """Wave-optics light-field PSF of ``optics`` (LFOptics, mapping or YAML path), optionally saved to zarr.

    Examples
    --------
    >>> from napari_mbdl import lfm_psf
    >>> psf = lfm_psf({"magnification": 20, "na": 0.5, "depths_um": {"start": -30, "stop": 30, "step": 7.5}})
    """
    return run_steps(lfm_psf_steps(optics, out, overwrite))


# ---------------------------------------------------------------------------------------------------
# reconstruction through the engine
# ---------------------------------------------------------------------------------------------------
def _make_reconstruct_fn(device: str, psf: LFPsf, method: str, n_iter: int, weights: str | None,
                         grid: dict | None):
    """Build the per-batch reconstruction ``fn((B, t, H, W)) -> (B, t, Z, Y, X)`` once per process/device."""
    import torch

    from napari_mbdl.lfm.operator import LFMOperator
    from napari_mbdl.lfm.solvers import isra, richardson_lucy
    from napari_mbdl.lfm.unfolded import load_unfolded

    H = LFMOperator(psf, device=device)
    model = load_unfolded(weights, optics=psf.optics)[0].to(device) if method == "unfolded" else None
    lenslets = LensletGrid.from_dict(grid) if grid else None

    def fn(block: np.ndarray) -> np.ndarray:
        # the engine hands (batch, frames of the tile, H, W): reconstruct all frames as one batch
        lead = block.shape[:-2]
        frames = block.reshape(-1, *block.shape[-2:]).astype(np.float32)
        if lenslets is not None:
            frames = rectify(frames, lenslets, psf.optics.pixels_per_lenslet)
        y = torch.as_tensor(frames, device=device)
        if method == "unfolded":
            x = model.reconstruct(H, y, callback=lambda k, _: checkpoint(k / model.n_layers))
        elif method == "rl":
            x = richardson_lucy(H, y, n_iter, callback=lambda it, _: checkpoint(it / n_iter))
        else:
            x = isra(H, y, n_iter, callback=lambda it, _: checkpoint(it / n_iter))
        x = x.float().cpu().numpy()
        return x.reshape(*lead, *x.shape[1:])

    return fn


def _hash(value) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:10]


def lfm_reconstruct_steps(light_field, psf, method: str = "unfolded", n_iter: int | None = None,
                          weights: str | Path | None = None, grid: LensletGrid | dict | None = None,
                          out: str | Path | None = None, overwrite: bool = False, device: str = "auto",
                          frames_per_chunk: int = 4, scheduler=None, cancel=None, memory_budget=None,
                          time_step: float = 1.0, time_unit: str | None = None):
    """Reconstruct volumes from a light field or time series, frame by frame through the engine.

    Parameters
    ----------
    light_field : array-like or path
        ``(H, W)`` or ``(T, H, W)``: numpy, dask, zarr / OME-Zarr, TIFF.  Rectified (``N x N`` pixels per
        lenslet) unless ``grid`` is given.
    psf : LFPsf, PSF zarr path, optics YAML path, LFOptics or mapping
    method : {"unfolded", "rl", "isra"}
        The trained unfolded ISTA network, Richardson-Lucy, or ISRA.
    n_iter : int, optional
        Iterations of RL / ISRA (default 30).  The network has its trained number of layers.
    weights : path, optional
        Unfolded-network weights (default: those shipped for the default optics).
    grid : LensletGrid or dict, optional
        Lenslet calibration of raw frames: each frame is rectified onto the grid first.
    out : path, optional
        ``*.zarr`` (OME-Zarr, written frame chunk by chunk, resumable) or ``*.tif``; None keeps it in memory.
    device : str
        ``auto`` (cuda > mps > cpu), ``cpu``, ``cuda``...
    frames_per_chunk : int
        Frames per output chunk (and per batch): bounds memory independently of the series length.

    Returns
    -------
    RunResult
        ``.array``: ``(Z, Y, X)`` for one light field, ``(T, Z, Y, X)`` for a series (numpy, or dask over
        the zarr output); ``.scale`` in micrometres (and ``time_step`` for t).
    """
    from napari_mbdl.io.arrays import open_array

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    out = check_output_path(out)
    psf = as_psf(psf)
    optics = psf.optics
    labeled = open_array(light_field)
    attrs_optics = labeled.attrs.get(OPTICS_ATTR) if isinstance(labeled.attrs, dict) else None
    if attrs_optics is not None and LFOptics.from_dict(attrs_optics) != optics:
        raise InputError("the light field's recorded optics differ from the PSF's optics; compute a PSF for them")
    if labeled.ndim not in (2, 3):
        raise InputError(f"expected a light field (H, W) or a time series (T, H, W), got shape {labeled.shape}")
    single = labeled.ndim == 2
    data = np.asarray(labeled.data)[None] if single else labeled.data
    frame_shape = tuple(data.shape[-2:])
    N = optics.pixels_per_lenslet
    if grid is not None:
        grid = grid if isinstance(grid, LensletGrid) else LensletGrid.from_dict(grid)
        if tuple(grid.image_shape) != frame_shape:
            raise InputError(f"the lenslet calibration was made on {grid.image_shape} images, "
                             f"but the light field frames are {frame_shape}")
        rows, cols = grid.lenslet_range(frame_shape)
        rect_shape = (len(rows) * N, len(cols) * N)
    else:
        rect_shape = frame_shape
        if rect_shape[0] % N or rect_shape[1] % N:
            raise InputError(
                f"light field of {rect_shape[0]} x {rect_shape[1]} pixels does not fit {N} x {N}-pixel lenslets; "
                "calibrate the lenslet grid (white image) to rectify it, or check pixels_per_lenslet"
            )
    s = optics.voxels_per_lenslet
    vol_shape = (optics.n_depths, rect_shape[0] // N * s, rect_shape[1] // N * s)
    if method == "unfolded":
        from napari_mbdl.lfm.unfolded import DEFAULT_WEIGHTS, load_unfolded

        weights = str(weights) if weights is not None else str(DEFAULT_WEIGHTS)
        load_unfolded(weights, optics=optics)  # fail now, not inside the run, on missing or mismatched weights
        n_iter = None
    else:
        n_iter = int(n_iter if n_iter is not None else DEFAULT_ITERATIONS[method])
        if n_iter < 1:
            raise InputError("the number of iterations must be at least 1")
        weights = None
    grid_dict = grid.to_dict() if grid is not None else None
    weights_id = _hash([weights, Path(weights).stat().st_size]) if weights else "none"
    psf_id = _hash(psf.psf[:, :, :, ::7, ::7].tolist())
    key = f"lfm/{method}-{n_iter}/{optics.key()}/{psf_id}/{weights_id}/{_hash(grid_dict)}"
    bytes_per_pixel = 4.0 * (6 + 8 * np.prod(vol_shape) / np.prod(rect_shape)) * (
        np.prod(rect_shape) / np.prod(frame_shape))
    op = Operation(
        key=key,
        make=functools.partial(_make_reconstruct_fn, psf=psf, method=method, n_iter=n_iter, weights=weights,
                               grid=grid_dict),
        halo=(0,), out_core_shape=vol_shape, out_dtype="float32", bytes_per_voxel=float(bytes_per_pixel),
        uses_torch=True, min_tile=(1,),
    )
    dz, dy, dx = optics.voxel_size_um
    T = data.shape[0]
    frames_per_chunk = max(1, min(int(frames_per_chunk), T))
    result = yield from run_blocks(
        op, data, n_tiled=1, axes="tyx", tile=(frames_per_chunk,), out=out,
        out_core_axes="zyx", out_core_position="last", scale=(float(time_step), dz, dy, dx),
        units=(time_unit, "micrometer", "micrometer", "micrometer"), overwrite=overwrite, device=device,
        memory_budget=memory_budget, max_batch=frames_per_chunk, scheduler=scheduler, cancel=cancel,
        stage=f"lfm {method}", attrs={OPTICS_ATTR: optics.to_dict(), "lfm_method": method,
                                      "lfm_iterations": n_iter, "lfm_grid": grid_dict},
    )
    if single:
        result.array = result.array[0]
        result.axes, result.scale, result.units = result.axes[1:], result.scale[1:], result.units[1:]
    return result


def lfm_reconstruct(light_field, psf, method: str = "unfolded", n_iter: int | None = None, **kwargs):
    """Volume(s) from a light field ``(H, W)`` or time series ``(T, H, W)``; see :func:`lfm_reconstruct_steps`.

    Returns
    -------
    ndarray (Z, Y, X) or (T, Z, Y, X) (numpy; a dask array reading ``out`` when an output path is given).

    Examples
    --------
    >>> from napari_mbdl import lfm_reconstruct
    >>> volume = lfm_reconstruct(light_field, psf="psf.zarr", method="rl", n_iter=30)
    """
    return run_steps(lfm_reconstruct_steps(light_field, psf, method=method, n_iter=n_iter, **kwargs)).array
