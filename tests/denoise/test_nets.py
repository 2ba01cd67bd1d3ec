import numpy as np
import pytest
import torch

from napari_mbdl.denoise.nets import (
    PRESETS, DnCNN, InvertibleDenoiser, NENet, UndecimatedSplit, block_basis, count_parameters,
)

from .conftest import randomise


def rel_error(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.mark.parametrize("block", [2, 4])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("learnable", [False, True])
def test_split_merge_is_exact_for_any_size(block, dilation, learnable):
    split = UndecimatedSplit(block, dilation, learnable)
    if learnable:
        with torch.no_grad():
            split.skew.normal_(0, 0.5)
    x = torch.rand(2, 1, 19, 31)
    with torch.no_grad():
        bands = split(x)
        assert bands.shape == (2, block * block, 19, 31)
        assert rel_error(split.inverse(bands), x) < 1e-6


def test_block_basis_is_orthonormal():
    for block in (2, 4):
        b = block_basis(block).reshape(block * block, -1)
        assert torch.allclose(b @ b.T, torch.eye(block * block, dtype=b.dtype), atol=1e-12)
        # band 0 is the constant (coarse) band; the details sum to zero
        assert torch.allclose(b[1:].sum(1), torch.zeros(block * block - 1, dtype=b.dtype), atol=1e-12)


@pytest.mark.parametrize("name", ["winnet", "linn"])
@pytest.mark.parametrize("extra", [{}, {"levels": 2}, {"split": "learned"}, {"levels": 2, "split": "learned"}])
def test_inverse_transform_inverts_forward_float32(name, extra):
    torch.manual_seed(1)
    model = randomise(InvertibleDenoiser(**{**PRESETS[name], **extra}), scale=0.05, seed=3).eval()
    x = torch.rand(2, 1, 33, 47)
    with torch.no_grad():
        coeffs = model.transform(x, 25.0)
        back = model.inverse_transform(coeffs, 25.0)
        # the lifting steps really changed the coefficients (not a trivial identity network)
        split = model.transforms[0].split(x)
        assert rel_error(coeffs[0][1], split[:, 1:]) > 1e-2
    assert rel_error(back, x) < 1e-5


def test_inverse_is_exact_in_float64_even_for_explosive_weights():
    model = InvertibleDenoiser(**{**PRESETS["linn"], "levels": 2}).double()
    with torch.no_grad():
        for mod in model.modules():
            if hasattr(mod, "conv_out"):
                torch.nn.init.kaiming_uniform_(mod.conv_out.weight, nonlinearity="relu")
    x = torch.rand(1, 1, 24, 24, dtype=torch.float64)
    with torch.no_grad():
        back = model.inverse_transform(model.transform(x, 30.0), 30.0)
    assert rel_error(back, x) < 1e-9


@pytest.mark.parametrize("name", ["winnet", "linn"])
def test_shipped_models_invert_and_are_small(name):
    from napari_mbdl.denoise.weights import load_weights, shipped_path

    model, meta = load_weights(shipped_path(name, None))
    assert count_parameters(model) < 200_000
    x = torch.rand(1, 1, 40, 40)
    with torch.no_grad():
        back = model.inverse_transform(model.transform(x, 25.0), 25.0)
    assert rel_error(back, x) < 1e-5


def test_network_is_positively_homogeneous():
    model = randomise(InvertibleDenoiser(**PRESETS["winnet"])).eval()
    x = torch.rand(1, 1, 24, 24)
    with torch.no_grad():
        a = model(x * 3.0, 30.0 * 3.0)
        b = model(x, 30.0) * 3.0
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_untrained_winnet_is_classical_shrinkage_and_denoises(camera):
    clean, noisy = camera
    model = InvertibleDenoiser(**PRESETS["winnet"]).eval()
    with torch.no_grad():
        out = model(torch.from_numpy(noisy)[None, None], 25.0)[0, 0].numpy()
    ref = clean / 255.0
    assert np.mean((out - ref) ** 2) < 0.5 * np.mean((noisy - ref) ** 2)


def test_receptive_radius_bounds_the_influence():
    model = randomise(InvertibleDenoiser(**{**PRESETS["linn"], "steps": 2}), scale=0.3).eval()
    r = model.receptive_radius()
    n = 2 * r + 21
    x = torch.rand(1, 1, n, n)
    y = x.clone()
    y[0, 0, n // 2, n // 2] += 1.0
    with torch.no_grad():
        diff = (model(y, 25.0) - model(x, 25.0)).abs()[0, 0]
    changed = torch.nonzero(diff > 0)
    assert len(changed) > 0
    assert int((changed - n // 2).abs().max()) <= r


def test_detail_bands_shapes_and_sparsity():
    model = InvertibleDenoiser(**{**PRESETS["winnet"], "levels": 2}).eval()
    with torch.no_grad():
        out, before, after = model(torch.rand(1, 1, 20, 20), 25.0, return_bands=True)
    assert out.shape == (1, 1, 20, 20)
    assert [tuple(b.shape) for b in before] == [(1, 15, 20, 20)] * 2
    assert [tuple(a.shape) for a in after] == [(1, 15, 20, 20)] * 2
    assert float(after[0].abs().mean()) < float(before[0].abs().mean())


def test_param_budget_and_dncnn_yardstick():
    assert count_parameters(InvertibleDenoiser(**PRESETS["winnet"])) < 200_000
    assert count_parameters(InvertibleDenoiser(**PRESETS["linn"])) < 200_000
    assert count_parameters(InvertibleDenoiser(**{**PRESETS["winnet"], "levels": 2})) < 200_000
    d = DnCNN()
    assert 550_000 < count_parameters(d) < 560_000
    assert d(torch.rand(1, 1, 16, 16)).shape == (1, 1, 16, 16)


def test_nenet_estimates_noise_level_of_a_smooth_image():
    from napari_mbdl.denoise.weights import load_weights, shipped_path

    nenet, _ = load_weights(shipped_path("nenet", None), expect_kind="nenet")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    smooth = 0.5 + 0.3 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    for sigma in (5.0, 20.0, 45.0):
        img = smooth + rng.standard_normal(smooth.shape) * sigma / 255
        with torch.no_grad():
            est = float(nenet(torch.from_numpy(img.astype(np.float32))[None, None])[0])
        assert abs(est - sigma) < 0.15 * sigma + 1.0, (sigma, est)


def test_nenet_untrained_is_finite_and_batched():
    for correction in (False, True):
        est = NENet(edge_correction=correction)(torch.rand(3, 1, 40, 40))
        assert est.shape == (3,) and torch.isfinite(est).all()
