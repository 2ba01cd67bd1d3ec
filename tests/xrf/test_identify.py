import pytest

from napari_mbdl.engine import InputError
from napari_mbdl.xrf.identify import identify_elements
from napari_mbdl.xrf.simulate import ELEMENTS
from napari_mbdl.xrf.spectral import EnergyCalibration


def test_automatic_detection_finds_every_pigment_element_and_no_phantom(detection):
    assert set(detection.elements) == set(ELEMENTS)
    assert all(detection.significance[e] > 5 for e in detection.elements)
    labelled = set(detection.labels.values())
    assert {"Fe K", "Pb L", "Hg L", "Ca K"} <= labelled


@pytest.mark.slow
def test_wrong_calibration_is_refined_from_the_pulses(scan, sum_spectrum):
    wrong = EnergyCalibration(scan.calibration.offset + 0.04, scan.calibration.gain * 1.004)
    result = identify_elements(sum_spectrum, wrong, scan.detector, tube_kv=scan.tube_kv)
    assert set(result.elements) == set(ELEMENTS)
    true_energy, refined, before = (c.energies(1024) for c in (scan.calibration, result.calibration, wrong))
    lines = (true_energy > 1.0) & (true_energy < 30.0)          # where the lines are
    assert abs(before - true_energy)[lines].max() > 0.1
    assert abs(refined - true_energy)[lines].max() < 0.5 * scan.calibration.gain


def test_a_fixed_element_list_and_an_element_outside_the_energy_range(scan, sum_spectrum):
    fixed = identify_elements(sum_spectrum, scan.calibration, scan.detector, tube_kv=50, elements="Fe,Cu",
                              refine_calibration=False)
    assert set(fixed.elements) == {"Fe", "Cu"}
    assert fixed.significance["Fe"] > 5
    with pytest.raises(InputError, match="energy range"):
        identify_elements(sum_spectrum[:51], scan.calibration, scan.detector, elements=["Fe"], tube_kv=50)


def test_add_and_exclude_in_automatic_mode(scan, sum_spectrum):
    result = identify_elements(sum_spectrum, scan.calibration, scan.detector, tube_kv=50, add=["Ba"],
                               exclude=["Co"], refine_calibration=False)
    assert "Ba" in result.elements and "Co" not in result.elements
    assert {"Fe", "Pb", "Hg", "Cu"} <= set(result.elements)
