"""Reading and writing arrays: zarr / OME-Zarr, TIFF, numpy, dask (no Qt, no napari)."""
