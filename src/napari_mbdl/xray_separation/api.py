"""Public API: separate a mixed X-ray into the X-ray images of the two sides of a painting.

``separate_xray_steps`` (a generator yielding Progress) is what the widget, the CLI and the demo
run; ``separate_xray`` drives it for plain Python calls.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from napari_mbdl.engine import CancelToken, InputError, Operation, Progress, RunResult, run_blocks, run_steps
from napari_mbdl.xray_separation.training import SeparationConfig, TrainedSeparator, train_separator_steps

# up to this many pixels the finite/constant checks read everything; larger images are checked on
# a regular subsample here, and every tile is checked by the engine anyway
_FULL_CHECK_PIXELS = 16_000_000


@dataclass
class XraySeparation:
    """The result of a separation.

    Attributes
    ----------
    side1, side2 : array-like, shape (H, W)
        X-ray images of side 1 (the side whose photograph was given first) and of side 2.
    error : array-like, shape (H, W)
        Re-synthesis error ``mixed - side1 - side2`` (what neither side explains).
    stacked : array-like, shape (3, H, W)
        The three images as stored (numpy, or dask reading the OME-Zarr output lazily).
    trained : TrainedSeparator
        The trained network (weights, normalisation, loss history).
    run : RunResult
        How the full-image pass ran (tiles, device, seconds, output path).
    """

    side1: Any
    side2: Any
    error: Any
    stacked: Any
    trained: TrainedSeparator
    run: RunResult


def _as_array(value, what: str):
    from napari_mbdl.io.arrays import open_array

    if value is None:
        raise InputError(f"the {what} is missing")
    return open_array(value).data


def _check_values(array, what: str) -> None:
    """NaN/inf and constant images are refused (on a subsample for very large arrays)."""
    size = int(np.prod(array.shape))
    step = 1 if size <= _FULL_CHECK_PIXELS else int(np.ceil(np.sqrt(size / _FULL_CHECK_PIXELS)))
    sample = np.asarray(array[::step, ::step])
    if sample.dtype.kind == "f" and not np.isfinite(sample).all():
        raise InputError(f"the {what} contains NaN or infinite values; replace or mask them first")
    if sample.size == 0:
        raise InputError(f"the {what} is empty")
    if float(sample.max()) == float(sample.min()):
        raise InputError(f"the {what} is constant; there is nothing to separate")


def validate_inputs(mixed, rgb1, rgb2=None, check_alignment: bool = True):
    """Open and check the inputs; return (mixed, rgb1, rgb2) as lazily readable arrays.

    Raises InputError for: a mixed image that is not 2-D greyscale, a photograph that is not RGB,
    size mismatches (with a pointer to the alignment helper), misregistration, NaN/inf, constant
    images.
    """
    from napari_mbdl.xray_separation.registration import check_registration

    mixed = _as_array(mixed, "mixed X-ray image")
    if mixed.ndim == 3 and mixed.shape[-1] in (3, 4):
        raise InputError(f"the mixed X-ray image must be greyscale (H, W); got a colour image of shape {mixed.shape}")
    if mixed.ndim != 2:
        raise InputError(f"the mixed X-ray image must be 2-D (H, W); got shape {mixed.shape}")
    if mixed.dtype.kind not in "biuf":
        raise InputError(f"the mixed X-ray image has unsupported type {mixed.dtype}")
    if min(mixed.shape) < 16:
        raise InputError(f"the mixed X-ray image is too small ({mixed.shape}); at least 16x16 pixels are needed")
    _check_values(mixed, "mixed X-ray image")
    photos = []
    for rgb, what in ((rgb1, "side 1"), (rgb2, "side 2")):
        if rgb is None:
            photos.append(None)
            continue
        rgb = _as_array(rgb, f"photograph of {what}")
        if rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[-1] == 1):
            raise InputError(
                f"the photograph of {what} is greyscale {tuple(rgb.shape)}; an RGB photograph (H, W, 3) is expected"
            )
        if rgb.ndim != 3 or rgb.shape[-1] not in (3, 4):
            raise InputError(f"the photograph of {what} must be RGB with shape (H, W, 3); got {tuple(rgb.shape)}")
        if rgb.shape[-1] == 4:
            rgb = rgb[..., :3]  # alpha carries no paint
        # a constant or NaN photograph cannot be registered: refuse it before trying
        _check_values(rgb, f"photograph of {what}")
        if check_alignment:
            check_registration(rgb, mixed, what)
        elif tuple(rgb.shape[:2]) != tuple(mixed.shape):
            raise InputError(
                f"the photograph of {what} is {rgb.shape[0]}x{rgb.shape[1]} but the X-ray is "
                f"{mixed.shape[0]}x{mixed.shape[1]}; align it first (napari_mbdl.xray_separation.align_to_xray)"
            )
        photos.append(rgb)
    return mixed, photos[0], photos[1]


class _UnitRGB:
    """A lazily read photograph scaled to [0, 1] (integer types by their range, floats as given
    unless they exceed 1, then by their maximum)."""

    def __init__(self, array):
        self.array = array
        if array.dtype.kind in "ui":
            self.factor = 1.0 / float(np.iinfo(array.dtype).max)
        else:
            step = max(1, int(np.ceil(np.sqrt(np.prod(array.shape[:2]) / 1e6))))
            peak = float(np.asarray(array[::step, ::step]).max())
            self.factor = 1.0 / peak if peak > 1.0 else 1.0
        self.shape, self.ndim, self.dtype = tuple(array.shape), array.ndim, np.dtype(np.float32)

    def __getitem__(self, item):
        return np.asarray(self.array[item], dtype=np.float32) * np.float32(self.factor)

    def __array__(self, dtype=None, copy=None):
        return self[...] if dtype is None else self[...].astype(dtype)


def _make_separate_fn(trained: TrainedSeparator, factors: tuple[float, ...], device: str):
    """Operation.make: rebuild the trained network once per process; fn(mixed, rgb1[, rgb2])."""
    from napari_mbdl.xray_separation.training import load_model, separate_block

    model = load_model(trained, device)

    def separate(mixed, rgb1, rgb2=None):
        rgb1 = rgb1.astype(np.float32) * np.float32(factors[0])
        if rgb2 is not None:
            rgb2 = rgb2.astype(np.float32) * np.float32(factors[1])
        return separate_block(trained, model, device, mixed, rgb1, rgb2)

    return separate


def _weights_digest(trained: TrainedSeparator) -> str:
    digest = hashlib.sha1()
    for name in sorted(trained.state):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(trained.state[name]).tobytes())
    digest.update(repr((trained.normalisation, trained.side2_offset)).encode())
    return digest.hexdigest()[:16]


def separation_operation(trained: TrainedSeparator, factors: tuple[float, ...]) -> Operation:
    """The engine operation that applies a trained separator to tiles (halo = receptive field)."""
    halo = trained.config.halo
    return Operation(
        key=f"xray-separation/unfolded-{trained.config.n_layers}x{trained.config.n_atoms}/{_weights_digest(trained)}",
        make=functools.partial(_make_separate_fn, trained, tuple(factors)),
        halo=(halo, halo),
        out_core_shape=(3,),
        out_dtype="float32",
        bytes_per_voxel=600.0,
        uses_torch=True,
        min_tile=(32, 32),
    )


def separate_xray_steps(
    mixed,
    rgb1,
    rgb2=None,
    *,
    iterations: int = 300,
    max_minutes: float | None = None,
    config: SeparationConfig | None = None,
    device: str = "auto",
    out=None,
    overwrite: bool = False,
    tile: tuple[int, int] | None = None,
    check_alignment: bool = True,
    cancel: CancelToken | None = None,
    stop_training: CancelToken | None = None,
    scheduler=None,
) -> Generator[Progress, None, XraySeparation]:
    """Train the unfolded separator on this painting, then separate the whole X-ray.

    Parameters
    ----------
    mixed : array-like or path, shape (H, W)
        The measured (mixed) X-ray image.
    rgb1 : array-like or path, shape (H, W, 3)
        Photograph of side 1, registered to the X-ray.
    rgb2 : array-like or path, shape (H, W, 3), optional
        Photograph of side 2 (mirrored onto the X-ray's grid), when available.
    iterations : int
        Training budget in Adam steps (ignored when ``config`` is given).
    max_minutes : float, optional
        Training budget in minutes (whichever budget ends first).
    config : SeparationConfig, optional
        All network and training settings.
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    out : path, optional
        ``*.zarr`` (OME-Zarr, axes ``cyx``: side 1, side 2, error) or ``*.tif``; None keeps the
        result in memory.
    overwrite : bool
        Replace an existing output.
    tile : (int, int), optional
        Tile size of the full-image pass (default: planned from memory).
    check_alignment : bool
        Refuse photographs that are clearly not registered to the X-ray.
    cancel : CancelToken, optional
        Stops everything (raises RunCancelled).
    stop_training : CancelToken, optional
        Ends training early and separates with the best network so far.
    scheduler : optional
        dask.distributed scheduler for the full-image pass.

    Yields
    ------
    Progress
        Training progress (with ``preview`` dicts ``{"side1", "side2", "origin"}``), then tiles.

    Returns
    -------
    XraySeparation
    """
    from napari_mbdl.engine.device import resolve_device

    mixed, rgb1, rgb2 = validate_inputs(mixed, rgb1, rgb2, check_alignment)
    if config is None:
        config = SeparationConfig(iterations=int(iterations), max_minutes=max_minutes)
    elif max_minutes is not None:
        config = replace(config, max_minutes=max_minutes)
    if config.iterations < 0:
        raise InputError("the number of training iterations cannot be negative")
    if min(config.weight_rgb, config.exclusion_weight(rgb2 is not None), config.weight_sparsity,
           config.rendering_intensity_weight) < 0:
        raise InputError("loss weights cannot be negative")
    if config.rendering_fit_scales(rgb2 is not None) < 0:
        raise InputError("the rendering fit's number of scales cannot be negative")
    photos = [_UnitRGB(rgb1)] + ([_UnitRGB(rgb2)] if rgb2 is not None else [])
    device_name = resolve_device(device)

    class _Either:  # training stops on either token
        cancelled = property(lambda self: any(t is not None and t.cancelled for t in (cancel, stop_training)))

    trained = yield from train_separator_steps(
        mixed, photos[0], photos[1] if len(photos) > 1 else None, config, device=device_name, cancel=_Either()
    )
    if cancel is not None:
        cancel.raise_if_cancelled()
    operation = separation_operation(trained, tuple(p.factor for p in photos))
    inputs = [mixed] + [p.array for p in photos]
    result = yield from run_blocks(
        operation, inputs, n_tiled=2, axes="yx", tile=tile, out=out, out_core_axes="c",
        out_core_position="first", overwrite=overwrite, device=device_name, cancel=cancel,
        scheduler=scheduler, stage="separating",
        attrs={"channels": ["side 1", "side 2", "re-synthesis error"]},
    )
    stacked = result.array
    return XraySeparation(stacked[0], stacked[1], stacked[2], stacked, trained, result)


def separate_xray(mixed, rgb1, rgb2=None, **options) -> XraySeparation:
    """Separate a mixed X-ray into the X-ray images of the two sides (plain call).

    Takes the same arguments as :func:`separate_xray_steps`.

    Examples
    --------
    >>> from napari_mbdl import separate_xray
    >>> from napari_mbdl.xray_separation.synthetic import make_double_sided_panel
    >>> panel = make_double_sided_panel(64)
    >>> result = separate_xray(panel.mixed, panel.rgb1, iterations=5, device="cpu")
    >>> result.side1.shape
    (64, 64)
    """
    return run_steps(separate_xray_steps(mixed, rgb1, rgb2, **options))
