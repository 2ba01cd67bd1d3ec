"""The built-in paired sample: simulated 2P stack + LFM series through the wave-optics model."""

from __future__ import annotations

import functools

import numpy as np

from napari_mbdl.fusion.simulate import FusionSample, simulate_light_fields, simulate_structure


@functools.lru_cache(maxsize=2)
def sample_psf():
    """PSF of the compact sample microscope (``SAMPLE_OPTICS``), computed once per process (seconds)."""
    from napari_mbdl.fusion.api import SAMPLE_OPTICS
    from napari_mbdl.lfm.optics import LFOptics, compute_psf

    return compute_psf(LFOptics(**SAMPLE_OPTICS))


def make_sample(
    n_lenslets: int = 10,
    n_neurons: int = 20,
    n_frames: int = 200,
    frame_rate_hz: float = 10.0,
    photons: float = 200.0,
    seed: int = 0,
    psf=None,
) -> tuple[FusionSample, object]:
    """Simulate the paired 2P / LFM sample (truth kept) with the physical light-field model.

    Parameters
    ----------
    n_lenslets : int
        Light-field side in lenslets (the volume is ``5 n_lenslets`` voxels wide).
    n_neurons, n_frames : int
    frame_rate_hz : float
    photons : float
        Peak photo-electrons per pixel of the mean light field.
    seed : int
    psf : LFPsf, optional
        Default: :func:`sample_psf`.

    Returns
    -------
    sample : FusionSample
    psf : LFPsf
    """
    from napari_mbdl.lfm.operator import LFMOperator

    psf = psf if psf is not None else sample_psf()
    optics = psf.optics
    s = optics.voxels_per_lenslet
    volume_shape = (optics.n_depths, n_lenslets * s, n_lenslets * s)
    sample = simulate_structure(
        volume_shape=volume_shape,
        lfm_voxel_um=optics.voxel_size_um,
        n_neurons=n_neurons,
        n_frames=n_frames,
        frame_rate_hz=frame_rate_hz,
        upsample=(3, 2, 2),
        cell_radius_um=(5.0, 4.0, 4.0),
        seed=seed,
    )
    simulate_light_fields(sample, LFMOperator(psf), photons=photons, seed=seed + 1)
    return sample, psf


def napari_sample():
    """napari sample-data command: the 2P stack and the light-field series (scaled in micrometres)."""
    sample, _ = make_sample()
    return [
        (sample.two_photon, {"name": "2P stack (sample)", "scale": sample.two_photon_voxel_um,
                             "metadata": {"voxel_um": sample.two_photon_voxel_um}}, "image"),
        (sample.light_fields, {"name": "LF series (sample)",
                               "metadata": {"frame_rate_hz": sample.frame_rate_hz}}, "image"),
    ]


def centres_um_in_lfm(labels: np.ndarray, matrix: np.ndarray, volume_shape, lfm_voxel_um) -> np.ndarray:
    """Centroids of 2P labels mapped to the (centred) LFM frame in micrometres (for scoring)."""
    from napari_mbdl.fusion.segment import label_centres

    centres = label_centres(labels)
    mapped = centres @ matrix[:3, :3].T + matrix[:3, 3]
    return (mapped - (np.asarray(volume_shape) - 1) / 2.0) * np.asarray(lfm_voxel_um)
