"""npe2 reader for XRF cubes: Lispix .rpl/.raw, HDF5 (PyXRF / XRF-Maps) and Bruker .bcf."""

from __future__ import annotations

from pathlib import Path


def get_reader(path):
    """Return :func:`read_xrf` for .rpl/.raw/.h5/.hdf5/.bcf paths, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    from napari_mbdl.xrf.io import XRF_SUFFIXES

    if Path(str(path)).suffix.lower() not in XRF_SUFFIXES:
        return None
    return read_xrf


def read_xrf(path):
    """Open the cube lazily as an (energy, y, x) image layer with its calibration in the metadata."""
    from napari_mbdl.io.napari_io import read_layers
    from napari_mbdl.xrf.io import cube_layer, read_cube

    return read_layers(path, read_cube, lambda labeled: [cube_layer(labeled)])
