"""Sample data for the denoisers: a noisy natural image and a noisy fluorescence-like stack.

Both are made on the fly (fixed seeds) from data inside installed packages: the natural image is
scikit-image's ``camera`` (shipped with scikit-image), the stack is synthetic.
"""

from __future__ import annotations

import numpy as np


def clean_camera(size: int = 256) -> np.ndarray:
    """scikit-image's camera image: 512x512 for ``size`` > 256, else 2x subsampled (256x256) and,
    below 256, a ``size x size`` crop around the photographer."""
    from skimage import data

    img = data.camera()
    if size > 256:
        return img
    half = img[::2, ::2]
    y0, x0 = min(20, 256 - size), min(60, 256 - size)
    return np.ascontiguousarray(half[y0 : y0 + size, x0 : x0 + size])


def noisy_camera_array(sigma: float = 25.0, seed: int = 0, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(clean uint8, noisy float32 in [0, 1] with Gaussian noise of ``sigma``/255)."""
    clean = clean_camera(size)
    rng = np.random.default_rng(seed)
    noisy = clean.astype(np.float32) / 255 + rng.standard_normal(clean.shape).astype(np.float32) * (sigma / 255)
    return clean, noisy


def fluorescence_stack(
    shape=(5, 128, 128), photons: float = 40.0, gain: float = 2.0, read_noise: float = 3.0, offset: float = 100.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(clean expected values float32, noisy uint16) of a synthetic cell-like stack.

    Blobs (nuclei/vesicles) and curved filaments, blurred; ``z = gain * Poisson(y) + N(offset, read_noise^2)``.
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    vol = np.zeros(shape, np.float64)
    zz, yy, xx = np.ogrid[:nz, :ny, :nx]
    for _ in range(40):  # blobs drifting slowly through z
        cz, cy, cx = rng.uniform(0, nz), rng.uniform(0, ny), rng.uniform(0, nx)
        r = rng.uniform(2, 7)
        vol += rng.uniform(0.3, 1.0) * np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r) + (zz - cz) ** 2 / 8))
    for _ in range(12):  # filaments: random smooth curves
        t = np.linspace(0, 1, 400)
        y0, x0 = rng.uniform(0, ny), rng.uniform(0, nx)
        ang, curv = rng.uniform(0, 2 * np.pi), rng.uniform(-3, 3)
        ys = y0 + 90 * t * np.sin(ang + curv * t)
        xs = x0 + 90 * t * np.cos(ang + curv * t)
        z = int(rng.integers(nz))
        ok = (ys >= 0) & (ys < ny) & (xs >= 0) & (xs < nx)
        vol[z, ys[ok].astype(int), xs[ok].astype(int)] += 0.8
    vol = ndimage.gaussian_filter(vol, (0.7, 1.2, 1.2))
    vol = photons * vol / vol.max() + 1.0  # a dim background of one photon
    counts = rng.poisson(vol)
    noisy = gain * counts + rng.normal(offset, read_noise, shape)
    return (gain * vol + offset).astype(np.float32), np.clip(np.rint(noisy), 0, 65535).astype(np.uint16)


def noisy_camera():
    """napari sample: camera crop with Gaussian noise sigma 25 (and its clean version)."""
    clean, noisy = noisy_camera_array()
    return [
        (noisy, {"name": "noisy camera (sigma 25)", "contrast_limits": (0, 1)}, "image"),
        (clean, {"name": "clean camera", "visible": False}, "image"),
    ]


def noisy_fluorescence():
    """napari sample: synthetic Poisson-Gaussian fluorescence stack (z, y, x), uint16."""
    clean, noisy = fluorescence_stack()
    meta = {"scale": (0.5, 0.1, 0.1), "axis_labels": ("z", "y", "x")}
    return [
        (noisy, {"name": "noisy fluorescence stack", **meta}, "image"),
        (clean, {"name": "expected values", "visible": False, **meta}, "image"),
    ]
