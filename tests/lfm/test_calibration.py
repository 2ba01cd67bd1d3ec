import numpy as np
import pytest

from napari_mbdl.engine import InputError
from napari_mbdl.lfm.calibration import LensletGrid, calibrate_lenslet_grid, rectify, simulate_white_image


@pytest.mark.parametrize("pitch, rotation, centre", [(15.0, 0.0, (80.0, 90.0)), (13.37, 1.3, (77.6, 91.2)),
                                                     (16.2, -2.0, (85.3, 70.9))])
def test_calibration_recovers_the_grid(pitch, rotation, centre, rng):
    white = simulate_white_image((160, 180), pitch, rotation, centre)
    white = white + rng.normal(0, 0.05, white.shape)
    grid = calibrate_lenslet_grid(white)
    assert grid.pitch_px == pytest.approx(pitch, abs=0.01)
    assert grid.rotation_deg == pytest.approx(rotation, abs=0.05)
    # the centre found is a lattice point: an integer number of lenslets from the true one
    e_row, e_col = grid.axes()
    d = np.asarray(grid.center_yx) - np.asarray(centre)
    steps = np.array([d @ e_row, d @ e_col]) / pitch
    np.testing.assert_allclose(steps, np.round(steps), atol=0.02)


def test_rectify_puts_every_lenslet_on_n_by_n_pixels():
    N = 15
    white = simulate_white_image((170, 190), 16.3, 1.0, (84.2, 95.7), fill=0.3)
    grid = calibrate_lenslet_grid(white, pitch_hint=16.0)
    rect = rectify(white, grid, N)
    assert rect.shape[0] % N == 0 and rect.shape[1] % N == 0
    tiles = rect.reshape(rect.shape[0] // N, N, rect.shape[1] // N, N).mean(axis=(0, 2))
    yy, xx = np.mgrid[0:N, 0:N]
    centroid = (np.sum(tiles * yy) / tiles.sum(), np.sum(tiles * xx) / tiles.sum())
    np.testing.assert_allclose(centroid, ((N - 1) / 2, (N - 1) / 2), atol=0.1)
    stack = rectify(np.stack([white, 2 * white]), grid, N)
    np.testing.assert_allclose(stack[1], 2 * rect, rtol=1e-5)
    assert grid.centers().shape == (rect.shape[0] // N * (rect.shape[1] // N), 2)
    assert LensletGrid.from_dict(grid.to_dict()) == grid


def test_calibration_bad_input():
    with pytest.raises(InputError, match="2-D"):
        calibrate_lenslet_grid(np.zeros((3, 40, 40)))
    with pytest.raises(InputError, match="constant"):
        calibrate_lenslet_grid(np.ones((40, 40)))
    bad = simulate_white_image((40, 40))
    bad[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        calibrate_lenslet_grid(bad)
    grid = LensletGrid((20.0, 20.0), 15.0, 0.0, (40, 40))
    with pytest.raises(InputError, match="does not match"):
        rectify(np.zeros((50, 50)), grid, 15)
