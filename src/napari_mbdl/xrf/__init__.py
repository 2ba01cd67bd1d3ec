"""MA-XRF elemental maps: FRI pulse finding, element identification from xraylib lines, streamed per-pixel fits.

Importing this package is cheap (no torch, no napari); the heavy modules load on first use.
"""

from __future__ import annotations


def __getattr__(name):
    if name in ("xrf_maps", "xrf_maps_steps", "XRFResult"):
        from napari_mbdl.xrf import api

        return getattr(api, name)
    if name in ("calibrate_two_lines", "EnergyCalibration", "DetectorResponse", "snip_background"):
        from napari_mbdl.xrf import spectral

        return getattr(spectral, name)
    if name in ("simulate_painting",):
        from napari_mbdl.xrf import simulate

        return getattr(simulate, name)
    raise AttributeError(f"module 'napari_mbdl.xrf' has no attribute {name!r}")
