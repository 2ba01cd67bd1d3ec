"""``mbdl fusion-sample`` and ``mbdl fusion``: files in, files out, one-line errors."""

import numpy as np
import pytest

from napari_mbdl.cli import main


@pytest.mark.slow
def test_cli_sample_then_fusion(tmp_path, capsys):
    sample_dir = tmp_path / "sample"
    assert main(["fusion-sample", str(sample_dir), "--frames", "40", "--neurons", "10"]) == 0
    for name in ("two_photon.tif", "light_fields.tif", "psf.zarr", "truth.npz", "truth.json"):
        assert (sample_dir / name).exists()
    (sample_dir / "notes.txt").write_text("mine")
    assert main(["fusion-sample", str(sample_dir), "--frames", "40", "--neurons", "10"]) == 2
    assert "exists" in capsys.readouterr().err
    out = tmp_path / "out"
    args = ["fusion", str(sample_dir / "two_photon.tif"), str(sample_dir / "light_fields.tif"), str(out),
            "--psf", str(sample_dir / "psf.zarr"), "--voxel-2p", "2.5,0.75,0.75", "--frame-rate", "10",
            "--device", "cpu", "-q"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "neurons, 40 frames" in printed and "rotation" in printed
    table = np.loadtxt(out / "traces.csv", delimiter=",", skiprows=1)
    assert table.shape[0] == 40 and table.shape[1] >= 2 + 9
    # Same command again: refused (exit 2, one line), nothing overwritten.
    before = (out / "traces.csv").read_bytes()
    assert main(args) == 2
    assert "already holds results" in capsys.readouterr().err
    assert (out / "traces.csv").read_bytes() == before
    assert (sample_dir / "notes.txt").read_text() == "mine"


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    import tifffile

    tifffile.imwrite(tmp_path / "flat.tif", np.ones((20, 20), np.float32))
    tifffile.imwrite(tmp_path / "lf.tif", np.ones((5, 30, 30), np.float32))
    code = main(["fusion", str(tmp_path / "flat.tif"), str(tmp_path / "lf.tif"), str(tmp_path / "out"),
                 "--psf", str(tmp_path / "none.zarr"), "--voxel-2p", "1,1,1", "-q"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mbdl fusion:") and "3D" in err and "\n" not in err
    code = main(["fusion", str(tmp_path / "lf.tif"), str(tmp_path / "lf.tif"), str(tmp_path / "out2"),
                 "--psf", str(tmp_path / "none.zarr"), "--voxel-2p", "1,1", "-q"])
    assert code == 2 and "--voxel-2p" in capsys.readouterr().err
    code = main(["fusion", str(tmp_path / "lf.tif"), str(tmp_path / "lf.tif"), str(tmp_path / "out3"),
                 "--psf", str(tmp_path / "none.zarr"), "--voxel-2p", "1,1,1", "-q"])
    assert code == 2 and "PSF file not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out3").exists()
