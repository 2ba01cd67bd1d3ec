"""Finite-rate-of-innovation (Prony / annihilating-filter) pulse finding in XRF spectra.

An XRF spectrum without its continuum is a stream of Gaussian pulses whose width grows with
energy.  Warping the energy axis to ``u = integral dE / sigma(E)`` gives every pulse unit width, so a
window of the warped spectrum is a stream of identical Gaussians: dividing its Fourier coefficients
by the Gaussian's transform leaves a sum of complex exponentials ``X[m] = sum_k a_k z_k^m`` whose
nodes ``z_k`` give the pulse positions (Prony's method, made robust by Cadzow denoising).  The number
of pulses in each window is chosen by a Bayesian information criterion on the Poisson-weighted fit.
This follows the approach of Yan et al., "When de Prony met Leonardo", IEEE TCI 2021.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_mbdl.engine.errors import InputError
from napari_mbdl.xrf.spectral import DetectorResponse, continuum


@dataclass(frozen=True)
class Pulse:
    """A detected pulse: centre (keV), area (counts), its standard error and significance (area / error)."""

    energy: float
    area: float
    error: float

    @property
    def significance(self) -> float:
        return self.area / self.error if self.error > 0 else float("inf")


def _cadzow(x: np.ndarray, order: int, iterations: int = 8) -> np.ndarray:
    """Denoise exponential-sum samples: alternate rank-``order`` and Toeplitz projections."""
    n = x.size
    rows = n - order - 1 + 1 if n - order > order + 1 else (n + 1) // 2
    cols = n - rows + 1
    for _ in range(iterations):
        t = np.lib.stride_tricks.sliding_window_view(x, cols)[:, ::-1]  # rows x cols Toeplitz
        u, s, vh = np.linalg.svd(t, full_matrices=False)
        if s.size <= order or s[order] < 1e-12 * s[0]:
            break
        t = (u[:, :order] * s[:order]) @ vh[:order]
        # average the anti-diagonals back into a sequence (t[i, j] = x[i + cols - 1 - j])
        flipped = t[:, ::-1]
        total = np.zeros(n, dtype=complex)
        count = np.zeros(n)
        for j in range(cols):
            total[j : j + rows] += flipped[:, j]
            count[j : j + rows] += 1
        x = total / count
    return x


def annihilating_filter_nodes(x: np.ndarray, order: int) -> np.ndarray:
    """Nodes ``z_k`` of ``x[m] = sum_k a_k z_k^m`` (m = 0..n-1) by the total-least-squares annihilating filter."""
    t = np.lib.stride_tricks.sliding_window_view(x, order + 1)[:, ::-1]  # rows: x[m], x[m-1], ..., x[m-K]
    _, _, vh = np.linalg.svd(t, full_matrices=True)
    h = vh[-1].conj()
    return np.roots(h)


def _fit_amplitudes(centres, energies, net, weights, detector):
    """Weighted non-negative amplitudes of unit-area pulses at ``centres``; returns areas, errors, chi^2."""
    from scipy.optimize import nnls

    design = detector.peak_matrix(energies, centres)
    if design.shape[1] == 0:
        return np.zeros(0), np.zeros(0), float(np.sum((net * weights) ** 2))
    weighted = design * weights[:, None]
    areas, _ = nnls(weighted, net * weights, maxiter=50 * design.shape[1])
    chi2 = float(np.sum((weighted @ areas - net * weights) ** 2))
    fisher = weighted.T @ weighted
    errors = np.sqrt(np.clip(np.diag(np.linalg.pinv(fisher)), 0, None))
    return areas, errors, chi2


def find_pulses(
    spectrum,
    energies,
    detector: DetectorResponse | None = None,
    background=None,
    threshold: float = 5.0,
    systematic: float = 0.02,
    max_pulses: int = 12,
    min_energy: float = 0.8,
    window: float = 32.0,
) -> list[Pulse]:
    """Find the pulses (centre, area) of a spectrum with an FRI / Prony estimator.

    Parameters
    ----------
    spectrum : array_like
        Counts per channel (a sum spectrum or one pixel's spectrum).
    energies : array_like
        Channel energies (keV), linear.
    detector : DetectorResponse, optional
        Peak width model ``FWHM(E)^2 = noise^2 + fano * E``.
    background : array_like, optional
        Continuum; estimated (SNIP + refinement) when omitted.
    threshold : float
        Significance (in standard errors) a pulse needs.
    systematic : float
        Relative model error added to the Poisson variance; keeps huge sum spectra from producing
        spurious pulses out of tiny line-shape mismatches.
    max_pulses : int
        Most pulses searched in one window of the spectrum.
    min_energy : float
        Ignore the region below this energy (keV; detector noise peak).
    window : float
        Window length in peak widths (sigma); windows overlap by half and keep the pulses of
        their flat central half.

    Returns
    -------
    list of Pulse
        Sorted by energy.
    """
    detector = detector or DetectorResponse()
    spectrum = np.asarray(spectrum, dtype=np.float64)
    energies = np.asarray(energies, dtype=np.float64)
    if spectrum.ndim != 1 or spectrum.shape != energies.shape or spectrum.size < 16:
        raise InputError("find_pulses needs one spectrum and its energies (same length, at least 16 channels)")
    gain = float(energies[1] - energies[0])
    sigma_channels = detector.sigma(energies) / gain
    if background is None:
        background = continuum(spectrum, sigma_channels)
    net = spectrum - np.asarray(background, dtype=np.float64)
    variance = np.clip(spectrum, 1.0, None) + (systematic * np.clip(spectrum, 0, None)) ** 2
    weights = 1.0 / np.sqrt(variance)
    valid = energies >= min_energy
    if not valid.any():
        return []
    significant = _significant_channels(net, variance, sigma_channels, threshold * 0.6) & valid

    u = detector.warp(np.clip(energies, 0, None))
    u_start, u_stop = u[valid][0], u[-1]
    centres: list[float] = []
    for left in np.arange(u_start - window / 4, u_stop, window / 2):
        core = (u >= left + window / 4) & (u < left + 3 * window / 4)
        if not np.any(significant & core):
            continue
        inside = (u >= left) & (u < left + window) & valid
        found = _pulses_in_window(energies[inside], net[inside], weights[inside], detector, max_pulses, left, window)
        lo, hi = detector.unwarp(left + window / 4), detector.unwarp(left + 3 * window / 4)
        centres.extend(c for c in found if lo <= c < hi)
    if not centres:
        return []
    # final joint amplitudes of all pulses on the whole spectrum, then the significance cut
    centres = np.sort(np.array(centres))
    for _ in range(4):
        areas, errors, _ = _fit_amplitudes(centres, energies[valid], net[valid], weights[valid], detector)
        keep = (areas > 0) & (areas >= threshold * errors)
        if keep.all():
            break
        centres = centres[keep]
    return [Pulse(float(c), float(a), float(s)) for c, a, s in zip(centres, areas, errors)]


def _significant_channels(net, variance, sigma_channels, threshold):
    """Channels where the net counts within +-1.2 sigma exceed ``threshold`` standard errors."""
    n = net.size
    half = np.maximum(np.round(1.2 * sigma_channels).astype(int), 1)
    index = np.arange(n)
    lo, hi = np.clip(index - half, 0, n), np.clip(index + half + 1, 0, n)
    cum_net = np.concatenate([[0.0], np.cumsum(net)])
    cum_var = np.concatenate([[0.0], np.cumsum(variance)])
    z = (cum_net[hi] - cum_net[lo]) / np.sqrt(np.maximum(cum_var[hi] - cum_var[lo], 1e-12))
    return z > threshold


def _pulses_in_window(e, y, w, detector, max_pulses, u_left, window, step=0.5):
    """FRI estimate of the pulse centres (keV) in one window of the (continuum-free) spectrum."""
    if e.size < 4:
        return []
    gain = e[1] - e[0]
    # warped spectrum: density per unit u = counts per keV * sigma(E); each pulse becomes a unit Gaussian
    n = int(np.ceil(window / step))
    u = u_left + step * np.arange(n)
    density = np.interp(detector.unwarp(u), e, y / gain * detector.sigma(e), left=0.0, right=0.0)
    # flat-top (Tukey) taper: pulses in the kept central half are untouched, the ends go smoothly to 0
    ramp = np.clip(np.minimum(u - u_left, u_left + window - u) / (window / 4), 0, 1)
    density = density * 0.5 * (1 - np.cos(np.pi * ramp))
    length = 2 * n
    spectrum_u = np.fft.fft(density, length)
    period = length * step
    max_m = int(np.floor(2.8 * period / (2 * np.pi)))       # the Gaussian's transform stays above ~2 %
    m = np.arange(-max_m, max_m + 1)
    omega = 2 * np.pi * m / period
    samples = spectrum_u[m % length] * step * np.exp(omega**2 / 2.0)
    core = (e >= detector.unwarp(u_left + window / 4)) & (e < detector.unwarp(u_left + 3 * window / 4))
    if not core.any():
        return []
    log_n = np.log(core.sum())
    best_score, best = np.inf, np.zeros(0)
    for order in range(1, min(max_pulses, max_m - 1) + 1):
        denoised = _cadzow(samples, order)
        nodes = annihilating_filter_nodes(denoised, order)
        positions = np.mod(-np.angle(nodes) * period / (2 * np.pi), period)
        centres = detector.unwarp(u_left + positions[positions < window])
        centres = np.sort(centres[(centres > e[0]) & (centres < e[-1])])
        areas, _, _ = _fit_amplitudes(centres, e, y, w, detector)
        model = detector.peak_matrix(e[core], centres) @ areas if centres.size else 0.0
        chi2 = float(np.sum(((model - y[core]) * w[core]) ** 2))
        in_core = (centres >= e[core][0]) & (centres <= e[core][-1]) & (areas > 0)
        score = chi2 + 2.0 * in_core.sum() * log_n
        if score < best_score:
            best_score, best = score, centres[areas > 0]
    return list(best)
