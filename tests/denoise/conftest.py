import numpy as np
import pytest
import torch

torch.set_num_threads(1)


def randomise(model, scale=0.05, seed=0):
    """Give every lifting step a non-trivial predictor/updater (the trained scale) and random thresholds."""
    from napari_mbdl.denoise.nets import NoiseSoftThreshold, PUNet, UndecimatedSplit

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, PUNet):
                mod.conv_out.weight.copy_(torch.randn(mod.conv_out.weight.shape, generator=gen) * scale)
            if isinstance(mod, NoiseSoftThreshold):
                mod.theta.copy_(torch.rand(mod.theta.shape, generator=gen) * 0.4 - 0.2)
            if isinstance(mod, UndecimatedSplit) and mod.learnable:
                mod.skew.copy_(torch.randn(mod.skew.shape, generator=gen) * 0.3)
    return model


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory):
    """Small random (untrained) WINNet and LINN weights files: {'winnet': path, 'linn': path}."""
    from napari_mbdl.denoise.nets import PRESETS, InvertibleDenoiser
    from napari_mbdl.denoise.weights import save_weights

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for name in ("winnet", "linn"):
        model = randomise(InvertibleDenoiser(**PRESETS[name]), scale=0.02)
        paths[name] = save_weights(model, folder / f"{name}_random.safetensors", kind="denoiser", name=name)
    return paths


@pytest.fixture(scope="session")
def camera():
    from napari_mbdl.denoise.sample_data import noisy_camera_array

    clean, noisy = noisy_camera_array(sigma=25.0, size=128)
    return clean, noisy
