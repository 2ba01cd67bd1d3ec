"""Simulated light-field data: sparse neuron-like cells, their light fields through ``H``, camera noise.

The true volumes are returned alongside the light fields so tests and benchmarks can score reconstructions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_mbdl.engine.errors import InputError
from napari_mbdl.lfm.optics import LFOptics, LFPsf


@dataclass
class LFSample:
    """A simulated light-field recording and its truth.

    Attributes
    ----------
    volume : ndarray, (Z, Y, X) or (T, Z, Y, X), float32
        True fluorescence volume(s), in photon units: ``H volume`` is the noise-free light field.
    light_field : ndarray, (H, W) or (T, H, W), float32
        Noisy camera frame(s) (Poisson shot noise + Gaussian read noise, offset removed).
    clean_light_field : ndarray, same shape as ``light_field``
        ``H volume`` without noise.
    cells : ndarray, (n_cells, 3)
        Cell centres ``(z_um, y_voxel, x_voxel)``: depth in micrometres, lateral position in voxels.
    footprints : ndarray, (n_cells, Z, Y, X), float32
        Each cell's unit-brightness volume (spatial footprint).
    activity : ndarray, (T, n_cells), float32
        Brightness of every cell in every frame (T = 1 for a single volume), in the units of ``volume``.
    psf : LFPsf
        The PSF (and optics) used.
    """

    volume: np.ndarray
    light_field: np.ndarray
    clean_light_field: np.ndarray
    cells: np.ndarray
    footprints: np.ndarray
    activity: np.ndarray
    psf: LFPsf
    info: dict = field(default_factory=dict)

    @property
    def optics(self) -> LFOptics:
        return self.psf.optics

    @property
    def truth(self) -> np.ndarray:
        """Alias of :attr:`volume`."""
        return self.volume


def render_cells(cells: np.ndarray, optics: LFOptics, shape: tuple[int, int, int], radius_um: float = 2.5,
                 axial_radius_um: float = 4.0) -> np.ndarray:
    """Unit-peak Gaussian cell footprints ``(n_cells, Z, Y, X)`` sampled at the voxel centres."""
    _, vy, vx = optics.voxel_size_um
    depths = np.asarray(optics.depths_um)
    Z, Y, X = shape
    yy, xx = np.arange(Y), np.arange(X)
    out = np.zeros((len(cells), Z, Y, X), dtype=np.float32)
    for c, (zc, yc, xc) in enumerate(cells):
        gz = np.exp(-0.5 * ((depths - zc) / axial_radius_um) ** 2)
        gy = np.exp(-0.5 * ((yy - yc) * vy / radius_um) ** 2)
        gx = np.exp(-0.5 * ((xx - xc) * vx / radius_um) ** 2)
        out[c] = (gz[:, None, None] * gy[None, :, None] * gx[None, None, :]).astype(np.float32)
    return out


def calcium_activity(n_frames: int, n_cells: int, rng: np.random.Generator, firing_fraction: float = 0.3,
                     rate: float = 0.08, tau_frames: float = 4.0, baseline: tuple = (0.2, 0.5)) -> np.ndarray:
    """Calcium-like traces ``(T, n_cells)``: a baseline, and for a few cells spikes with exponential decay."""
    base = rng.uniform(*baseline, size=n_cells)
    traces = np.tile(base, (n_frames, 1))
    firing = rng.random(n_cells) < firing_fraction
    if n_cells and not firing.any():
        firing[rng.integers(n_cells)] = True
    kernel = np.exp(-np.arange(n_frames) / tau_frames)
    for c in np.flatnonzero(firing):
        spikes = (rng.random(n_frames) < rate) * rng.uniform(0.5, 1.5, n_frames)
        if not spikes.any():
            spikes[rng.integers(n_frames)] = 1.0
        traces[:, c] += np.convolve(spikes, kernel)[:n_frames]
    return traces.astype(np.float32)


def simulate_sample(psf: LFPsf | None = None, n_lenslets: tuple[int, int] = (15, 15), n_cells: int = 20,
                    n_frames: int = 0, photons: float = 200.0, read_noise: float = 2.0, background: float = 0.0,
                    radius_um: float = 2.5, seed: int = 0, operator=None) -> LFSample:
    """Simulate sparse cells in scattering-free tissue and their noisy light field(s).

    Parameters
    ----------
    psf : LFPsf, optional
        Defaults to ``compute_psf(LFOptics())`` (a few seconds).
    n_lenslets : (int, int)
        Light-field size in lenslets.
    n_cells : int
        Number of cells (Gaussian blobs of ``radius_um`` lateral sigma).
    n_frames : int
        0 for one volume and light field; ``T > 0`` for a time series ``(T, ...)`` where a few cells fire.
    photons : float
        Peak expected photon count of the brightest light-field pixel over the recording.
    read_noise : float
        Standard deviation of the Gaussian read noise, in photons.
    background : float
        Uniform background added to the light field before noise (photons per pixel), subtracted after.
    seed : int
        Seed of everything random.
    operator : LFMOperator, optional
        Reuse an operator built from ``psf``.

    Returns
    -------
    LFSample
    """
    from napari_mbdl.lfm.operator import LFMOperator
    from napari_mbdl.lfm.optics import compute_psf

    if psf is None:
        psf = compute_psf(LFOptics())
    if n_cells < 0 or n_frames < 0 or photons <= 0 or read_noise < 0 or background < 0:
        raise InputError("simulate_sample: counts and noise levels must be non-negative (photons > 0)")
    La, Lb = (int(v) for v in n_lenslets)
    if La < 1 or Lb < 1:
        raise InputError("simulate_sample: n_lenslets must be positive")
    o = psf.optics
    rng = np.random.default_rng(seed)
    s = o.voxels_per_lenslet
    shape = (o.n_depths, La * s, Lb * s)
    margin = min(1.5 * radius_um / o.voxel_size_um[1], shape[1] / 4)
    cells = np.stack([
        rng.uniform(o.depths_um[0], o.depths_um[-1], n_cells),
        rng.uniform(margin, shape[1] - 1 - margin, n_cells),
        rng.uniform(margin, shape[2] - 1 - margin, n_cells),
    ], axis=1) if n_cells else np.zeros((0, 3))
    footprints = render_cells(cells, o, shape, radius_um=radius_um)
    T = max(n_frames, 1)
    if n_frames:
        activity = calcium_activity(T, n_cells, rng)
    else:
        activity = rng.uniform(0.5, 1.0, size=(1, n_cells)).astype(np.float32)
    volume = np.einsum("tc,czyx->tzyx", activity, footprints).astype(np.float32)
    H = operator if operator is not None else LFMOperator(psf)
    clean = np.stack([H.forward(v) for v in volume]).astype(np.float64)
    scale = photons / max(float(clean.max()), 1e-12)
    clean *= scale
    volume *= scale
    expected = clean + background
    noisy = rng.poisson(expected).astype(np.float64) + rng.normal(0.0, read_noise, size=expected.shape)
    noisy -= background
    if not n_frames:
        volume, clean, noisy = volume[0], clean[0], noisy[0]
    return LFSample(
        volume=volume.astype(np.float32), light_field=noisy.astype(np.float32),
        clean_light_field=clean.astype(np.float32), cells=cells, footprints=footprints,
        activity=(activity * scale).astype(np.float32), psf=psf,
        info={"seed": seed, "photons": photons, "read_noise": read_noise, "background": background,
              "n_lenslets": [La, Lb], "brightness_scale": scale},
    )
