"""Plug-and-play deblurring with the blind denoiser and NENet (the slides' Algorithm 1).

    z_0 = y,  b_0 = NENet(y),  b_1 = 10 b_0,  k = 1
    while b_k > b_0:
        x_k     = argmin_x ||y - h * x||^2 + lam b_0^2 / b_k^2 ||x - z_{k-1}||^2     (FFT, closed form)
        b_{k+1} = NENet(x_k)             (here: kept within [decay * b_k, b_k], see deblur_steps)
        z_k     = Denoiser(x_k, 2 b_{k+1})
    output z_{k-1}

The data step assumes circular convolution; the image is first extended by reflection (with a
cosine taper into the reflected border), so the result has no wrap-around seams.  Each 2D plane
is solved whole (it must fit in memory); leading axes are processed plane by plane.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_mbdl.denoise.api import (
    SIGMA_LIMIT,
    _check_image,
    _data_range,
    _load_nenet,
    output_dtype,
    resolve_weights,
    to_output,
)
from napari_mbdl.engine import CancelToken, InputError, Progress, run_steps, while_computing
from napari_mbdl.io.arrays import open_array

_UNITS = 1000  # progress units per iteration, so the bar also moves within one denoiser pass


# ------------------------------------------------------------------------------------ kernels
def gaussian_kernel(sigma: float, size: int | None = None) -> np.ndarray:
    """Normalised 2D Gaussian blur kernel (``size`` defaults to 2*ceil(3 sigma)+1)."""
    if not (np.isfinite(sigma) and sigma > 0):
        raise InputError(f"the Gaussian kernel width must be > 0, not {sigma}")
    size = int(size or 2 * math.ceil(3 * sigma) + 1)
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-0.5 * (r / sigma) ** 2)
    k = np.outer(g, g)
    return (k / k.sum()).astype(np.float64)


def motion_kernel(length: float, angle: float = 0.0, size: int | None = None) -> np.ndarray:
    """Normalised linear motion blur of ``length`` pixels at ``angle`` degrees (anti-aliased)."""
    if not (np.isfinite(length) and length >= 1):
        raise InputError(f"the motion length must be >= 1 pixel, not {length}")
    size = int(size or 2 * math.ceil(length / 2) + 1)
    c = (size - 1) / 2
    k = np.zeros((size, size))
    theta = math.radians(angle)
    for t in np.linspace(-length / 2, length / 2, int(8 * length) + 1):
        x, y = c + t * math.cos(theta), c - t * math.sin(theta)
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                if 0 <= y0 + dy < size and 0 <= x0 + dx < size:
                    k[y0 + dy, x0 + dx] += wy * wx
    return k / k.sum()


def check_kernel(kernel, image_shape) -> np.ndarray:
    """A usable blur kernel: 2D, finite, positive sum, smaller than the image; normalised to sum 1."""
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or k.size == 0:
        raise InputError(f"the blur kernel must be a 2D image, got shape {k.shape}")
    if not np.isfinite(k).all():
        raise InputError("the blur kernel contains NaN or infinite values")
    if k.sum() <= 0:
        raise InputError("the blur kernel must have a positive sum")
    if k.shape[0] >= image_shape[-2] or k.shape[1] >= image_shape[-1]:
        raise InputError(f"the blur kernel {k.shape} is not smaller than the image {tuple(image_shape[-2:])}")
    return k / k.sum()


def blur(image: np.ndarray, kernel: np.ndarray, mode: str = "wrap") -> np.ndarray:
    """Convolve a 2D image with a kernel (for tests, demos and benchmarks)."""
    from scipy import ndimage

    return ndimage.convolve(np.asarray(image, np.float64), np.asarray(kernel, np.float64), mode=mode)


# ---------------------------------------------------------------------------------- the solver
def _otf(kernel: np.ndarray, shape) -> np.ndarray:
    """Transfer function of ``kernel`` centred at the origin, for arrays of ``shape``."""
    pad = np.zeros(shape)
    kh, kw = kernel.shape
    pad[:kh, :kw] = kernel
    pad = np.roll(pad, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    return np.fft.rfft2(pad)


def _extend(y: np.ndarray, margin: int) -> np.ndarray:
    """Reflect-extend by ``margin`` and taper the extension towards the mean (no wrap-around seam)."""
    ext = np.pad(y, margin, mode="symmetric")
    if margin == 0:
        return ext
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, math.pi, margin))  # 0 -> 1 towards the image
    for axis in (0, 1):
        n = ext.shape[axis]
        w = np.ones(n)
        w[:margin] = ramp
        w[n - margin :] = ramp[::-1]
        mean = ext.mean(axis=axis, keepdims=True)
        shape = [1, 1]
        shape[axis] = n
        ext = mean + (ext - mean) * w.reshape(shape)
    return ext


def _nenet_sigma(x: np.ndarray) -> float:
    import torch

    with torch.inference_mode():
        return float(_load_nenet("cpu")(torch.from_numpy(x.astype(np.float32))[None, None])[0])


@dataclass
class DeblurResult:
    array: Any
    iterations: list[int]
    noise_levels: list[list[float]]
    sigma0: list[float]
    weights: str
    extra: dict = field(default_factory=dict)


def deblur_steps(
    image,
    kernel,
    *,
    model: str = "winnet",
    lam: float = 0.23,
    sigma: float | str = "auto",
    max_iter: int = 30,
    decay: float = 0.7,
    weights: str | Path | None = None,
    data_range: tuple[float, float] | None = None,
    device: str = "auto",
    cancel: CancelToken | None = None,
) -> Generator[Progress, None, DeblurResult]:
    """Plug-and-play deblurring (Algorithm 1) of a 2D image or of every plane of a stack.

    Parameters
    ----------
    image : array-like
        Last two axes (y, x); leading axes are processed plane by plane.
    kernel : 2D array
        Blur kernel (normalised to sum 1); see :func:`gaussian_kernel`, :func:`motion_kernel`.
    model : {"winnet", "linn"}
        Blind denoiser family (noise-conditioned weights).
    lam : float
        Weight of the proximity term (0.23 in the reference implementation).
    sigma : float or "auto"
        Noise level of the blurred image (8-bit units); "auto" estimates it with NENet.
    max_iter : int
        Safety cap on the iterations (the loop normally stops when the noise estimate of the
        data-step image falls to the initial level).
    decay : float
        Slowest allowed fall of the noise level per iteration (``b_{k+1} >= decay * b_k``): NENet
        reads the coloured noise left by the data step as low, which alone would end the loop
        after one or two iterations.  With 0.7 the loop runs about 7 iterations.

    Returns
    -------
    DeblurResult
        ``.array`` same shape and dtype family as the input; per-plane iteration counts and noise
        estimates.
    """
    import torch

    from napari_mbdl.denoise.weights import load_weights
    from napari_mbdl.engine.device import resolve_device

    cancel = cancel or CancelToken()
    array = open_array(image)
    _check_image(array)
    lo, hi = _data_range(array, data_range)
    k = check_kernel(kernel, array.shape)
    if not (np.isfinite(lam) and lam > 0):
        raise InputError(f"lam must be a positive number, not {lam}")
    if int(max_iter) < 1:
        raise InputError("max_iter must be at least 1")
    if not 0 < decay < 1:
        raise InputError(f"decay must be between 0 and 1, not {decay}")
    if isinstance(sigma, str) and sigma != "auto":
        raise InputError(f"sigma must be a number or 'auto', not {sigma!r}")
    if not isinstance(sigma, str) and not (0 < float(sigma) <= SIGMA_LIMIT):
        raise InputError(f"sigma {sigma} is outside 0-{SIGMA_LIMIT:g} (8-bit units)")
    dev = resolve_device(device)
    weights_path = resolve_weights(model, None, weights)
    net, _ = load_weights(weights_path)
    net = net.to(dev)
    lead = array.shape[:-2]
    n_planes = math.prod(lead) if lead else 1
    out_dtype = output_dtype(array.dtype)
    result = np.empty(array.shape, out_dtype)
    margin = int(max(k.shape))
    iterations, levels, sigma0s = [], [], []
    total = n_planes * int(max_iter)
    for p in range(n_planes):
        index = np.unravel_index(p, lead) if lead else ()
        y = np.asarray(array[index], np.float64)
        if not np.isfinite(y).all():
            raise InputError("the image contains NaN or infinite values; replace or mask them first")
        y = (y - lo) / (hi - lo)
        beta0 = max(_nenet_sigma(y) if sigma == "auto" else float(sigma), 0.5)
        ext = _extend(y, margin)
        otf = _otf(k, ext.shape)
        fy = np.conj(otf) * np.fft.rfft2(ext)
        power = np.abs(otf) ** 2
        z = ext
        beta = 10.0 * beta0
        crop = (slice(margin, margin + y.shape[0]), slice(margin, margin + y.shape[1]))
        plane_levels = []
        it = 0
        while beta > beta0 and it < int(max_iter):
            cancel.raise_if_cancelled()
            mu = lam * beta0**2 / beta**2
            x = np.fft.irfft2((fy + mu * np.fft.rfft2(z)) / (power + mu), s=ext.shape)
            # NENet under-reads the coloured (deconvolved) noise of x_k, which would end the loop
            # after one or two steps; so the level may fall at most geometrically per iteration
            beta = max(min(_nenet_sigma(x[crop]), beta), beta * decay)
            plane_levels.append(beta)

            def denoise_iterate(x=x, beta=beta):
                with torch.inference_mode():
                    xt = torch.from_numpy(x.astype(np.float32))[None, None].to(dev)
                    return net(xt, float(min(2.0 * beta, SIGMA_LIMIT))).double().cpu().numpy()[0, 0]

            # one pass over a large plane can take a minute on a CPU: keep progress and Cancel alive
            z = yield from while_computing(
                denoise_iterate, cancel, stage="deblur", done=(p * int(max_iter) + it) * _UNITS, span=_UNITS,
                total=total * _UNITS, label=f"plane {p + 1}/{n_planes}, iteration {it + 1}: denoising",
            )
            it += 1
            yield Progress("deblur", (p * int(max_iter) + it) * _UNITS, total * _UNITS,
                           f"plane {p + 1}/{n_planes}, iteration {it}: noise estimate {beta:.2f}",
                           preview={"plane": p, "iteration": it, "image": z[crop]})
        iterations.append(it)
        levels.append(plane_levels)
        sigma0s.append(beta0)
        result[index] = to_output(z[crop] * (hi - lo) + lo, out_dtype)
        yield Progress("deblur", (p + 1) * int(max_iter) * _UNITS, total * _UNITS,
                       f"plane {p + 1}/{n_planes} done ({it} iterations)")
    return DeblurResult(result, iterations, levels, sigma0s, str(weights_path))


def deblur(image, kernel, **kwargs) -> np.ndarray:
    """Deblur ``image`` with ``kernel`` (see :func:`deblur_steps`); same shape and dtype family."""
    return run_steps(deblur_steps(image, kernel, **kwargs)).array
