import numpy as np
import pytest


@pytest.fixture(scope="session")
def scan():
    """A small simulated painting (24 x 24 pixels, 1024 channels, 0-40 keV) with its true maps."""
    from napari_mbdl.xrf.simulate import simulate_painting

    return simulate_painting((24, 24), 1024, seed=3)


@pytest.fixture(scope="session")
def sum_spectrum(scan):
    return scan.cube.sum(axis=(0, 1)).astype(np.float64)


@pytest.fixture(scope="session")
def detection(scan, sum_spectrum):
    from napari_mbdl.xrf.identify import identify_elements

    return identify_elements(sum_spectrum, scan.calibration, scan.detector, tube_kv=scan.tube_kv)
