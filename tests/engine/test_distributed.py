import numpy as np
import pytest

from napari_mbdl.engine import InputError, Operation, run_blocks, run_steps

from . import ops


def _built_keys():
    from napari_mbdl.engine.run import _FUNCTIONS

    return [key for key, _device in _FUNCTIONS]


@pytest.mark.slow
def test_local_cluster_matches_local_run_and_builds_once_per_worker(tmp_path):
    distributed = pytest.importorskip("distributed")
    stack = np.random.default_rng(0).random((4, 60, 70)).astype(np.float32)
    op = Operation(key="gauss-dist", make=ops.gaussian, halo=(0, 9, 9))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            result = run_steps(run_blocks(op, stack, tile=(1, 30, 35), out=tmp_path / "d.zarr", scheduler=client))
            assert result.chunks_computed == 16
            np.testing.assert_allclose(np.asarray(result.array), ops.gaussian_reference(stack), atol=1e-6)
            built = client.run(_built_keys)
            assert all(keys.count("gauss-dist") <= 1 for keys in built.values())
            assert sum(keys.count("gauss-dist") for keys in built.values()) >= 1
    # scheduler="local" starts (and stops) its own cluster; an in-memory call returns numpy
    in_memory = run_steps(run_blocks(op, stack, tile=(2, 60, 70), scheduler="local"))
    assert isinstance(in_memory.array, np.ndarray) and in_memory.path is None
    np.testing.assert_allclose(in_memory.array, ops.gaussian_reference(stack), atol=1e-6)


def test_unreachable_scheduler_is_a_clear_error():
    op = Operation(key="g", make=ops.gaussian, halo=(0, 1, 1))
    with pytest.raises(InputError, match="cannot reach the dask scheduler"):
        run_steps(run_blocks(op, np.zeros((1, 8, 8), np.float32), scheduler="tcp://127.0.0.1:1"))
