"""Shared fixtures: a tiny optics for fast physics tests, and the default PSF computed once per session."""

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_psf_cache(tmp_path_factory):
    """Keep PSFs computed by the tests (default-optics cache) out of the user's cache folder."""
    import os

    cache = tmp_path_factory.mktemp("xdg-cache")
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="session")
def small_optics():
    from napari_mbdl.lfm.optics import LFOptics

    return LFOptics(pixels_per_lenslet=7, pixel_size_um=150.0 / 7, voxels_per_lenslet=3,
                    depths_um=(-20.0, 0.0, 20.0), psf_lenslets=5, oversample=3)


@pytest.fixture(scope="session")
def small_psf(small_optics):
    from napari_mbdl.lfm.optics import compute_psf

    return compute_psf(small_optics)


@pytest.fixture(scope="session")
def default_psf(_private_psf_cache):
    """The default optics' PSF, also placed in the (private) cache so widgets and demos find it."""
    from napari_mbdl.lfm.optics import LFOptics, default_cache_dir, load_or_compute_psf

    return load_or_compute_psf(LFOptics(), default_cache_dir())


@pytest.fixture
def rng():
    return np.random.default_rng(0)
