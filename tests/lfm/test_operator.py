import numpy as np
import pytest
import torch

from napari_mbdl.engine import InputError
from napari_mbdl.lfm.operator import LFMOperator


def test_adjoint_identity_float64(small_psf, rng):
    H = LFMOperator(small_psf, dtype=torch.float64)
    x = rng.random((2, 3, 6 * 3, 5 * 3))
    y = rng.random((2, 6 * 7, 5 * 7))
    lhs = float(np.sum(H.forward(x) * y))
    rhs = float(np.sum(x * H.adjoint(y)))
    assert abs(lhs - rhs) / abs(lhs) < 1e-5


def test_adjoint_identity_default_optics_float32(default_psf, rng):
    H = LFMOperator(default_psf)
    x = rng.random((9, 30, 45)).astype(np.float32)
    y = rng.random((90, 135)).astype(np.float32)
    lhs = float(np.sum(H.forward(x).astype(np.float64) * y))
    rhs = float(np.sum(x.astype(np.float64) * H.adjoint(y)))
    assert abs(lhs - rhs) / abs(lhs) < 1e-5


def test_point_source_gives_its_psf_and_shifts_by_lenslets(small_psf, small_optics):
    H = LFMOperator(small_psf, dtype=torch.float64)
    N, s, P = small_optics.pixels_per_lenslet, small_optics.voxels_per_lenslet, small_optics.psf_lenslets
    L = 9
    x = np.zeros((3, L * s, L * s))
    a, i = 4, 2  # lenslet 4, sub-offset 2 (rows); lenslet 4, offset 0 (cols)
    x[2, a * s + i, a * s] = 1.0
    y = H.forward(x)
    window = y[(a - P // 2) * N:(a + P // 2 + 1) * N, (a - P // 2) * N:(a + P // 2 + 1) * N]
    np.testing.assert_allclose(window, small_psf.psf[2, i, 0], atol=1e-6)
    shifted = np.roll(x, s, axis=2)  # one lenslet to the right
    np.testing.assert_allclose(H.forward(shifted)[:, N:], y[:, :-N], atol=1e-9)


def test_batched_equals_single_and_tensors_keep_grad(small_psf, rng):
    H = LFMOperator(small_psf)
    x = rng.random((3, 3, 12, 12)).astype(np.float32)
    batch = H.forward(x)
    np.testing.assert_allclose(batch[1], H.forward(x[1]), rtol=1e-5, atol=1e-6)
    t = torch.tensor(x, requires_grad=True)
    H.forward(t).sum().backward()
    assert t.grad is not None and t.grad.shape == t.shape
    assert H.lipschitz() > 0


def test_shape_errors(small_psf):
    H = LFMOperator(small_psf)
    with pytest.raises(InputError, match="does not fit"):
        H.adjoint(np.zeros((20, 21), np.float32))
    with pytest.raises(InputError, match="depth planes"):
        H.forward(np.zeros((4, 6, 6), np.float32))
    with pytest.raises(InputError, match="whole number"):
        H.forward(np.zeros((3, 7, 6), np.float32))
    with pytest.raises(InputError, match="LFPsf"):
        LFMOperator(np.zeros(3))
