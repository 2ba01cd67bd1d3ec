"""Light-field microscopy: wave-optics forward model, calibration and volume reconstruction.

Stable API (imported lazily, so importing this package does not import torch)::

    from napari_mbdl.lfm import LFOptics, compute_psf, LFPsf, LFMOperator, simulate_sample
    psf = compute_psf(LFOptics())                # (Z, s, s, P*N, P*N) + optics + metadata
    H = LFMOperator(psf)                         # H.forward(volume) -> light field, H.adjoint(lf) -> volume
    sample = simulate_sample(psf, n_frames=20)   # volumes, light fields, truth (cells, activity)
"""

from __future__ import annotations

import importlib

_LAZY = {
    "LFOptics": "napari_mbdl.lfm.optics",
    "LFPsf": "napari_mbdl.lfm.optics",
    "compute_psf": "napari_mbdl.lfm.optics",
    "load_or_compute_psf": "napari_mbdl.lfm.optics",
    "LFMOperator": "napari_mbdl.lfm.operator",
    "LFSample": "napari_mbdl.lfm.simulate",
    "simulate_sample": "napari_mbdl.lfm.simulate",
    "richardson_lucy": "napari_mbdl.lfm.solvers",
    "isra": "napari_mbdl.lfm.solvers",
    "UnfoldedISTA": "napari_mbdl.lfm.unfolded",
    "load_unfolded": "napari_mbdl.lfm.unfolded",
    "calibrate_lenslet_grid": "napari_mbdl.lfm.calibration",
    "LensletGrid": "napari_mbdl.lfm.calibration",
    "rectify": "napari_mbdl.lfm.calibration",
    "lfm_reconstruct": "napari_mbdl.lfm.api",
    "lfm_reconstruct_steps": "napari_mbdl.lfm.api",
    "lfm_psf": "napari_mbdl.lfm.api",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'napari_mbdl.lfm' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
