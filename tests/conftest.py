import os

import pytest

# Keep torch and BLAS polite on small CI machines.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MBDL_MEMORY_BUDGET", "512MB")


@pytest.fixture
def tmp_zarr(tmp_path):
    return tmp_path / "out.zarr"
