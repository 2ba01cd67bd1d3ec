import json

import numpy as np
import pytest
import zarr

from napari_mbdl.engine import (
    CancelToken,
    DeviceMemoryError,
    InputError,
    Operation,
    OutputExistsError,
    RunCancelled,
    reduce_blocks,
    run_blocks,
    run_steps,
)
from napari_mbdl.io.arrays import open_array

from . import ops


def gaussian_op(key="gauss"):
    return Operation(key=key, make=ops.gaussian, halo=(0, 9, 9))


@pytest.fixture
def stack():
    return np.random.default_rng(0).random((3, 90, 131)).astype(np.float32)


@pytest.mark.parametrize("tile", [(1, 32, 40), (2, 17, 131), (3, 90, 131)])
def test_tiled_result_equals_whole_array(stack, tile):
    result = run_steps(run_blocks(gaussian_op(), stack, tile=tile))
    np.testing.assert_allclose(result.array, ops.gaussian_reference(stack), atol=1e-6)


def test_too_small_halo_is_detectable(stack):
    """The comparison above can fail: with no halo the seams show."""
    no_halo = Operation(key="gauss-nohalo", make=ops.gaussian, halo=(0, 0, 0))
    result = run_steps(run_blocks(no_halo, stack, tile=(1, 32, 40)))
    assert np.abs(result.array - ops.gaussian_reference(stack)).max() > 1e-3


def test_halo_on_every_axis_of_a_volume():
    volume = np.random.default_rng(1).random((20, 40, 30)).astype(np.float32)
    op = Operation(key="g3", make=ops.make_gaussian_3d, halo=(0, 6, 6, 6))
    tiled = run_steps(run_blocks(op, volume[None], n_tiled=4, tile=(1, 7, 13, 11), axes="tzyx"))
    ref = ops.make_gaussian_3d("cpu")(volume[None, None])[0]
    np.testing.assert_allclose(tiled.array, ref, atol=1e-6)


def test_zarr_output_is_ome_and_complete(stack, tmp_zarr):
    result = run_steps(run_blocks(gaussian_op(), stack, axes="tyx", tile=(1, 45, 131), out=tmp_zarr,
                                  scale=(1.0, 0.3, 0.3), units=("second", "micrometer", "micrometer")))
    assert tmp_zarr.exists() and not tmp_zarr.with_name("out.zarr.partial").exists()
    attrs = json.loads((tmp_zarr / ".zattrs").read_text())
    assert attrs["napari_mbdl"]["complete"] is True
    assert [a["name"] for a in attrs["multiscales"][0]["axes"]] == ["t", "y", "x"]
    assert attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 0.3, 0.3]
    np.testing.assert_allclose(np.asarray(result.array), ops.gaussian_reference(stack), atol=1e-6)
    reopened = open_array(tmp_zarr)
    assert reopened.axes == "tyx" and reopened.scale == (1.0, 0.3, 0.3)


def test_cancel_then_resume_computes_only_the_rest(stack, tmp_zarr):
    cancel = CancelToken()
    steps = run_blocks(gaussian_op(), stack, tile=(1, 30, 131), out=tmp_zarr, cancel=cancel)
    with pytest.raises(RunCancelled):
        for event in steps:
            if event.done >= 4 * 30 * 131:
                cancel.cancel()
    partial = tmp_zarr.with_name("out.zarr.partial")
    assert partial.exists() and not tmp_zarr.exists()  # nothing that looks complete
    with pytest.raises(InputError, match="unfinished"):
        open_array(partial)
    ops.CALLS["n"] = 0
    result = run_steps(run_blocks(gaussian_op(), stack, tile=(1, 30, 131), out=tmp_zarr))
    assert result.chunks_resumed >= 4 and result.chunks_computed == 9 - result.chunks_resumed
    assert ops.CALLS["n"] >= 1
    np.testing.assert_allclose(np.asarray(result.array), ops.gaussian_reference(stack), atol=1e-6)


def test_interrupted_generator_keeps_finished_chunks(stack, tmp_zarr):
    """A napari worker quitting closes the generator: what was written stays resumable."""
    steps = run_blocks(gaussian_op(), stack, tile=(1, 30, 131), out=tmp_zarr, max_batch=1)
    for i, _event in enumerate(steps):
        if i == 3:
            break
    steps.close()
    result = run_steps(run_blocks(gaussian_op(), stack, tile=(1, 30, 131), out=tmp_zarr, max_batch=1))
    assert result.chunks_resumed >= 2
    np.testing.assert_allclose(np.asarray(result.array), ops.gaussian_reference(stack), atol=1e-6)


