"""Fixtures of the fusion tests: a small depth-coding convolution operator and a simulated pair."""

import numpy as np
import pytest


class DepthConvolution:
    """A small linear 'light-field-like' operator for fast tests.

    Each depth plane is blurred by its own Gaussian and shifted sideways in proportion to its
    depth (a parallax), then the planes are summed onto one image; the adjoint correlates with
    the same kernels.  It is not a microscope model, only a well-posed test operator.
    """

    def __init__(self, volume_shape, radius=4):
        self.volume_shape = tuple(volume_shape)
        self.light_field_shape = self.volume_shape[1:]
        z = self.volume_shape[0]
        yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        self.kernels = []
        for k in range(z):
            sigma = 0.7 + 0.5 * abs(k - (z - 1) / 2)
            dx = 1.5 * (k - (z - 1) / 2)
            kernel = np.exp(-((yy**2) + (xx - dx) ** 2) / (2 * sigma**2)) + 0.5 * np.exp(
                -(((yy - dx) ** 2) + xx**2) / (2 * sigma**2)
            )
            self.kernels.append((kernel / kernel.sum()).astype(np.float32))

    def forward(self, volume):
        from scipy import ndimage

        volume = np.asarray(volume, np.float32)
        return sum(ndimage.convolve(volume[k], self.kernels[k], mode="constant") for k in range(len(self.kernels)))

    def adjoint(self, light_field):
        from scipy import ndimage

        light_field = np.asarray(light_field, np.float32)
        return np.stack([ndimage.correlate(light_field, k, mode="constant") for k in self.kernels])


@pytest.fixture(scope="session")
def small_pair():
    """(sample, operator): 8 cells, 60 frames on a (4, 32, 32) LFM grid, through DepthConvolution."""
    from napari_mbdl.fusion.simulate import simulate_light_fields, simulate_structure

    sample = simulate_structure(volume_shape=(4, 32, 32), lfm_voxel_um=(6.0, 2.0, 2.0), n_neurons=8, n_frames=60,
                                rotation_deg=3.0, shift_um=(1.0, 2.0, -1.5), seed=3)
    operator = DepthConvolution(sample.volume_shape)
    simulate_light_fields(sample, operator, photons=300.0, seed=4)
    return sample, operator


@pytest.fixture(scope="session")
def lfm_pair():
    """(sample, psf): the physical-LFM sample, small (8 x 8 lenslets, 12 cells, 60 frames)."""
    from napari_mbdl.fusion.sample import make_sample

    return make_sample(n_lenslets=8, n_neurons=12, n_frames=60, seed=5)
