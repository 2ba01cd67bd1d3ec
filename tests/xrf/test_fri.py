import numpy as np

from napari_mbdl.xrf.fri import annihilating_filter_nodes, find_pulses
from napari_mbdl.xrf.spectral import DetectorResponse, EnergyCalibration


def test_annihilating_filter_finds_exact_nodes():
    nodes = np.exp(-2j * np.pi * np.array([0.1, 0.23, 0.4]))
    amplitudes = np.array([1.0, 0.5, 2.0])
    samples = (amplitudes[None] * nodes[None] ** np.arange(-8, 9)[:, None]).sum(1)
    found = annihilating_filter_nodes(samples, 3)
    assert np.allclose(np.sort(np.angle(found)), np.sort(np.angle(nodes)), atol=1e-8)


def test_pulses_are_found_where_they_are_even_when_overlapping():
    energies = EnergyCalibration(0.0, 0.02).energies(1500)
    detector = DetectorResponse()
    centres = np.array([3.7, 6.40, 6.60, 12.6, 20.0])       # 6.40 / 6.60 are 1.3 FWHM apart
    areas = np.array([4e4, 3e4, 1.5e4, 2e4, 8e3])
    rng = np.random.default_rng(1)
    spectrum = rng.poisson(detector.peaks(energies, centres, areas) + 50.0).astype(float)
    pulses = find_pulses(spectrum, energies, detector)
    found = np.array([p.energy for p in pulses])
    for centre, area in zip(centres, areas):
        nearest = np.argmin(np.abs(found - centre))
        assert abs(found[nearest] - centre) < 0.2 * detector.sigma(centre)
        assert abs(pulses[nearest].area / area - 1) < 0.1
    assert len(pulses) == len(centres)


def test_no_pulses_in_a_flat_noisy_continuum():
    energies = EnergyCalibration(0.0, 0.02).energies(1500)
    rng = np.random.default_rng(2)
    spectrum = rng.poisson(100 + 50 * np.exp(-energies / 10)).astype(float)
    assert find_pulses(spectrum, energies, DetectorResponse()) == []
