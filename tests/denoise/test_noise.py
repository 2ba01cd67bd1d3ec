import numpy as np
import pytest

from napari_mbdl.denoise.noise import PoissonGaussian, estimate_poisson_gaussian, gat_forward, gat_inverse
from napari_mbdl.engine import InputError


@pytest.mark.parametrize("gain,read_noise", [(1.0, 0.0), (2.0, 3.0), (0.5, 1.0)])
@pytest.mark.parametrize("photons", [0.5, 3.0, 30.0, 2000.0])
def test_exact_unbiased_inverse_recovers_the_mean(gain, read_noise, photons):
    rng = np.random.default_rng(0)
    params = PoissonGaussian(gain, read_noise, offset=10.0)
    z = gain * rng.poisson(photons, 300_000) + rng.normal(10.0, read_noise, 300_000)
    d = gat_forward(z, params)
    if photons >= 3:
        assert abs(d.std() - 1.0) < 0.08  # variance stabilised
    recovered = float(gat_inverse(d.mean(), params))
    assert abs(recovered - (gain * photons + 10.0)) < 0.02 * gain * photons + 0.02 * gain


def test_inverse_is_monotone_and_non_negative():
    params = PoissonGaussian(1.0, 0.5)
    d = np.linspace(0, 200, 500)
    y = gat_inverse(d, params)
    assert np.all(np.diff(y) >= 0) and y.min() >= 0


def test_estimate_poisson_gaussian_gain():
    rng = np.random.default_rng(1)
    y = np.tile(np.linspace(5, 200, 256), (256, 1))
    z = 2.0 * rng.poisson(y) + rng.normal(0, 4.0, y.shape)
    est = estimate_poisson_gaussian(z)
    assert abs(est.gain - 2.0) < 0.2


def test_bad_parameters_and_constant_images():
    with pytest.raises(InputError):
        PoissonGaussian(0.0)
    with pytest.raises(InputError):
        PoissonGaussian(1.0, -1.0)
    with pytest.raises(InputError):
        estimate_poisson_gaussian(np.full((64, 64), 3.0))
    with pytest.raises(InputError):
        estimate_poisson_gaussian(np.ones((8, 8)))
