import subprocess
import sys

import numpy as np
import tifffile

from napari_mbdl.cli import main


def test_sample_then_separate_to_ome_zarr(tmp_path, capsys):
    assert main(["xray-sample", str(tmp_path / "panel"), "--size", "64"]) == 0
    panel = tmp_path / "panel"
    out = tmp_path / "sep.zarr"
    code = main(["xray-separate", str(panel / "mixed.tif"), str(panel / "rgb1.tif"), str(out),
                 "--iterations", "3", "--device", "cpu", "-q"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "trained 3 iterations" in printed
    from napari_mbdl.io.arrays import open_array

    stored = open_array(out)
    assert stored.shape == (3, 64, 64)
    np.testing.assert_allclose(np.asarray(stored.data).sum(0), tifffile.imread(panel / "mixed.tif"), atol=1e-5)


def test_align_then_separate_two_sided(tmp_path):
    assert main(["xray-sample", str(tmp_path / "panel"), "--size", "64"]) == 0
    panel = tmp_path / "panel"
    back = tifffile.imread(panel / "rgb2.tif")[:, ::-1]  # as photographed from behind
    tifffile.imwrite(tmp_path / "back.tif", np.ascontiguousarray(back), photometric="rgb")
    assert main(["xray-align", str(tmp_path / "back.tif"), str(panel / "mixed.tif"), str(tmp_path / "b.tif")]) == 0
    np.testing.assert_allclose(tifffile.imread(tmp_path / "b.tif"), tifffile.imread(panel / "rgb2.tif"), atol=1e-5)
    assert main(["xray-separate", str(panel / "mixed.tif"), str(panel / "rgb1.tif"), str(tmp_path / "b.tif"),
                 str(tmp_path / "sep.tif"), "--iterations", "2", "--device", "cpu", "-q"]) == 0
    assert tifffile.imread(tmp_path / "sep.tif").shape == (3, 64, 64)


def test_bad_input_gives_one_line_and_exit_2(tmp_path):
    rgb = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "grey.tif", rgb.mean(-1))
    run = subprocess.run(
        [sys.executable, "-m", "napari_mbdl.cli", "xray-separate", str(tmp_path / "grey.tif"),
         str(tmp_path / "grey.tif"), str(tmp_path / "o.zarr"), "--device", "cpu"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().count("\n") == 0 and "greyscale" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "o.zarr").exists()
    tifffile.imwrite(tmp_path / "mixed.tif", rgb.mean(-1) + 0.1 * rgb[..., 0])
    run = subprocess.run(
        [sys.executable, "-m", "napari_mbdl.cli", "xray-separate", str(tmp_path / "mixed.tif"),
         str(tmp_path / "rgb.tif"), str(tmp_path / "o.zarr"), "--device", "cpu", "--exclusion-weight", "-1"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert run.returncode == 2 and "weights cannot be negative" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "o.zarr").exists()


def test_sample_refuses_before_writing_anything(tmp_path):
    folder = tmp_path / "panel"
    folder.mkdir()
    (folder / "rgb2.tif").write_bytes(b"the user's file")
    assert main(["xray-sample", str(folder), "--size", "32"]) == 2
    assert sorted(p.name for p in folder.iterdir()) == ["rgb2.tif"]
    assert (folder / "rgb2.tif").read_bytes() == b"the user's file"
