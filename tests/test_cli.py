import subprocess
import sys

import numpy as np
import tifffile

from napari_mbdl.cli import main


def test_info_prints_versions_and_devices(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "napari-mbdl" in out and "devices:" in out and "dask cluster" in out


def test_engine_demo_writes_results(tmp_path, capsys):
    assert main(["demo", "--only", "engine", "--out", str(tmp_path), "--no-screenshot", "-q"]) == 0
    assert (tmp_path / "engine" / "smoothed.ome.zarr" / ".zattrs").exists()
    # a second demo run replaces its own previous result
    assert main(["demo", "--only", "engine", "--out", str(tmp_path), "--no-screenshot", "-q"]) == 0
    assert str(tmp_path) in capsys.readouterr().out


def test_convert_tiff_to_ome_zarr_and_back(tmp_path):
    stack = np.random.default_rng(0).integers(0, 4000, (5, 30, 40), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack, metadata={"axes": "ZYX"})
    assert main(["convert", str(tmp_path / "s.tif"), str(tmp_path / "s.zarr"), "-q"]) == 0
    assert main(["convert", str(tmp_path / "s.zarr"), str(tmp_path / "back.tif"), "-q"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "back.tif"), stack)


def _mbdl(*args):
    return subprocess.run([sys.executable, "-m", "napari_mbdl.cli", *args], capture_output=True, text=True)


def test_bad_input_gives_one_line_and_exit_2(tmp_path):
    missing = _mbdl("convert", str(tmp_path / "nothing.tif"), str(tmp_path / "o.zarr"))
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "does not exist" in missing.stderr
    np.save(tmp_path / "c.npy", np.zeros((4, 4), np.complex64))
    complex_input = _mbdl("convert", str(tmp_path / "c.npy"), str(tmp_path / "o.zarr"))
    assert complex_input.returncode == 2 and "dtype" in complex_input.stderr and "Traceback" not in complex_input.stderr


def test_existing_output_needs_overwrite_and_must_be_a_store(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((4, 4), np.float32))
    assert _mbdl("convert", str(tmp_path / "a.npy"), str(tmp_path / "o.zarr"), "-q").returncode == 0
    again = _mbdl("convert", str(tmp_path / "a.npy"), str(tmp_path / "o.zarr"), "-q")
    assert again.returncode == 2 and "already exists" in again.stderr
    assert _mbdl("convert", str(tmp_path / "a.npy"), str(tmp_path / "o.zarr"), "-q", "--overwrite").returncode == 0
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    refused = _mbdl("convert", str(tmp_path / "a.npy"), str(folder), "-q", "--overwrite")
    assert refused.returncode == 2 and "not a zarr store" in refused.stderr and (folder / "keep.txt").exists()
