"""Noise models: generalised Anscombe transform (GAT) with its exact unbiased inverse, and
Poisson-Gaussian parameter estimation.  numpy/scipy only.

Model (Makitalo & Foi, "Optimal inversion of the generalized Anscombe transformation for
Poisson-Gaussian noise", IEEE TIP 2013): ``z = gain * p + n`` with ``p ~ Poisson(y)`` photons and
``n ~ N(offset, read_noise^2)``.  The GAT

    f(z) = 2 / gain * sqrt(max(gain * z + 3/8 gain^2 + read_noise^2 - gain * offset, 0))

makes the noise approximately Gaussian with unit variance, so a Gaussian denoiser applies.  The
*exact unbiased inverse* maps a denoised value ``D`` back to the ``y`` for which ``E[f(z) | y] = D``;
we tabulate ``E[f(z) | y]`` numerically (Poisson sum x Gauss-Hermite quadrature) and invert it by
interpolation, with the closed-form asymptotic expansion beyond the table.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from napari_mbdl.engine.errors import InputError


@dataclass(frozen=True)
class PoissonGaussian:
    """Parameters of the Poisson-Gaussian model, in data units."""

    gain: float
    read_noise: float = 0.0
    offset: float = 0.0

    def __post_init__(self):
        if not (np.isfinite(self.gain) and self.gain > 0):
            raise InputError(f"the gain must be a positive number, not {self.gain}")
        if not (np.isfinite(self.read_noise) and self.read_noise >= 0):
            raise InputError(f"the read noise must be >= 0, not {self.read_noise}")
        if not np.isfinite(self.offset):
            raise InputError(f"the offset must be a finite number, not {self.offset}")

    @property
    def relative_read_noise(self) -> float:
        return self.read_noise / self.gain


def gat_forward(z: np.ndarray, params: PoissonGaussian) -> np.ndarray:
    """Generalised Anscombe transform (noise -> approximately unit-variance Gaussian)."""
    a, s, mu = params.gain, params.read_noise, params.offset
    arg = a * np.asarray(z, np.float64) + 0.375 * a * a + s * s - a * mu
    return (2.0 / a) * np.sqrt(np.maximum(arg, 0.0))


def _closed_form_inverse(d: np.ndarray, sigma_rel: float) -> np.ndarray:
    """Asymptotic closed-form approximation of the exact unbiased inverse (photon units)."""
    d = np.maximum(np.asarray(d, np.float64), 1e-6)
    c = np.sqrt(1.5)
    y = 0.25 * d**2 + 0.25 * c / d - 1.375 / d**2 + 0.625 * c / d**3 - 0.125 - sigma_rel**2
    return np.maximum(y, 0.0)


@functools.lru_cache(maxsize=16)
def _expectation_table(sigma_rel: float, y_max: float = 400.0, n_grid: int = 600):
    """``y`` grid (photons) and ``E[f(z) | y]`` for gain 1 and read noise ``sigma_rel``."""
    from scipy.stats import poisson

    y = np.unique(np.concatenate([np.linspace(0, 2, 80), np.geomspace(2, y_max, n_grid - 80)]))
    nodes, weights = np.polynomial.hermite_e.hermegauss(48)  # for N(0, 1): sum w f(x) / sqrt(2 pi)
    weights = weights / np.sqrt(2 * np.pi)
    k_max = int(y_max + 12 * np.sqrt(y_max) + 30)
    k = np.arange(k_max + 1)
    pmf = poisson.pmf(k[None, :], y[:, None])  # (grid, k)
    # E_n[2 sqrt(max(k + n + 3/8 + s^2, 0))] for n ~ N(0, s^2), per k
    inner = k[:, None] + sigma_rel * nodes[None, :] + 0.375 + sigma_rel**2
    fk = (2.0 * np.sqrt(np.maximum(inner, 0.0)) * weights[None, :]).sum(1)
    expectation = pmf @ fk
    return y, expectation


def gat_inverse(d: np.ndarray, params: PoissonGaussian) -> np.ndarray:
    """Exact unbiased inverse of the GAT: data-unit values whose transform has expectation ``d``."""
    sigma_rel = round(float(params.relative_read_noise), 6)
    y_grid, expectation = _expectation_table(sigma_rel)
    d = np.asarray(d, np.float64)
    photons = np.interp(d, expectation, y_grid, left=0.0)
    beyond = d > expectation[-1]
    if np.any(beyond):
        photons = np.where(beyond, _closed_form_inverse(d, sigma_rel), photons)
    return params.gain * photons + params.offset


def estimate_poisson_gaussian(image: np.ndarray, bins: int = 24) -> PoissonGaussian:
    """Estimate gain and read noise from one image (or a stack of planes) by a variance-vs-mean fit.

    The noise of a Laplacian-like high-pass (unbiased where the signal is locally linear) is
    measured robustly (median absolute deviation) in bins of local mean; a line
    ``variance = gain * mean + c`` is fitted by weighted least squares.  ``c = read_noise^2 -
    gain * offset``; a negative ``c`` is read as an offset with no read noise.
    """
    from scipy import ndimage

    planes = np.asarray(image, np.float64)
    if planes.ndim == 2:
        planes = planes[None]
    planes = planes.reshape(-1, *planes.shape[-2:])
    if min(planes.shape[-2:]) < 16:
        raise InputError("the image is too small (< 16 pixels) to estimate Poisson-Gaussian noise")
    means, residuals = [], []
    kernel = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float64) / np.sqrt(20.0)
    for plane in planes:
        high = ndimage.convolve(plane, kernel, mode="reflect")[2:-2, 2:-2]
        local = ndimage.uniform_filter(plane, 5, mode="reflect")[2:-2, 2:-2]
        means.append(local.ravel())
        residuals.append(high.ravel())
    mean = np.concatenate(means)
    resid = np.concatenate(residuals)
    edges = np.unique(np.quantile(mean, np.linspace(0.02, 0.98, bins + 1)))
    xs, ys, ws = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (mean >= lo) & (mean < hi)
        if sel.sum() < 50:
            continue
        r = resid[sel]
        mad = np.median(np.abs(r - np.median(r))) * 1.4826
        xs.append(mean[sel].mean())
        ys.append(mad**2)
        ws.append(sel.sum())
    if len(xs) < 3:
        raise InputError("too few distinct intensity levels to estimate Poisson-Gaussian noise; give gain and read noise")
    xs, ys, ws = map(np.asarray, (xs, ys, ws))
    design = np.stack([xs, np.ones_like(xs)], 1) * np.sqrt(ws)[:, None]
    (gain, c), *_ = np.linalg.lstsq(design, ys * np.sqrt(ws), rcond=None)
    if not gain > 0:
        raise InputError("the noise does not grow with intensity (no Poisson component found); use Gaussian noise")
    if c >= 0:
        return PoissonGaussian(float(gain), float(np.sqrt(c)), 0.0)
    return PoissonGaussian(float(gain), 0.0, float(-c / gain))
