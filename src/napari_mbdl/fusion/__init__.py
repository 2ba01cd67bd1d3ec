"""Two-photon / light-field fusion: neurons from a 2P structural stack, their activity from an LFM series.

Public calls (torch is only imported when they run)::

    from napari_mbdl.fusion.api import fuse, fuse_steps
    result = fuse(stack_2p, lf_series, "psf.zarr", two_photon_voxel_um=(2.5, 0.75, 0.75))
    result.activity.traces, result.activity.dff, result.registration.matrix

Modules: ``simulate`` (paired sample data with truth), ``segment`` (cells in the 2P stack),
``register`` (2P -> LFM rigid fit, footprints in LFM space), ``activity`` (per-frame
footprint-constrained NNLS through the engine), ``unfolded_route`` (second route: the unfolded
network trained with 2P-derived volumes), ``metrics`` (F1, Pearson), ``api``, ``cli``, ``demo``.
"""