def test_partial_from_other_settings_is_discarded(stack, tmp_zarr):
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(RunCancelled):
        run_steps(run_blocks(gaussian_op("a"), stack, tile=(1, 30, 131), out=tmp_zarr, cancel=cancel))
    result = run_steps(run_blocks(gaussian_op("b"), stack, tile=(1, 30, 131), out=tmp_zarr))
    assert result.chunks_resumed == 0


def test_partial_from_other_input_data_is_not_resumed(stack, tmp_zarr):
    cancel = CancelToken()
    steps = run_blocks(gaussian_op(), stack, tile=(1, 30, 131), out=tmp_zarr, cancel=cancel, max_batch=1)
    with pytest.raises(RunCancelled):
        for event in steps:
            if event.done > 0:
                cancel.cancel()
    edited = stack + 1.0
    result = run_steps(run_blocks(gaussian_op(), edited, tile=(1, 30, 131), out=tmp_zarr, max_batch=1))
    assert result.chunks_resumed == 0
    np.testing.assert_allclose(np.asarray(result.array), ops.gaussian_reference(edited), atol=1e-5)


def test_existing_output_is_refused_then_replaced_only_when_complete(stack, tmp_zarr):
    run_steps(run_blocks(gaussian_op(), stack, out=tmp_zarr))
    with pytest.raises(OutputExistsError):
        run_steps(run_blocks(gaussian_op(), stack, out=tmp_zarr))
    cancel = CancelToken()
    steps = run_blocks(gaussian_op("other"), stack * 2, tile=(1, 30, 131), out=tmp_zarr, overwrite=True, cancel=cancel)
    with pytest.raises(RunCancelled):
        for _event in steps:
            cancel.cancel()
    # the old complete result is untouched by the cancelled overwrite
    np.testing.assert_allclose(np.asarray(open_array(tmp_zarr).data), ops.gaussian_reference(stack), atol=1e-6)
    result = run_steps(run_blocks(gaussian_op("other"), stack * 2, tile=(1, 30, 131), out=tmp_zarr, overwrite=True))
    np.testing.assert_allclose(np.asarray(result.array), ops.gaussian_reference(stack * 2), atol=1e-5)


@pytest.mark.parametrize("make_target", ["folder", "file", "folder-with-git"])
def test_overwrite_never_deletes_what_is_not_a_zarr_store(tmp_path, stack, make_target):
    """Regression: overwrite=True on a project folder must not replace (and delete) the folder."""
    target = tmp_path / "project"
    if make_target == "file":
        target.write_text("precious")
    else:
        target.mkdir()
        (target / "notes.txt").write_text("precious")
        if make_target == "folder-with-git":
            (target / ".git").mkdir()
    with pytest.raises(OutputExistsError, match="not a zarr store"):
        run_steps(run_blocks(gaussian_op(), stack, out=target, overwrite=True))
    if make_target == "file":
        assert target.read_text() == "precious"
    else:
        assert (target / "notes.txt").read_text() == "precious"
    assert not target.with_name("project.partial").exists()


def test_output_over_input_is_refused(tmp_path, stack):
    source = tmp_path / "in.zarr"
    run_steps(run_blocks(gaussian_op(), stack, out=source))
    before = np.asarray(open_array(source).data).copy()
    with pytest.raises(InputError, match="is \\(or contains\\) the input"):
        run_steps(run_blocks(gaussian_op("x"), source, out=source, overwrite=True))
    np.testing.assert_array_equal(np.asarray(open_array(source).data), before)


def test_out_of_memory_backs_off_batch_then_tile():
    ops.CALLS["shapes"].clear()
    x = np.ones((4, 64, 64), np.float32)
    op = Operation(key="oom", make=ops.make_memory_limited, halo=(0, 0, 0), min_tile=(1, 8, 8))
    result = run_steps(run_blocks(op, x, tile=(1, 64, 64), max_batch=4))
    np.testing.assert_array_equal(result.array, 2 * x)
    assert result.out_of_memory_backoffs >= 3  # batch 4 -> 2 -> 1, then tile halved
    assert all(np.prod(s) <= 40 * 40 for s in ops.CALLS["shapes"])


def test_out_of_memory_at_smallest_tile_is_a_clear_error():
    op = Operation(key="oom-tiny", make=lambda d: ops.make_memory_limited(d, max_elements=1), min_tile=(1, 16, 16))
    with pytest.raises(DeviceMemoryError, match="smallest tile"):
        run_steps(run_blocks(op, np.ones((1, 32, 32), np.float32), tile=(1, 32, 32)))


