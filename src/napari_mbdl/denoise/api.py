"""Public denoising API: steps generators (widgets, CLI, demo) and plain functions.

Conventions
-----------
* The networks are 2D: the last two axes are ``(y, x)``; any leading axes (z, t, c, ...) are
  processed plane by plane, streamed tile by tile through the engine.
* ``sigma`` is the Gaussian noise standard deviation in *8-bit units*: 255 is the full
  ``data_range``.  ``data_range`` defaults to the dtype's range for integers (uint8 -> 0..255,
  uint16 -> 0..65535, ...) and to (0, 1) for floats.  The networks are positively homogeneous
  (bias-free convolutions, thresholds proportional to sigma), so the range only fixes the unit.
* Outputs keep the dtype family: integer images come back in their own dtype (rounded; values
  beyond the dtype's limits are clipped and a warning says how many), float64 stays float64,
  other floats become float32.  Inputs are never modified.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_mbdl.denoise.noise import PoissonGaussian, estimate_poisson_gaussian, gat_forward, gat_inverse
from napari_mbdl.denoise.weights import BLIND_RANGE, MODELS, TRAINED_SIGMAS, read_metadata, shipped_path
from napari_mbdl.engine import CancelToken, InputError, Operation, Progress, progress_span, run_blocks, run_steps
from napari_mbdl.io.arrays import open_array

log = logging.getLogger(__name__)

MIN_SIZE = 8  # smallest image side the 4x4 split and the padding handle
SIGMA_LIMIT = 75.0  # beyond this (8-bit units) the image is mostly noise; refuse rather than guess


# ------------------------------------------------------------------------------------ helpers
def default_data_range(dtype) -> tuple[float, float]:
    """Intensities that map to 0 and 255: the dtype's range for integers, (0, 1) otherwise."""
    dtype = np.dtype(dtype)
    if dtype.kind == "u":
        return (0.0, float(np.iinfo(dtype).max))
    if dtype.kind == "i":
        info = np.iinfo(dtype)
        return (float(info.min), float(info.max))
    return (0.0, 1.0)


def output_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return dtype
    if dtype == np.float64:
        return dtype
    return np.dtype(np.float32)


