"""Simulated MA-XRF painting cubes with known elemental maps (for tests, benchmarks and sample data).

A painting is a layout of pigments (lead white, vermilion, ochre, umber, azurite, zinc white,
lead-tin yellow, smalt, chalk).  Each pixel's expected spectrum is the sum of the element line
families (xraylib energies and intensities, Gaussian detector response) weighted by the pigment
amounts, plus a scattered-tube continuum; the counts are Poisson.  Soft lines are attenuated by a
simple air/window/self-absorption factor; escape and sum peaks and matrix effects between
elements are not modelled.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import numpy as np

from napari_mbdl.xrf.lines import families_in_range
from napari_mbdl.xrf.spectral import DetectorResponse, EnergyCalibration, family_template

# pigment -> {element: expected counts of that element's lines per pixel at full pigment amount}
PIGMENTS: dict[str, dict[str, float]] = {
    "lead white": {"Pb": 700.0},
    "vermilion": {"Hg": 500.0},
    "yellow ochre": {"Fe": 450.0},
    "raw umber": {"Fe": 300.0, "Mn": 120.0},
    "azurite": {"Cu": 450.0},
    "zinc white": {"Zn": 450.0},
    "lead-tin yellow": {"Pb": 500.0, "Sn": 200.0},
    "smalt": {"Co": 250.0},
    "chalk ground": {"Ca": 200.0},
}
ELEMENTS = ("Ca", "Mn", "Fe", "Co", "Cu", "Zn", "Sn", "Hg", "Pb")


@dataclass
class SimulatedCube:
    """A simulated scan: ``cube`` (y, x, E) counts, its calibration, detector and the true maps."""

    cube: np.ndarray
    calibration: EnergyCalibration
    detector: DetectorResponse
    true_maps: dict[str, np.ndarray]          # element -> expected line counts per pixel
    pigment_maps: dict[str, np.ndarray] = field(default_factory=dict)
    tube_kv: float = 50.0

    @property
    def energy(self) -> np.ndarray:
        return self.calibration.energies(self.cube.shape[-1])


def _blobs(shape, rng, n_blobs, radius):
    """Smooth random patches in [0, 1] (sums of anisotropic super-Gaussian blobs, clipped)."""
    yy, xx = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    out = np.zeros(shape)
    for _ in range(n_blobs):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        ry, rx = radius * rng.uniform(0.5, 1.5, size=2) * np.array(shape) / 64
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        a = (dy * np.cos(angle) + dx * np.sin(angle)) / ry
        b = (-dy * np.sin(angle) + dx * np.cos(angle)) / rx
        out += rng.uniform(0.6, 1.0) * np.exp(-0.5 * (a**2 + b**2) ** 2)
    return np.clip(out, 0, 1)


def pigment_layout(shape: tuple[int, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Pigment amounts in [0, 1] per pixel: a lead-white ground plus overlapping paint patches."""
    rng = np.random.default_rng(seed)
    maps = {}
    for name in PIGMENTS:
        if name == "lead white":
            ramp = np.linspace(0.3, 1.0, shape[1])[None, :] * np.ones(shape)
            maps[name] = 0.5 * ramp + 0.5 * _blobs(shape, rng, 3, 14)
        elif name == "chalk ground":
            maps[name] = 0.4 + 0.6 * _blobs(shape, rng, 4, 16)
        else:
            maps[name] = _blobs(shape, rng, 3, 8)
    return maps


def path_transmission(energy, soft_kev: float = 2.6):
    """Fraction of photons of ``energy`` keV that survive air, detector window and paint self-absorption."""
    return np.exp(-((soft_kev / np.clip(np.asarray(energy, dtype=np.float64), 0.05, None)) ** 3))


def element_spectra(energies, tube_kv: float, detector: DetectorResponse, elements=ELEMENTS) -> dict:
    """Expected spectrum (unit total counts) of each element, all its excited families in range."""
    spectra = {}
    for element in elements:
        families = families_in_range(element, energies[0], energies[-1], tube_kv)
        weights = np.array([family.weight * path_transmission(family.main_energy) for family in families])
        weights = weights / weights.sum()
        spectra[element] = sum(w * family_template(f, energies, detector) for w, f in zip(weights, families))
    return spectra


def continuum(energies: np.ndarray, tube_kv: float) -> np.ndarray:
    """Shape of the scattered tube bremsstrahlung seen by the detector (unit sum)."""
    e = np.clip(energies, 1e-3, None)
    kramers = np.clip(tube_kv - e, 0, None) / e
    # low-energy cut-off of air and the detector window; scatter favours higher energies
    shape = kramers * (1 - np.exp(-((e / 2.5) ** 3))) * (e / tube_kv) ** 1.5
    return shape / shape.sum()