def test_core_axes_first_and_two_inputs():
    cube = np.random.default_rng(2).poisson(3, size=(20, 30, 16)).astype(np.uint16)
    op = Operation(key="spec", make=ops.make_spectrum_sum, out_core_shape=(2,))
    result = run_steps(run_blocks(op, cube, n_tiled=2, axes="yxe", tile=(7, 11), out_core_position="first", out_core_axes="c"))
    assert result.array.shape == (2, 20, 30) and result.axes == "cyx"
    np.testing.assert_array_equal(result.array[0], cube.sum(-1))
    a = np.random.default_rng(3).random((30, 40)).astype(np.float32)
    rgb = np.random.default_rng(4).random((30, 40, 3)).astype(np.float32)
    both = run_steps(run_blocks(Operation(key="two", make=ops.make_two_input), [a, rgb], n_tiled=2, tile=(8, 8)))
    np.testing.assert_allclose(both.array, a + rgb.mean(-1), atol=1e-6)


def test_reduce_blocks_streams_a_sum():
    cube = np.random.default_rng(5).poisson(3, size=(33, 20, 16)).astype(np.uint16)
    total = run_steps(reduce_blocks(lambda b: b.reshape(-1, b.shape[-1]).sum(0), cube, n_tiled=2, tile=(5, 7)))
    np.testing.assert_array_equal(total, cube.reshape(-1, 16).sum(0))


def test_tiff_input_and_output(tmp_path, stack):
    import tifffile

    source = tmp_path / "stack.tif"
    tifffile.imwrite(source, stack, metadata={"axes": "TYX"}, photometric="minisblack")
    result = run_steps(run_blocks(gaussian_op(), source, out=tmp_path / "smooth.tif", tile=(1, 45, 131)))
    np.testing.assert_allclose(tifffile.imread(tmp_path / "smooth.tif"), ops.gaussian_reference(stack), atol=1e-6)
    assert result.axes == "tyx"
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*zarr-work*"))


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((0, 10, 10), np.float32), "empty"),
        (np.zeros((2, 10, 10), np.complex64), "dtype"),
        (np.array(["a", "b"]), "dtype"),
    ],
)
def test_bad_inputs_are_refused_clearly(bad, message):
    with pytest.raises(InputError, match=message):
        run_steps(run_blocks(gaussian_op(), bad))


def test_nan_is_reported_with_its_location(stack):
    stack = stack.copy()
    stack[2, 80, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        run_steps(run_blocks(gaussian_op(), stack, tile=(1, 45, 131)))


def test_mismatched_inputs_are_refused():
    op = Operation(key="two", make=ops.make_two_input)
    with pytest.raises(InputError, match="does not match"):
        run_steps(run_blocks(op, [np.zeros((5, 5)), np.zeros((6, 5, 3))], n_tiled=2))


def test_missing_and_truncated_zarr_chunks(tmp_path, stack):
    path = tmp_path / "in.zarr"
    array = zarr.open_array(str(path), mode="w", shape=stack.shape, chunks=(1, 45, 131), dtype="f4", zarr_format=2)
    array[:] = stack
    chunk_files = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    chunk_files[0].unlink()
    with pytest.raises(InputError, match="missing 1 of 6 chunks"):
        run_steps(run_blocks(gaussian_op(), path))
    array[:] = stack
    chunk_files[1].write_bytes(chunk_files[1].read_bytes()[:20])  # truncated
    with pytest.raises(InputError, match="corrupt or truncated"):
        run_steps(run_blocks(gaussian_op(), path, tile=(1, 45, 131)))


def test_missing_path_is_reported(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        run_steps(run_blocks(gaussian_op(), tmp_path / "nothing.zarr"))


def test_zarr_v3_and_ome_zarr_v05_inputs(tmp_path, stack):
    v3 = zarr.open_array(str(tmp_path / "v3.zarr"), mode="w", shape=stack.shape, chunks=(1, 45, 131), dtype="f4", zarr_format=3)
    v3[:] = stack
    result = run_steps(run_blocks(gaussian_op(), tmp_path / "v3.zarr", tile=(1, 45, 131)))
    np.testing.assert_allclose(result.array, ops.gaussian_reference(stack), atol=1e-6)
    group = zarr.open_group(str(tmp_path / "ome05.zarr"), mode="w", zarr_format=3)
    group.create_array("s0", shape=stack.shape, chunks=(1, 90, 131), dtype="f4")[:] = stack
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": [{"name": "t", "type": "time"}, {"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}],
                          "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 0.2, 0.2]}]}]}]}
    opened = open_array(tmp_path / "ome05.zarr")
    assert opened.axes == "tyx" and opened.scale == (1.0, 0.2, 0.2)
    out = run_steps(run_blocks(gaussian_op(), opened, out=tmp_path / "o.zarr"))
    assert out.scale == (1.0, 0.2, 0.2) and out.units == (None, "micrometer", "micrometer")
