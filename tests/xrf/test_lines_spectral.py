import numpy as np
import pytest

from napari_mbdl.engine import InputError
from napari_mbdl.xrf.lines import element_families, families_in_range, main_line_energy, symbol_to_z
from napari_mbdl.xrf.spectral import DetectorResponse, EnergyCalibration, calibrate_two_lines, continuum, snip_background


def test_families_come_from_xraylib_with_normalised_intensities():
    families = {f.family: f for f in element_families("Fe")}
    assert "K" in families
    k = families["K"]
    assert abs(sum(line.relative for line in k.lines) - 1) < 1e-9
    assert abs(k.main_energy - 6.404) < 0.002                       # Fe K-alpha1
    kb = [line for line in k.lines if line.name == "KM3"][0]
    assert 0.05 < kb.relative < 0.2                                  # K-beta is weaker than K-alpha
    lead = {f.family: f for f in element_families("Pb", 50.0)}
    assert "K" not in lead                                           # Pb K edge (88 keV) is not excited at 50 kV
    assert abs(lead["L"].main_energy - 10.551) < 0.002


def test_families_in_range_and_symbols():
    assert [f.family for f in families_in_range("Sn", 1.0, 20.0)] == ["L"]
    assert {f.family for f in families_in_range("Sn", 1.0, 40.0)} == {"K", "L"}
    assert symbol_to_z("fe") == 26
    with pytest.raises(InputError):
        symbol_to_z("Xx")
    assert abs(main_line_energy("Pb-La") - 10.551) < 0.002
    assert abs(main_line_energy("Cu") - 8.048) < 0.002


def test_two_line_calibration_recovers_offset_and_gain():
    truth = EnergyCalibration(0.05, 0.02)
    energies = truth.energies(2048)
    detector = DetectorResponse()
    spectrum = detector.peaks(energies, [6.404, 10.551], [5000.0, 3000.0]) + 5
    fitted = calibrate_two_lines(spectrum, (truth.channel(6.404) + 3, 6.404), (truth.channel(10.551) - 2, 10.551))
    assert abs(fitted.offset - truth.offset) < 0.005 and abs(fitted.gain / truth.gain - 1) < 1e-3
    with pytest.raises(InputError):
        EnergyCalibration(0.0, -1.0)
    refit = EnergyCalibration.from_energies(truth.energies(100))
    assert (refit.offset, refit.gain) == pytest.approx((truth.offset, truth.gain))


def test_detector_width_law_and_warp():
    detector = DetectorResponse(noise=0.1, fano=0.0025)
    assert detector.fwhm(4.0) == pytest.approx(np.sqrt(0.01 + 0.01))
    e = np.linspace(1, 30, 50)
    # du/dE = 1 / sigma(E): every peak has unit width after the warp
    h = 1e-5
    derivative = (detector.warp(e + h) - detector.warp(e - h)) / (2 * h)
    assert np.allclose(derivative * detector.sigma(e), 1.0, rtol=1e-3)
    assert np.allclose(detector.unwarp(detector.warp(e)), e)
    energies = EnergyCalibration(0, 0.01).energies(2000)
    assert detector.peaks(energies, [5.0], [1000.0]).sum() == pytest.approx(1000.0, rel=1e-6)


def test_snip_and_continuum_follow_a_smooth_background_under_peaks():
    energies = EnergyCalibration(0, 0.02).energies(1500)
    detector = DetectorResponse()
    smooth = 200 * np.exp(-((energies - 15) / 12) ** 2) + 20
    peaks = detector.peaks(energies, [4.0, 6.4, 8.0, 10.5, 12.6], [2e4, 3e4, 1e4, 2e4, 1.5e4])
    rng = np.random.default_rng(0)
    spectrum = rng.poisson(smooth + peaks).astype(float)
    sigma = detector.sigma(energies) / 0.02
    inside = (energies > 2) & (energies < 28)
    for estimate in (snip_background(spectrum, 20, smooth=3), continuum(spectrum, sigma)):
        assert np.median(np.abs(estimate[inside] - smooth[inside]) / smooth[inside]) < 0.08
    batch = snip_background(np.stack([spectrum, spectrum]), 20)
    assert batch.shape == (2, 1500) and np.allclose(batch[0], batch[1])