def painting_model(shape, n_channels, max_energy=40.0, continuum_counts=400.0, count_scale=1.0, tube_kv=50.0,
                   seed=0, detector=None):
    """Expected-count model of a painting: per-pixel amounts (y, x, K + 1) and spectra (K + 1, E).

    The last amount/spectrum pair is the continuum; the others are the elements in ``ELEMENTS``.
    Returns ``(amounts, basis, true_maps, pigments, calibration, detector)``.
    """
    detector = detector or DetectorResponse()
    calibration = EnergyCalibration(offset=0.0, gain=max_energy / n_channels)
    energies = calibration.energies(n_channels)
    pigments = pigment_layout(shape, seed)
    true_maps = {element: np.zeros(shape) for element in ELEMENTS}
    for pigment, composition in PIGMENTS.items():
        for element, counts in composition.items():
            true_maps[element] += count_scale * counts * pigments[pigment]
    spectra = element_spectra(energies, tube_kv, detector)
    # the continuum follows the paint density: more material, more scatter
    density = count_scale * continuum_counts * (0.6 + 0.4 * pigments["lead white"])
    basis = np.stack([spectra[element] for element in ELEMENTS] + [continuum(energies, tube_kv)])
    amounts = np.stack([true_maps[element] for element in ELEMENTS] + [density], -1)
    return amounts, basis, true_maps, pigments, calibration, detector


def simulate_painting(
    shape: tuple[int, int] = (64, 64),
    n_channels: int = 2048,
    max_energy: float = 40.0,
    continuum_counts: float = 400.0,
    count_scale: float = 1.0,
    tube_kv: float = 50.0,
    seed: int = 0,
    dtype="uint16",
    detector: DetectorResponse | None = None,
) -> SimulatedCube:
    """Simulate an MA-XRF scan of a painting with known elemental maps.

    Parameters
    ----------
    shape : (int, int)
        Pixels (y, x).
    n_channels : int
        Energy channels; the calibration spans 0 .. ``max_energy`` keV.
    continuum_counts : float
        Mean continuum counts per spectrum.
    count_scale : float
        Multiplies all counts (dwell time).
    seed : int
        Random seed of the layout and the Poisson noise.

    Returns
    -------
    SimulatedCube
        ``cube`` with shape ``(*shape, n_channels)``; ``true_maps[element]`` = expected counts of that
        element's lines in each pixel.
    """
    amounts, basis, true_maps, pigments, calibration, detector = painting_model(
        shape, n_channels, max_energy, continuum_counts, count_scale, tube_kv, seed, detector
    )
    rng = np.random.default_rng(seed + 1)
    cube = np.empty((*shape, n_channels), dtype=dtype)
    for row in range(shape[0]):                                              # row-wise keeps memory flat
        cube[row] = rng.poisson(amounts[row] @ basis)
    return SimulatedCube(cube, calibration, detector, true_maps, pigments, tube_kv)


def poisson_spectra(expected: np.ndarray, rng) -> np.ndarray:
    """Independent Poisson counts for every channel of many spectra (rows), drawn fast.

    Equivalent to ``rng.poisson(expected)``: a Poisson total per spectrum split over the channels
    multinomially; with ~1e3 counts spread over ~4e3 channels this draws ~4x fewer numbers.
    """
    n_rows, n_channels = expected.shape
    totals = rng.poisson(expected.sum(axis=1))
    cdf = np.cumsum(expected, axis=1)
    cdf /= np.maximum(cdf[:, -1:], 1e-300)
    cdf[:, -1] = 1.0
    rows = np.repeat(np.arange(n_rows), totals)
    # row r's cdf lives in (r, r + 1]: one sorted search over all rows at once
    flat = (cdf + np.arange(n_rows)[:, None]).ravel()
    index = np.searchsorted(flat, rng.random(rows.size) + rows, side="right")
    return np.bincount(np.minimum(index, flat.size - 1), minlength=flat.size).reshape(n_rows, n_channels)


def _make_counter(device, basis):
    def count(block):
        # a seed from the block's own values: reproducible whatever the tiling order
        seed = int.from_bytes(hashlib.sha1(block.tobytes()).digest()[:8], "little")
        rng = np.random.default_rng(seed)
        expected = block.reshape(-1, block.shape[-1]).astype(np.float64) @ basis
        counts = poisson_spectra(expected, rng)
        return counts.astype(np.uint16).reshape(*block.shape[:-1], basis.shape[1])

    return count


def write_painting_zarr(path, shape=(512, 512), n_channels=4096, seed=0, chunk=64, count_scale=1.0, overwrite=False):
    """Simulate a (large) painting straight into an OME-Zarr cube, chunk by chunk, never whole in memory.

    Returns ``(true_maps, calibration)``; the cube is (y, x, energy) uint16 with ``xrf_energy`` metadata.
    """
    from napari_mbdl.engine import Operation, run_blocks, run_steps

    amounts, basis, true_maps, _, calibration, _ = painting_model(shape, n_channels, count_scale=count_scale, seed=seed)
    op = Operation(key=f"xrf-simulate/{seed}/{count_scale}", make=functools.partial(_make_counter, basis=basis),
                   out_core_shape=(n_channels,), out_dtype="uint16", bytes_per_voxel=float(n_channels * 24))
    run_steps(run_blocks(op, amounts.astype(np.float32), n_tiled=2, axes="yxk", tile=(chunk, chunk), out=path,
                         out_core_axes="c", overwrite=overwrite, stage="simulate cube",
                         attrs={"xrf_energy": calibration.as_metadata()}))
    return true_maps, calibration
