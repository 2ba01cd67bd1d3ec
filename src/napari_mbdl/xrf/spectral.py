"""Energy calibration, detector response and continuum (SNIP) estimation for XRF spectra (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_mbdl.engine.errors import InputError

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class EnergyCalibration:
    """Linear channel-to-energy map ``E = offset + gain * channel`` (keV)."""

    offset: float
    gain: float

    def __post_init__(self):
        if not (np.isfinite(self.offset) and np.isfinite(self.gain)) or self.gain <= 0:
            raise InputError(f"energy calibration needs a positive finite gain (got offset={self.offset}, gain={self.gain})")

    def energies(self, n_channels: int) -> np.ndarray:
        return self.offset + self.gain * np.arange(n_channels, dtype=np.float64)

    def channel(self, energy):
        return (np.asarray(energy, dtype=np.float64) - self.offset) / self.gain

    @classmethod
    def from_two_lines(cls, channel_1: float, energy_1: float, channel_2: float, energy_2: float) -> "EnergyCalibration":
        """Calibration through two (channel, keV) points, e.g. the Fe K-alpha and Pb L-alpha peaks."""
        if channel_1 == channel_2 or energy_1 == energy_2:
            raise InputError("two-line calibration needs two different channels and energies")
        gain = (energy_2 - energy_1) / (channel_2 - channel_1)
        return cls(offset=float(energy_1 - gain * channel_1), gain=float(gain))

    @classmethod
    def from_energies(cls, energy: np.ndarray) -> "EnergyCalibration":
        """Calibration from an energy axis (keV per channel); it must be (close to) linear and increasing."""
        energy = np.asarray(energy, dtype=np.float64).ravel()
        if energy.size < 2 or not np.all(np.isfinite(energy)):
            raise InputError("the energy axis needs at least two finite values")
        channels = np.arange(energy.size)
        gain, offset = np.polyfit(channels, energy, 1)
        if gain <= 0 or np.max(np.abs(offset + gain * channels - energy)) > 0.5 * abs(gain):
            raise InputError("the energy axis must increase linearly with the channel index")
        return cls(offset=float(offset), gain=float(gain))

    def as_metadata(self) -> dict:
        return {"offset_keV": self.offset, "gain_keV": self.gain}


def peak_centroid(spectrum: np.ndarray, approx_channel: float, half_width: int = 8) -> float:
    """Channel of the peak near ``approx_channel`` (background-subtracted centroid of the local maximum)."""
    spectrum = np.asarray(spectrum, dtype=np.float64)
    lo = max(int(approx_channel) - half_width, 0)
    hi = min(int(approx_channel) + half_width + 1, spectrum.size)
    if hi - lo < 3:
        raise InputError(f"channel {approx_channel} is outside the spectrum")
    top = lo + int(np.argmax(spectrum[lo:hi]))
    lo, hi = max(top - half_width, 0), min(top + half_width + 1, spectrum.size)
    window = spectrum[lo:hi] - min(spectrum[lo], spectrum[hi - 1])
    window = np.clip(window, 0, None)
    if window.sum() <= 0:
        raise InputError(f"no peak near channel {approx_channel}")
    return float(np.sum(np.arange(lo, hi) * window) / window.sum())


def calibrate_two_lines(spectrum, line_1: tuple[float, float], line_2: tuple[float, float]) -> EnergyCalibration:
    """Fit offset and gain from two known lines given as ``(approximate channel, line energy keV)``.

    The channels are refined to the centroid of the nearby peak of ``spectrum`` (e.g. the sum spectrum).
    """
    c1 = peak_centroid(spectrum, line_1[0])
    c2 = peak_centroid(spectrum, line_2[0])
    return EnergyCalibration.from_two_lines(c1, line_1[1], c2, line_2[1])


@dataclass(frozen=True)
class DetectorResponse:
    """Gaussian detector response with ``FWHM(E)^2 = noise^2 + fano * E`` (keV; keV^2 / keV).

    The defaults describe a silicon drift detector: 100 eV electronic noise and the Fano term
    ``2.355^2 * 3.85 eV * 0.114`` (about 156 eV FWHM at Mn K-alpha).
    """

    noise: float = 0.100
    fano: float = FWHM_PER_SIGMA**2 * 0.00385 * 0.114

    def fwhm(self, energy):
        return np.sqrt(self.noise**2 + self.fano * np.clip(np.asarray(energy, dtype=np.float64), 0, None))

    def sigma(self, energy):
        return self.fwhm(energy) / FWHM_PER_SIGMA

    def warp(self, energy):
        """Energy -> 'width units' u with du = dE / sigma(E): every peak has unit width in u."""
        energy = np.clip(np.asarray(energy, dtype=np.float64), 0, None)
        return FWHM_PER_SIGMA * 2.0 / self.fano * np.sqrt(self.noise**2 + self.fano * energy)

    def unwarp(self, u):
        root = np.asarray(u, dtype=np.float64) * self.fano / (2.0 * FWHM_PER_SIGMA)
        return (root**2 - self.noise**2) / self.fano

    def peak_matrix(self, energies: np.ndarray, centres, widths=None) -> np.ndarray:
        """Counts per channel of unit-area Gaussian peaks, shape ``(n_channels, n_peaks)``.

        Channel-integrated (difference of error functions) so narrow peaks keep their area.
        """
        from scipy.special import erf

        energies = np.asarray(energies, dtype=np.float64)
        gain = float(energies[1] - energies[0]) if energies.size > 1 else 1.0
        centres = np.atleast_1d(np.asarray(centres, dtype=np.float64))
        sigmas = self.sigma(centres) if widths is None else np.broadcast_to(np.asarray(widths, float), centres.shape)
        scale = np.sqrt(2.0) * sigmas[None]
        upper = (energies[:, None] + gain / 2 - centres[None]) / scale
        lower = (energies[:, None] - gain / 2 - centres[None]) / scale
        return 0.5 * (erf(upper) - erf(lower))

    def peaks(self, energies: np.ndarray, centres, areas, widths=None) -> np.ndarray:
        """Counts per channel of Gaussian peaks with the given ``areas`` (counts)."""
        matrix = self.peak_matrix(energies, centres, widths)
        return matrix @ np.broadcast_to(np.asarray(areas, dtype=np.float64), (matrix.shape[1],))


def family_template(family, energies: np.ndarray, detector: DetectorResponse) -> np.ndarray:
    """Unit-area spectrum (counts per channel summing to ~1) of one line family on the channel grid."""
    centres = np.array([line.energy for line in family.lines])
    return detector.peaks(energies, centres, [line.relative for line in family.lines])


def snip_background(spectra, width: int, iterations: int | None = None, smooth: int = 0) -> np.ndarray:
    """Continuum under the peaks by the SNIP algorithm (Ryan et al. 1988; Morhac 2009), last axis.

    Works on any leading shape (one spectrum or a batch).  The LLS transform
    ``log(log(sqrt(y + 1) + 1) + 1)`` compresses peaks so the clipping follows the continuum; the
    clipping window shrinks from ``width`` channels to 1, which keeps sharp continuum bends.

    Parameters
    ----------
    spectra : array_like
        Counts, shape ``(..., n_channels)``; non-negative.
    width : int
        Half-width (channels) of the widest clipping window: about 1-2 peak FWHM.
    iterations : int, optional
        Number of windows (default ``width``), evenly spaced from ``width`` down to 1.
    smooth : int
        Half-width of a moving average applied first; without it the clipping follows the noise
        troughs and the background comes out low by about one noise standard deviation.

    Returns
    -------
    numpy.ndarray
        Background, same shape, float64, never above the (smoothed) input.
    """
    y = np.asarray(spectra, dtype=np.float64)
    width = int(max(1, width))
    smoothed = np.clip(y, 0, None)
    if smooth > 0:
        from scipy.ndimage import uniform_filter1d

        smoothed = uniform_filter1d(smoothed, 2 * int(smooth) + 1, axis=-1, mode="nearest")
    v = np.log(np.log(np.sqrt(smoothed + 1.0) + 1.0) + 1.0)
    n = v.shape[-1]
    windows = np.unique(np.linspace(width, 1, iterations or width).round().astype(int))[::-1]
    for p in windows:
        if 2 * p >= n:
            continue
        mean = 0.5 * (v[..., : n - 2 * p] + v[..., 2 * p :])
        np.minimum(v[..., p : n - p], mean, out=v[..., p : n - p])
    background = (np.exp(np.exp(v) - 1.0) - 1.0) ** 2 - 1.0
    return np.minimum(np.clip(background, 0, None), smoothed)


def peak_channels(spectrum, sigma_channels, threshold: float = 3.0) -> np.ndarray:
    """Channels covered by a peak: a zero-area top-hat filter (Mariscotti) exceeds ``threshold`` sigmas.

    The filter (centre +-1 sigma minus half of each 2-sigma wing) ignores any locally linear
    continuum, however steep, so it finds peaks without a continuum estimate.  Hits are widened
    by 3 sigma on both sides.
    """
    y = np.clip(np.asarray(spectrum, dtype=np.float64), 0, None)
    n = y.size
    sigma = np.broadcast_to(np.asarray(sigma_channels, dtype=np.float64), (n,))
    h = np.maximum(np.round(sigma).astype(int), 1)
    index = np.arange(n)
    cum = np.concatenate([[0.0], np.cumsum(y)])

    def window(lo, hi):
        lo, hi = np.clip(lo, 0, n), np.clip(hi, 0, n)
        return cum[hi] - cum[lo], hi - lo

    centre, n_centre = window(index - h, index + h + 1)
    left, n_left = window(index - 3 * h, index - h)
    right, n_right = window(index + h + 1, index + 3 * h + 1)
    scale = n_centre / np.maximum(n_left + n_right, 1)
    response = centre - scale * (left + right)
    variance = centre + scale**2 * (left + right)
    hits = np.flatnonzero((response > threshold * np.sqrt(np.maximum(variance, 1.0))) & (n_left > 0) & (n_right > 0))
    covered = np.zeros(n + 1, dtype=int)
    pad = np.ceil(3 * sigma[hits]).astype(int)
    np.add.at(covered, np.clip(hits - pad, 0, n), 1)
    np.add.at(covered, np.clip(hits + pad + 1, 0, n), -1)
    return np.cumsum(covered)[:n] > 0


def continuum(spectrum, sigma_channels) -> np.ndarray:
    """Continuum of one spectrum: smoothing of its peak-free channels, bridged by SNIP under the peaks.

    SNIP (on the LLS scale) alone sags where the continuum is concave on that scale, e.g. the steep
    low-energy rise of an air-path spectrum, and would leave broad bumps that look like weak pulses.
    Channels away from any peak (:func:`peak_channels`) are therefore smoothed directly (normalised
    Gaussian smoothing over about one peak width); under peaks the estimate blends into SNIP.

    Parameters
    ----------
    spectrum : array_like
        Counts per channel, 1-D.
    sigma_channels : array_like or float
        Peak standard deviation in channels (per channel, or one value).

    Returns
    -------
    numpy.ndarray
        Continuum, float64, same length.
    """
    from scipy.ndimage import gaussian_filter1d

    y = np.clip(np.asarray(spectrum, dtype=np.float64), 0, None)
    sigma = np.broadcast_to(np.asarray(sigma_channels, dtype=np.float64), y.shape)
    snip = snip_background(y, int(np.ceil(2.0 * sigma.max())), smooth=int(max(1, np.round(sigma.min()))))
    quiet = (~peak_channels(y, sigma)).astype(np.float64)
    width = float(np.median(sigma))
    weight = gaussian_filter1d(quiet, width, mode="nearest")
    smooth = gaussian_filter1d(y * quiet, width, mode="nearest") / np.maximum(weight, 1e-9)
    blend = np.clip(weight, 0.0, 1.0)
    return np.minimum(blend * smooth + (1.0 - blend) * snip, np.maximum(y, snip))
