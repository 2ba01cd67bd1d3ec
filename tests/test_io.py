import numpy as np
import tifffile

from napari_mbdl.io.arrays import open_array
from napari_mbdl.io.napari_io import get_reader, write_ome_zarr


def test_reader_opens_tiff_and_ome_zarr_lazily(tmp_path):
    stack = np.random.default_rng(0).random((4, 20, 30)).astype(np.float32)
    tifffile.imwrite(tmp_path / "s.tif", stack, metadata={"axes": "TYX"}, photometric="minisblack")
    (data, meta, kind), = get_reader(str(tmp_path / "s.tif"))(str(tmp_path / "s.tif"))
    assert kind == "image" and meta["axis_labels"] == ("t", "y", "x")
    np.testing.assert_array_equal(np.asarray(data), stack)
    written = write_ome_zarr(str(tmp_path / "w.zarr"), [(stack, {"name": "w", "scale": (1, 0.5, 0.5), "axis_labels": ("t", "y", "x")}, "image")])
    (data, meta, kind), = get_reader(written[0])(written[0])
    assert meta["scale"] == (1.0, 0.5, 0.5) and meta["axis_labels"] == ("t", "y", "x")
    assert hasattr(data, "dask")  # lazy
    np.testing.assert_array_equal(np.asarray(data), stack)


def test_reader_declines_other_files(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    assert get_reader(str(tmp_path / "a.png")) is None


def test_writer_replaces_only_when_complete(tmp_path):
    target = tmp_path / "x.zarr"
    write_ome_zarr(str(target), [(np.zeros((8, 8), np.uint8), {"name": "x"}, "image")])
    write_ome_zarr(str(target), [(np.ones((8, 8), np.uint8), {"name": "x"}, "image")])
    assert open_array(target).data[0, 0] == 1
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*replaced*"))


def test_viewer_opens_zarr_with_plugin(make_napari_viewer_proxy, tmp_path):
    stack = np.arange(2 * 8 * 8, dtype=np.uint16).reshape(2, 8, 8)
    write_ome_zarr(str(tmp_path / "v.zarr"), [(stack, {"name": "v", "axis_labels": ("z", "y", "x")}, "image")])
    viewer = make_napari_viewer_proxy()
    layers = viewer.open(str(tmp_path / "v.zarr"), plugin="napari-mbdl")
    assert layers[0].data.shape == (2, 8, 8)


def test_unreadable_zarr_is_a_message_not_a_layer(make_napari_viewer_proxy, tmp_path):
    broken = tmp_path / "broken.zarr"
    broken.mkdir()
    (broken / ".zgroup").write_text("{not json")
    viewer = make_napari_viewer_proxy()
    layers = viewer.open(str(broken), plugin="napari-mbdl")
    assert layers == [] and len(viewer.layers) == 0
