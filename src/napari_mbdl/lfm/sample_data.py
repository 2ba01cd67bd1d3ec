"""Sample data for napari: simulated light fields (generated on demand; the PSF is cached per user).

* a single light field of sparse cells and its true volume;
* a short time series in which a few cells fire, and its true volumes;
* a raw (unrectified: rotated, non-integer pitch) camera frame and its white image, for the calibration step.
"""

from __future__ import annotations

import numpy as np

from napari_mbdl.lfm.calibration import LensletGrid
from napari_mbdl.lfm.optics import LFOptics, default_cache_dir, load_or_compute_psf

RAW_PITCH_PX = 16.3
RAW_ROTATION_DEG = 1.2


def default_psf():
    """The PSF of the default optics (computed once, then read from the user cache)."""
    return load_or_compute_psf(LFOptics(), default_cache_dir())


def _volume_meta(optics: LFOptics, name: str, time_axis: bool = False) -> dict:
    scale = optics.voxel_size_um
    return {"name": name, "scale": ((1.0,) if time_axis else ()) + tuple(scale), "colormap": "magma",
            "blending": "additive", "metadata": {"lfm_optics": optics.to_dict()}}


def _lf_meta(optics: LFOptics, name: str) -> dict:
    return {"name": name, "colormap": "gray", "metadata": {"lfm_optics": optics.to_dict()}}


def light_field_sample():
    """One simulated light field (15 x 15 lenslets of 15 x 15 pixels) and its true volume."""
    from napari_mbdl.lfm.simulate import simulate_sample

    psf = default_psf()
    sample = simulate_sample(psf, n_lenslets=(15, 15), n_cells=20, seed=1)
    return [
        (sample.light_field, _lf_meta(psf.optics, "light field (simulated)"), "image"),
        (sample.volume, _volume_meta(psf.optics, "true volume"), "image"),
    ]


def time_series_sample(n_frames: int = 12):
    """A simulated light-field time series (T, H, W) with a few cells firing, and the true volumes."""
    from napari_mbdl.lfm.simulate import simulate_sample

    psf = default_psf()
    sample = simulate_sample(psf, n_lenslets=(15, 15), n_cells=15, n_frames=n_frames, seed=2)
    return [
        (sample.light_field, _lf_meta(psf.optics, "light-field series (simulated)"), "image"),
        (sample.volume, _volume_meta(psf.optics, "true volumes", time_axis=True), "image"),
    ]


def to_raw_camera(rectified: np.ndarray, pixels_per_lenslet: int, grid: LensletGrid) -> np.ndarray:
    """Resample a rectified light field onto a camera with another pitch and rotation (inverse of rectify)."""
    from scipy.ndimage import map_coordinates

    N = pixels_per_lenslet
    La, Lb = rectified.shape[0] // N, rectified.shape[1] // N
    e_row, e_col = grid.axes()
    yy, xx = np.mgrid[0:grid.image_shape[0], 0:grid.image_shape[1]].astype(float)
    d = np.stack([yy - grid.center_yx[0], xx - grid.center_yx[1]], axis=-1)
    a = d @ e_row / grid.pitch_px  # lenslet coordinates relative to the centre lenslet
    b = d @ e_col / grid.pitch_px
    i = (a + La // 2) * N + (N - 1) / 2
    j = (b + Lb // 2) * N + (N - 1) / 2
    return map_coordinates(rectified.astype(np.float32), [i, j], order=1, mode="constant", cval=0.0)


def raw_sample():
    """A raw camera light field (pitch 16.3 px, rotated 1.2 degrees) and the white image of the same camera."""
    from napari_mbdl.lfm.operator import LFMOperator
    from napari_mbdl.lfm.simulate import simulate_sample

    psf = default_psf()
    o = psf.optics
    H = LFMOperator(psf)
    sample = simulate_sample(psf, n_lenslets=(15, 15), n_cells=20, seed=3, operator=H)
    white_rect = H.forward(np.ones((o.n_depths, 15 * o.voxels_per_lenslet, 15 * o.voxels_per_lenslet), np.float32))
    shape = (int(15 * RAW_PITCH_PX) + 6, int(15 * RAW_PITCH_PX) + 10)
    grid = LensletGrid(((shape[0] - 1) / 2 + 0.3, (shape[1] - 1) / 2 - 0.4), RAW_PITCH_PX, RAW_ROTATION_DEG, shape)
    raw = to_raw_camera(sample.light_field, o.pixels_per_lenslet, grid)
    white = to_raw_camera(white_rect / white_rect.max() * 1000.0, o.pixels_per_lenslet, grid)
    rng = np.random.default_rng(3)
    white = rng.poisson(np.clip(white, 0, None)).astype(np.float32)
    return [
        (raw, {"name": "raw light field (camera)", "colormap": "gray"}, "image"),
        (white, {"name": "white image (camera)", "colormap": "gray"}, "image"),
    ]
