"""Two-photon / light-field fusion: structure from the 2P stack, activity from the LFM series.

Pipeline (each step also usable on its own, e.g. by the napari widget):

1. :func:`summarise_series_steps` -- stream the light-field series once: refuse dropped (blank)
   frames, and average it into the mean light field.
2. :func:`mean_volume` -- Richardson-Lucy reconstruction of the mean light field (LFM space).
3. :func:`~napari_mbdl.fusion.segment.segment_neurons` -- cell labels in the 2P stack.
4. :func:`~napari_mbdl.fusion.register.register_stack` -- 2P -> LFM rigid fit, scale from optics.
5. :func:`activity_steps` -- footprints mapped into LFM space, then per frame the non-negative
   footprint-constrained inverse problem ``y_t ~ H A c_t`` streamed through the engine; traces
   (raw and dF/F) and 4D activity volumes.

:func:`fuse_steps` runs them all (the CLI and the demo use it) and :func:`fuse` is the plain call.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_mbdl.engine.errors import InputError, OutputExistsError
from napari_mbdl.engine.progress import CancelToken, Progress, run_steps
from napari_mbdl.fusion.register import Registration, footprints_to_labels, map_labels_to_lfm, register_stack
from napari_mbdl.fusion.segment import segment_neurons

# A compact light-field microscope for the simulated sample: 5 depths over +-15 um, 5 x 5 voxels
# and 15 x 15 pixels per lenslet; its PSF computes in a few seconds.
SAMPLE_OPTICS = {"depths_um": (-15.0, -7.5, 0.0, 7.5, 15.0), "psf_lenslets": 5}
DEFAULT_CELL_RADIUS_UM = (5.0, 4.0, 4.0)


# --------------------------------------------------------------------------------------------
# operators
# --------------------------------------------------------------------------------------------
def _lfm_operator(device: str, psf):
    from napari_mbdl.lfm.operator import LFMOperator

    return LFMOperator(psf, device=device)


def _fixed_operator(device: str, operator):
    return operator


@dataclass
class OperatorSpec:
    """How to build the forward model on any device, plus its geometry.

    Attributes
    ----------
    factory : callable
        Picklable ``factory(device) -> operator``.
    volume_shape : tuple of int
    lfm_voxel_um : tuple of float
    name : str
    """

    factory: Any
    volume_shape: tuple[int, int, int]
    lfm_voxel_um: tuple[float, float, float]
    name: str

    def numpy_operator(self, device: str = "cpu"):
        from napari_mbdl.fusion.operators import as_numpy_operator

        return as_numpy_operator(self.factory(device), volume_shape=self.volume_shape)


def resolve_operator(psf, light_field_shape, volume_shape=None, lfm_voxel_um=None) -> OperatorSpec:
    """Turn a PSF (object or zarr path) or a ready operator into an :class:`OperatorSpec`.

    Parameters
    ----------
    psf : LFPsf, str, Path or operator
        A light-field PSF (``napari_mbdl.lfm``), the path of a saved one, or any object with
        ``forward``/``adjoint`` (then ``volume_shape`` and ``lfm_voxel_um`` are needed).
    light_field_shape : tuple of int
        ``(v, u)`` of one frame.
    """
    if psf is None:
        raise InputError("no PSF given: the activity needs the light-field forward model (compute or load a PSF)")
    if isinstance(psf, (str, Path)):
        path = Path(psf)
        if not path.exists():
            raise InputError(f"PSF file not found: {path}")
        from napari_mbdl.lfm.optics import LFPsf

        psf = LFPsf.load(path)
    if type(psf).__name__ == "LFPsf":
        from napari_mbdl.lfm.operator import LFMOperator

        probe = LFMOperator(psf)
        vshape = probe.volume_shape(tuple(light_field_shape))
        voxel = tuple(float(v) for v in psf.optics.voxel_size_um)
        return OperatorSpec(functools.partial(_lfm_operator, psf=psf), vshape, voxel, f"LFM PSF {psf.optics.key()}")
    if hasattr(psf, "forward") and hasattr(psf, "adjoint"):
        if volume_shape is None or lfm_voxel_um is None:
            raise InputError("a custom operator needs volume_shape and lfm_voxel_um")
        return OperatorSpec(functools.partial(_fixed_operator, operator=psf), tuple(int(v) for v in volume_shape),
                            tuple(float(v) for v in lfm_voxel_um), type(psf).__name__)
    raise InputError(f"cannot use {type(psf).__name__} as a PSF; give an LFPsf, a PSF .zarr path or an operator")


# --------------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------------
def _frame_stats_fn(block):
    frames = np.asarray(block, np.float64)
    return frames.sum(axis=0), [float(v) for v in frames.reshape(len(frames), -1).mean(1)], [
        float(v) for v in frames.reshape(len(frames), -1).std(1)
    ]


def check_series_shape(light_fields) -> tuple[int, int, int]:
    shape = tuple(getattr(light_fields, "shape", np.shape(light_fields)))
    if len(shape) != 3:
        raise InputError(
            f"the light-field series must be 3D (t, v, u); got {len(shape)}D with shape {shape}"
            + (" -- a single frame cannot give activity over time" if len(shape) == 2 else "")
        )
    if shape[0] < 3:
        raise InputError(f"the light-field series has only {shape[0]} frame(s); need at least 3 for traces")
    return shape


def summarise_series_steps(light_fields, timestamps=None, cancel=None, blank_fraction: float = 0.2):
    """Stream the series once: mean light field, and refusal of dropped frames.

    A frame counts as dropped when it is blank (constant, or its mean is below
    ``blank_fraction`` of the median frame mean) or, with ``timestamps``, when the gap before
    it is more than 1.5 median frame intervals.

    Returns
    -------
    mean_light_field : ndarray, shape (v, u)
    frame_means : ndarray, shape (t,)
    """
    from napari_mbdl.engine import reduce_blocks

    shape = check_series_shape(light_fields)
    if timestamps is not None:
        stamps = np.asarray(timestamps, float)
        if stamps.shape != (shape[0],):
            raise InputError(f"{len(stamps)} timestamps for {shape[0]} frames: the series has dropped frames or extra stamps")
        gaps = np.diff(stamps)
        if np.any(gaps <= 0):
            raise InputError("timestamps must increase strictly")
        late = np.flatnonzero(gaps > 1.5 * np.median(gaps)) + 1
        if len(late):
            raise InputError(f"the series has dropped frames before frame(s) {late[:10].tolist()} (timestamp gaps)")
    # Tiles arrive in time order, so the per-frame lists concatenate in order.
    total, means, stds = yield from reduce_blocks(_frame_stats_fn, light_fields, n_tiled=1, cancel=cancel,
                                                  stage="check frames")
    means, stds = np.asarray(means), np.asarray(stds)
    typical = float(np.median(means))
    blank = np.flatnonzero((stds <= 1e-12 * max(abs(typical), 1.0)) | (means < blank_fraction * typical))
    if len(blank):
        raise InputError(
            f"the series has {len(blank)} dropped (blank) frame(s), e.g. {blank[:10].tolist()}; remove or fill them first"
        )
    return (total / shape[0]).astype(np.float32), means


def mean_volume(spec: OperatorSpec, mean_light_field, n_iter: int = 30, device: str = "cpu") -> np.ndarray:
    """Richardson-Lucy reconstruction of the mean light field (the registration target)."""
    from napari_mbdl.fusion.operators import richardson_lucy

    return richardson_lucy(spec.numpy_operator(device), mean_light_field, n_iter=n_iter)


@dataclass
class ActivityResult:
    """Traces and volumes of the neurons.

    Attributes
    ----------
    traces : ndarray, shape (n, t)
        Raw activity (brightness of each footprint per frame).
    dff : ndarray, shape (n, t)
        dF/F of ``traces``.
    background : ndarray, shape (t,)
        Uniform background per frame.
    label_ids : ndarray, shape (n,)
        2P label of each trace.
    footprints : ndarray, shape (n, z, y, x)
        LFM-space footprints used.
    lfm_labels : ndarray, shape (z, y, x)
        Hard labels of the footprints in LFM space.
    volumes : array, shape (t, z, y, x) or None
        Activity volumes (numpy, or lazy dask from the written zarr).
    paths : dict
        Files written.
    seconds : float
        Wall time of the activity extraction (engine run only).
    """

    traces: np.ndarray
    dff: np.ndarray
    background: np.ndarray
    label_ids: np.ndarray
    footprints: np.ndarray
    lfm_labels: np.ndarray
    volumes: Any = None
    paths: dict = field(default_factory=dict)
    seconds: float = 0.0


def activity_steps(
    light_fields,
    spec: OperatorSpec,
    labels,
    registration: Registration,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    volumes: bool = True,
    n_iter: int = 200,
    device: str = "auto",
    scheduler=None,
    cancel: CancelToken | None = None,
):
    """Per-frame footprint-constrained NNLS through the engine; returns :class:`ActivityResult`.

    Parameters
    ----------
    light_fields : array-like, shape (t, v, u)
    spec : OperatorSpec
    labels : array of int
        2P cell labels (shape ``registration.two_photon_shape``).
    registration : Registration
    out : path, optional
        Folder: ``coefficients.zarr`` (resumable engine output) and ``activity.zarr`` are written.
    volumes : bool
        Also render the 4D activity volumes ``sum_i c_i(t) A_i``.
    n_iter : int
        Most FISTA iterations per batch of frames.
    """
    from napari_mbdl.engine import run_blocks
    from napari_mbdl.fusion.activity import activity_operation, delta_f_over_f, design_matrix, volume_operation

    check_series_shape(light_fields)
    labels = np.asarray(labels)
    if labels.max(initial=0) <= 0:
        raise InputError("zero neurons: the labels layer is empty; segment the 2P stack or paint cells first")
    yield Progress("footprints", 0, 2, "mapping 2P labels into LFM space")
    footprints, label_ids = map_labels_to_lfm(labels, registration)
    operator = spec.numpy_operator("cpu")
    yield Progress("footprints", 1, 2, f"light field of {len(label_ids)} footprints")
    design, norms, n_constrained = design_matrix(operator, footprints)
    yield Progress("footprints", 2, 2)
    out_dir = Path(out) if out is not None else None
    op = activity_operation(design, norms, n_constrained, n_iter=n_iter)
    run = yield from run_blocks(
        op, light_fields, n_tiled=1, axes="tvu", out=None if out_dir is None else out_dir / "coefficients.zarr",
        out_core_axes="c", overwrite=overwrite, device=device, scheduler=scheduler, cancel=cancel,
        stage="activity", attrs={"label_ids": label_ids.tolist(), "columns": "neurons..., background, offset"},
    )
    coefficients = np.asarray(run.array)
    n = len(label_ids)
    traces = coefficients[:, :n].T.copy()
    background = coefficients[:, n].copy()
    result = ActivityResult(
        traces=traces, dff=delta_f_over_f(traces), background=background, label_ids=label_ids, footprints=footprints,
        lfm_labels=footprints_to_labels(footprints, label_ids), seconds=run.seconds,
    )
    if out_dir is not None:
        result.paths["coefficients"] = run.path
    if volumes:
        vol = yield from run_blocks(
            volume_operation(footprints), coefficients, n_tiled=1, axes="tc",
            out=None if out_dir is None else out_dir / "activity.zarr", out_core_axes="zyx",
            scale=(1.0, *registration.lfm_voxel_um), units=(None, "micrometer", "micrometer", "micrometer"),
            overwrite=overwrite, cancel=cancel, stage="activity volumes", check_finite=False,
        )
        result.volumes = vol.array
        if out_dir is not None:
            result.paths["activity"] = vol.path
    return result


def export_traces(result: ActivityResult, out_dir, frame_rate_hz: float | None = None, overwrite: bool = False) -> dict:
    """Write ``traces.csv`` (raw), ``traces_dff.csv`` and ``traces.zarr`` (raw, dff, background, label_ids).

    Returns
    -------
    dict
        Name -> path of what was written.
    """
    import zarr

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "traces.csv", "csv_dff": out_dir / "traces_dff.csv", "zarr": out_dir / "traces.zarr"}
    from napari_mbdl.engine.store import check_replaceable, clear_partial, commit_store

    check_replaceable(paths["zarr"], overwrite)
    for key in ("csv", "csv_dff"):
        check_replaceable(paths[key], overwrite, kind="file")
    t = np.arange(result.traces.shape[1])
    header = ["frame"] + (["time_s"] if frame_rate_hz else []) + [f"neuron_{i}" for i in result.label_ids]
    # every file is written beside its target and renamed when complete: no half file looks finished
    for key, values in (("csv", result.traces), ("csv_dff", result.dff)):
        columns = [t] + ([t / frame_rate_hz] if frame_rate_hz else []) + list(values)
        table = np.column_stack(columns)
        fmt = ["%d"] + (["%.6g"] if frame_rate_hz else []) + ["%.6g"] * len(values)
        partial = paths[key].with_name(paths[key].name + ".partial")
        np.savetxt(partial, table, delimiter=",", header=",".join(header), comments="", fmt=fmt)
        os.replace(partial, paths[key])
    partial = paths["zarr"].with_name(paths["zarr"].name + ".partial")
    clear_partial(partial)
    group = zarr.open_group(str(partial), mode="w")
    for name, values in (("raw", result.traces), ("dff", result.dff), ("background", result.background),
                         ("label_ids", result.label_ids)):
        array = group.create_array(name, shape=values.shape, dtype=values.dtype)
        array[...] = values
    group.attrs["axes"] = {"raw": "neuron, frame", "dff": "neuron, frame"}
    if frame_rate_hz:
        group.attrs["frame_rate_hz"] = float(frame_rate_hz)
    commit_store(partial, paths["zarr"])
    return paths


@dataclass
class FusionResult:
    """Everything :func:`fuse` found."""

    labels: np.ndarray
    registration: Registration
    activity: ActivityResult
    mean_volume: np.ndarray
    mean_light_field: np.ndarray
    paths: dict = field(default_factory=dict)


def fuse_steps(
    two_photon,
    light_fields,
    psf,
    *,
    two_photon_voxel_um,
    cell_radius_um=DEFAULT_CELL_RADIUS_UM,
    labels=None,
    registration: Registration | None = None,
    timestamps=None,
    volume_shape=None,
    lfm_voxel_um=None,
    out: str | Path | None = None,
    overwrite: bool = False,
    volumes: bool = True,
    frame_rate_hz: float | None = None,
    device: str = "auto",
    scheduler=None,
    cancel: CancelToken | None = None,
):
    """Structure from the 2P stack, activity from the LF series; a steps generator.

    Parameters
    ----------
    two_photon : array-like, shape (z, y, x)
        Structural 2P stack.
    light_fields : array-like, shape (t, v, u)
        Light-field series (numpy, dask, zarr or TIFF; streamed).
    psf : LFPsf, path or operator
        The light-field forward model (see :func:`resolve_operator`).
    two_photon_voxel_um : tuple of float
        2P voxel size ``(dz, dy, dx)``.
    cell_radius_um : tuple of float
        Expected cell semi-axes for segmentation.
    labels : array of int, optional
        Cell labels of the 2P stack (e.g. edited by hand); segmented when omitted.
    registration : Registration, optional
        Use this 2P -> LFM map instead of fitting one.
    timestamps : array, optional
        Frame times; gaps mark dropped frames.
    out : path, optional
        Output folder (traces CSV/zarr, activity.zarr, labels, registration.json).
    frame_rate_hz : float, optional
        Adds a time column to the CSV files.

    Returns
    -------
    FusionResult
    """
    two_photon_array = np.asarray(two_photon)
    if two_photon_array.ndim != 3:
        raise InputError(
            f"the 2P stack must be 3D (z, y, x); got {two_photon_array.ndim}D with shape {two_photon_array.shape}"
        )
    shape = check_series_shape(light_fields)
    tp_voxel = tuple(float(v) for v in two_photon_voxel_um)
    if len(tp_voxel) != 3 or min(tp_voxel) <= 0:
        raise InputError("two_photon_voxel_um must be three positive numbers (dz, dy, dx)")
    spec = resolve_operator(psf, shape[1:], volume_shape=volume_shape, lfm_voxel_um=lfm_voxel_um)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        # An interrupted run (a .partial engine output) may resume; finished results are kept.
        resuming = (out_dir / "coefficients.zarr.partial").exists()
        if out_dir.exists() and any(out_dir.iterdir()) and not overwrite and not resuming:
            raise OutputExistsError(f"{out_dir} already holds results; choose another folder or pass overwrite")
        out_dir.mkdir(parents=True, exist_ok=True)

    mean_lf, _ = yield from summarise_series_steps(light_fields, timestamps=timestamps, cancel=cancel)
    yield Progress("mean volume", 0, 1, "Richardson-Lucy of the mean light field")
    volume = mean_volume(spec, mean_lf)
    yield Progress("mean volume", 1, 1)
    if labels is None:
        yield Progress("segmentation", 0, 1)
        labels = segment_neurons(two_photon_array, tp_voxel, cell_radius_um)
        yield Progress("segmentation", 1, 1, f"{int(labels.max())} cells")
    else:
        labels = np.asarray(labels)
        if labels.shape != two_photon_array.shape:
            raise InputError(f"labels shape {labels.shape} differs from the 2P stack {two_photon_array.shape}")
    if registration is None:
        yield Progress("registration", 0, 1)
        registration = register_stack(two_photon_array, tp_voxel, volume, spec.lfm_voxel_um)
        yield Progress("registration", 1, 1, registration.describe())
    activity = yield from activity_steps(
        light_fields, spec, labels, registration, out=out_dir, overwrite=overwrite, volumes=volumes,
        device=device, scheduler=scheduler, cancel=cancel,
    )
    result = FusionResult(labels=labels, registration=registration, activity=activity, mean_volume=volume,
                          mean_light_field=mean_lf)
    if out_dir is not None:
        import tifffile

        result.paths.update(export_traces(activity, out_dir, frame_rate_hz=frame_rate_hz, overwrite=True))
        result.paths.update(activity.paths)
        (out_dir / "registration.json").write_text(json.dumps(registration.to_dict(), indent=2))
        tifffile.imwrite(out_dir / "labels_2p.tif", labels.astype(np.int32), metadata={"axes": "ZYX"})
        tifffile.imwrite(out_dir / "labels_lfm.tif", activity.lfm_labels.astype(np.int32), metadata={"axes": "ZYX"})
        result.paths.update(registration=out_dir / "registration.json", labels_2p=out_dir / "labels_2p.tif",
                            labels_lfm=out_dir / "labels_lfm.tif")
    return result


def fuse(two_photon, light_fields, psf, **kwargs) -> FusionResult:
    """Plain-call version of :func:`fuse_steps` (same parameters).

    Examples
    --------
    >>> from napari_mbdl import fuse
    >>> result = fuse(stack_2p, lf_series, "psf.zarr", two_photon_voxel_um=(2.5, 0.75, 0.75))
    >>> result.activity.traces.shape        # (neurons, frames)
    """
    return run_steps(fuse_steps(two_photon, light_fields, psf, **kwargs))