def to_output(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast float results to the output dtype; integers rounded, clipping reported (never silent)."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        rounded = np.rint(values)
        clipped = int(np.count_nonzero((rounded < info.min) | (rounded > info.max)))
        if clipped:
            log.warning("%d values fell outside the %s range and were clipped to it", clipped, dtype)
        return np.clip(rounded, info.min, info.max).astype(dtype)
    return values.astype(dtype)


def resolve_weights(model: str, sigma: float | None, weights: str | Path | None = None) -> Path:
    """Which weights file serves ``model`` at ``sigma``.

    A user file wins; else the dedicated model when ``sigma`` is one of 15/25/50 and shipped, else
    the blind (noise-conditioned) model of the family.
    """
    if weights is not None:
        return Path(weights)
    if model not in MODELS:
        raise InputError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    if sigma is not None and float(sigma) in TRAINED_SIGMAS:
        dedicated = shipped_path(model, int(sigma))
        if dedicated.is_file():
            return dedicated
    blind = shipped_path(model, None)
    if not blind.is_file():
        raise InputError(f"no trained weights for {model!r} are installed ({blind.name} missing)")
    return blind


def _sample_planes(array, max_planes: int = 4, crop: int = 512) -> list[np.ndarray]:
    """A few evenly spaced 2D planes (central crops) of an array with any leading axes."""
    lead = array.shape[:-2]
    n = math.prod(lead) if lead else 1
    picks = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(max_planes, n))})
    h, w = array.shape[-2:]
    ys = slice(max(0, (h - crop) // 2), max(0, (h - crop) // 2) + min(h, crop))
    xs = slice(max(0, (w - crop) // 2), max(0, (w - crop) // 2) + min(w, crop))
    planes = []
    for p in picks:
        index = np.unravel_index(p, lead) if lead else ()
        plane = np.asarray(array[(*index, ys, xs)], dtype=np.float64)
        if not np.isfinite(plane).all():
            raise InputError("the image contains NaN or infinite values; replace or mask them first")
        planes.append(plane)
    return planes


@functools.lru_cache(maxsize=4)
def _load_nenet(device: str = "cpu"):
    from napari_mbdl.denoise.weights import load_weights

    path = shipped_path("nenet", None)
    if not path.is_file():
        raise InputError("the noise estimator (nenet.safetensors) is not installed; give sigma as a number")
    model, _ = load_weights(path, expect_kind="nenet")
    return model.to(device)


def estimate_sigma_unit(planes: list[np.ndarray]) -> float:
    """NENet noise estimate (8-bit units) of planes already scaled to [0, 1]; median over planes."""
    import torch

    nenet = _load_nenet("cpu")
    values = []
    with torch.inference_mode():
        for plane in planes:
            if min(plane.shape) < 16:
                raise InputError(
                    f"the image ({plane.shape[0]}x{plane.shape[1]}) is too small to estimate its noise; give sigma"
                )
            values.append(float(nenet(torch.from_numpy(plane.astype(np.float32))[None, None])[0]))
    return float(np.median(values))


def estimate_noise(image, data_range: tuple[float, float] | None = None) -> float:
    """Estimate the Gaussian noise level of an image (8-bit units of ``data_range``) with NENet.

    Up to 4 planes (central 512x512 crops) of a stack are measured; the median is returned.
    """
    array = open_array(image)
    _check_image(array)
    lo, hi = _data_range(array, data_range)
    return estimate_sigma_unit([(p - lo) / (hi - lo) for p in _sample_planes(array)])


def _check_image(array) -> None:
    if array.ndim < 2:
        raise InputError(f"need an image with at least 2 axes (y, x); got shape {array.shape}")
    if min(array.shape[-2:]) < MIN_SIZE:
        raise InputError(
            f"the image is {array.shape[-2]}x{array.shape[-1]} pixels; the networks need at least {MIN_SIZE}x{MIN_SIZE}"
        )


def _data_range(array, data_range) -> tuple[float, float]:
    lo, hi = data_range if data_range is not None else default_data_range(array.dtype)
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise InputError(f"data_range must be two finite numbers (low < high), got {data_range}")
    return lo, hi


# ------------------------------------------------------------------------------ block function
PRECISIONS = ("float32", "bfloat16")


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return precision


def network_precision(device: str, precision: str):
    """The context the networks run in: nothing for float32, else torch autocast on ``device``.

    With bfloat16 the convolutions run in bfloat16 and everything else (thresholds, lifting
    additions) in float32: within 0.02 dB of float32 on Set12 (docs/denoise.md).  Faster on CPUs
    with bfloat16 units (AMX, AVX512-BF16; measured); on GPUs and on CPUs without such units the
    speed is not measured here.
    """
    import torch

    if _check_precision(precision) == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def _make_denoise_fn(device: str, weights: str, sigma: float, lo: float, hi: float, out_dtype: str,
                     noise: PoissonGaussian | None = None, planes_per_batch: int = 8,
                     ensemble: bool = False, precision: str = "float32"):
    """Build ``fn(block)`` for the engine: scale, (GAT), network or its self-ensemble, (inverse GAT), cast."""
    import torch

    from napari_mbdl.denoise.nets import self_ensemble
    from napari_mbdl.denoise.weights import load_weights

    net, _ = load_weights(weights)
    net = net.to(device)
    dtype = np.dtype(out_dtype)
    if noise is not None:
        g_lo, g_hi = float(gat_forward(lo, noise)), float(gat_forward(hi, noise))

    def fn(block: np.ndarray) -> np.ndarray:
        shape = block.shape
        planes = block.reshape(-1, 1, *shape[-2:])
        out = np.empty(planes.shape, np.float64)
        n_planes = planes.shape[0]
        for start in range(0, n_planes, planes_per_batch):
            stop = min(start + planes_per_batch, n_planes)
            part = planes[start:stop].astype(np.float64)
            if noise is not None:
                part = (gat_forward(part, noise) - g_lo) / (g_hi - g_lo)
            else:
                part = (part - lo) / (hi - lo)
            with torch.inference_mode(), network_precision(device, precision):
                x = torch.from_numpy(part.astype(np.float32)).to(device)
                with progress_span(start / n_planes, stop / n_planes):
                    y = (self_ensemble(net, x, sigma) if ensemble else net(x, sigma)).double().cpu().numpy()
            if noise is not None:
                y = gat_inverse(y * (g_hi - g_lo) + g_lo, noise)
            else:
                y = y * (hi - lo) + lo
            out[start:stop] = y
        return to_output(out.reshape(shape), dtype)

    return fn


@dataclass
class DenoiseResult:
    """The denoised array and what was used to make it."""

    array: Any
    sigma: float
    sigma_estimated: bool
    weights: str
    noise: str
    poisson_gaussian: PoissonGaussian | None = None
    path: Path | None = None
    run: Any = None
    self_ensemble: bool = False
    precision: str = "float32"
    extra: dict = field(default_factory=dict)


def denoise_steps(
    image,
    *,
    model: str = "winnet",
    sigma: float | str = 25.0,
    noise: str = "gaussian",
    gain: float | None = None,
    read_noise: float | None = None,
    offset: float = 0.0,
    weights: str | Path | None = None,
    self_ensemble: bool = False,
    precision: str = "float32",
    data_range: tuple[float, float] | None = None,
    axes: str | None = None,
    device: str = "auto",
    out: str | Path | None = None,
    overwrite: bool = False,
    scheduler=None,
    memory_budget=None,
    tile=None,
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, DenoiseResult]:
    """Denoise an image or stack with a LINN/WINNet network; yields Progress, returns a DenoiseResult.

    Parameters
    ----------
    image : array-like or path
        numpy, dask, zarr, OME-Zarr or TIFF; last two axes are (y, x), any leading axes.
    model : {"winnet", "linn"}
        Network family (ignored if ``weights`` is given).
    sigma : float or "auto"
        Gaussian noise level in 8-bit units of ``data_range`` (0 < sigma <= 75); "auto" estimates
        it with NENet.  Ignored for Poisson-Gaussian noise.
    noise : {"gaussian", "poisson-gaussian"}
        With "poisson-gaussian" the generalised Anscombe transform makes the noise Gaussian
        (unit variance), the blind network denoises, and the exact unbiased inverse maps back.
    gain, read_noise, offset : float, optional
        Poisson-Gaussian parameters in data units (``z = gain * Poisson + N(offset, read_noise^2)``);
        estimated from the data when ``gain`` is not given.
    weights : path, optional
        A weights file (e.g. from the Train widget) instead of the shipped one.
    self_ensemble : bool
        Average the network over the 8 flips and 90-degree rotations of each tile: about 0.1 dB
        higher PSNR for 8 times the time (see docs/denoise.md).
    precision : {"float32", "bfloat16"}
        "bfloat16" runs the convolutions in bfloat16 (torch autocast): within 0.02 dB of float32
        on Set12; 0.52-0.74 of the float32 time on this project's CPU, which has bfloat16 units
        (docs/denoise.md).  Speed on GPUs and on CPUs without bfloat16 units is not measured (an
        older CPU emulates bfloat16 and may be slower).  The result is then not bit-reproducible
        across machines.
    data_range : (low, high), optional
        Intensities that map to 0 and 255 for ``sigma``.
    device, out, overwrite, scheduler, memory_budget, tile, cancel
        Passed to :func:`napari_mbdl.engine.run_blocks` (``out``: None for memory, or a
        ``.zarr``/``.tif`` path written chunk by chunk, resumable).

    Returns
    -------
    DenoiseResult
        ``.array`` (numpy, or lazy dask when ``out`` is a path), ``.sigma`` used, ``.weights``.
    """
    yield Progress("denoise", 0, 1, "checking input")
    _check_precision(precision)
    array = open_array(image)
    _check_image(array)
    lo, hi = _data_range(array, data_range)
    if noise not in ("gaussian", "poisson-gaussian"):
        raise InputError(f"noise must be 'gaussian' or 'poisson-gaussian', not {noise!r}")
    params = None
    estimated = False
    if noise == "poisson-gaussian":
        if gain is None:
            yield Progress("denoise", 0, 1, "estimating Poisson-Gaussian parameters")
            params = estimate_poisson_gaussian(np.stack(_sample_planes(array)))
            estimated = True
        else:
            params = PoissonGaussian(float(gain), float(read_noise or 0.0), float(offset))
        g_range = float(gat_forward(hi, params) - gat_forward(lo, params))
        sigma_value = 255.0 / g_range if g_range > 0 else math.inf  # unit noise over the transformed range
        if sigma_value > SIGMA_LIMIT:
            raise InputError(
                f"the signal is too weak for the data range ({lo:g}-{hi:g}): noise {sigma_value:.0f}/255 after the "
                "Anscombe transform; set data_range to the actual intensity range"
            )
        weights_path = resolve_weights(model, None, weights)
    else:
        if isinstance(sigma, str) and sigma.strip().lower() != "auto":
            try:
                sigma = float(sigma)
            except ValueError:
                raise InputError(f"sigma must be a number or 'auto', not {sigma!r}") from None
        if isinstance(sigma, str):
            yield Progress("denoise", 0, 1, "estimating the noise level (NENet)")
            sigma_value = estimate_sigma_unit([(p - lo) / (hi - lo) for p in _sample_planes(array)])
            estimated = True
            log.info("estimated noise level: %.2f", sigma_value)
        else:
            sigma_value = float(sigma)
        if not (np.isfinite(sigma_value) and 0 < sigma_value <= SIGMA_LIMIT):
            raise InputError(
                f"sigma {sigma_value:g} is outside 0-{SIGMA_LIMIT:g} (8-bit units of the data range "
                f"{lo:g}-{hi:g}); the models were trained for {BLIND_RANGE[0]:g}-{BLIND_RANGE[1]:g}"
            )
        weights_path = resolve_weights(model, None if estimated else round(sigma_value, 6), weights)
    meta = read_metadata(weights_path)
    if meta["kind"] != "denoiser":
        raise InputError(f"{weights_path.name} is not a denoiser weights file")
    from napari_mbdl.denoise.nets import InvertibleDenoiser

    try:
        radius = InvertibleDenoiser(**meta["config"]).receptive_radius()
    except (TypeError, ValueError, KeyError) as error:
        raise InputError(f"{weights_path.name} declares an unknown architecture: {error}") from None
    out_dtype = output_dtype(array.dtype)
    n = array.ndim
    key = (
        f"denoise/{weights_path.name}/sigma{sigma_value:.4f}/range{lo:g},{hi:g}/"
        + (f"pg{params.gain:.6g},{params.read_noise:.6g},{params.offset:.6g}" if params else "gaussian")
        + ("/ensemble8" if self_ensemble else "")
        + ("" if precision == "float32" else f"/{precision}")
    )
    op = Operation(
        key=key,
        make=functools.partial(
            _make_denoise_fn, weights=str(weights_path), sigma=float(sigma_value), lo=lo, hi=hi,
            out_dtype=out_dtype.str, noise=params, ensemble=bool(self_ensemble), precision=precision,
        ),
        halo=(0,) * (n - 2) + (radius, radius),
        out_dtype=out_dtype.str,
        bytes_per_voxel=800.0,
        uses_torch=True,
        min_tile=(1,) * (n - 2) + (min(array.shape[-2], 2 * radius), min(array.shape[-1], 2 * radius)),
    )
    message = (f"sigma {sigma_value:.2f}" + (" (estimated)" if estimated else "") + f", {weights_path.stem}"
               + (", self-ensemble of 8 views" if self_ensemble else "")
               + ("" if precision == "float32" else f", {precision}"))
    yield Progress("denoise", 0, 1, message)
    run = yield from run_blocks(
        op, array, n_tiled=n, axes=axes, out=out, overwrite=overwrite, device=device, scheduler=scheduler,
        memory_budget=memory_budget, tile=tile, cancel=cancel, stage="denoise",
        attrs={"denoise": {"weights": weights_path.name, "sigma": sigma_value, "noise": noise,
                           "self_ensemble": bool(self_ensemble), "precision": precision}},
    )
    return DenoiseResult(
        array=run.array, sigma=sigma_value, sigma_estimated=estimated, weights=str(weights_path), noise=noise,
        poisson_gaussian=params, path=run.path, run=run, self_ensemble=bool(self_ensemble), precision=precision,
    )


def denoise(image, model: str = "winnet", sigma: float | str = 25.0, noise: str = "gaussian", **kwargs):
    """Denoise ``image`` (any leading axes, any dtype); returns an array of the same shape and dtype family.

    See :func:`denoise_steps` for the parameters.  ``sigma="auto"`` estimates the noise level.

    Examples
    --------
    >>> from napari_mbdl import denoise
    >>> clean = denoise(noisy_uint8, model="winnet", sigma=25)      # doctest: +SKIP
    >>> clean = denoise(stack, sigma="auto")                        # doctest: +SKIP
    """
    return run_steps(denoise_steps(image, model=model, sigma=sigma, noise=noise, **kwargs)).array


def detail_bands(image2d, *, model: str = "winnet", sigma: float = 25.0, weights=None, data_range=None):
    """The detail bands ``z_d`` of the invertible transform before and after denoising (one 2D image).

    Returns
    -------
    before, after : list of arrays, one ``(bands, y, x)`` float32 array per scale
    denoised : 2D float32 array, in the [0, 1] scale of ``data_range``
    """
    import torch

    from napari_mbdl.denoise.weights import load_weights

    img = np.asarray(image2d)
    if img.ndim != 2:
        raise InputError(f"detail bands need one 2D image, got shape {img.shape}")
    _check_image(img)
    if not np.isfinite(img).all():
        raise InputError("the image contains NaN or infinite values; replace or mask them first")
    if img.size > 4096 * 4096:
        raise InputError("detail bands are shown for images up to 4096x4096; crop the image first")
    lo, hi = _data_range(img, data_range)
    net, _ = load_weights(resolve_weights(model, sigma, weights))
    x = torch.from_numpy(((img.astype(np.float64) - lo) / (hi - lo)).astype(np.float32))[None, None]
    with torch.inference_mode():
        out, before, after = net(x, float(sigma), return_bands=True)
    return [b[0].numpy() for b in before], [a[0].numpy() for a in after], out[0, 0].numpy()
