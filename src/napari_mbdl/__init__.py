"""napari-mbdl: model-based deep learning for scientific images in napari.

The public functions are imported lazily so that ``import napari_mbdl`` (and napari's start-up)
never imports torch.  Each is a plain Python call that works with numpy, dask, zarr and TIFF
inputs, outside napari too::

    from napari_mbdl import lfm_reconstruct
    volume = lfm_reconstruct(light_field, psf="psf.zarr", method="unfolded")
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> "module:attribute"; one line per capability.
_PUBLIC_API = {
    "run_blocks": "napari_mbdl.engine:run_blocks",
    "run_steps": "napari_mbdl.engine:run_steps",
    "open_array": "napari_mbdl.io.arrays:open_array",
    "InputError": "napari_mbdl.errors:InputError",
    # --- denoise api ---
    "denoise": "napari_mbdl.denoise.api:denoise",
    "estimate_noise": "napari_mbdl.denoise.api:estimate_noise",
    "deblur": "napari_mbdl.denoise.deblur:deblur",
    # --- lfm api ---
    "lfm_psf": "napari_mbdl.lfm.api:lfm_psf",
    "lfm_reconstruct": "napari_mbdl.lfm.api:lfm_reconstruct",
    # --- fusion api ---
    "fuse_steps": "napari_mbdl.fusion.api:fuse_steps",
    "fuse": "napari_mbdl.fusion.api:fuse",
    # --- xrf api ---
    "xrf_maps": "napari_mbdl.xrf.api:xrf_maps",
    # --- xray api ---
    "separate_xray": "napari_mbdl.xray_separation.api:separate_xray",
}

__all__ = ["__version__", *_PUBLIC_API]


def __getattr__(name: str):
    try:
        target = _PUBLIC_API[name]
    except KeyError:
        raise AttributeError(f"module 'napari_mbdl' has no attribute {name!r}") from None
    module_name, attribute = target.split(":")
    value = getattr(importlib.import_module(module_name), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
