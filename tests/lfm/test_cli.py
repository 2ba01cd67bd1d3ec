import numpy as np

from napari_mbdl.cli import main


def test_cli_psf_and_reconstruct(tmp_path, small_optics, capsys):
    import yaml

    from napari_mbdl.io.arrays import open_array
    from napari_mbdl.io.writing import write_array
    from napari_mbdl.lfm.optics import LFPsf
    from napari_mbdl.lfm.simulate import simulate_sample

    optics_file = tmp_path / "optics.yaml"
    optics_file.write_text(yaml.safe_dump(small_optics.to_dict()))
    assert main(["lfm-psf", "--optics", str(optics_file), str(tmp_path / "psf.zarr"), "-q"]) == 0
    psf = LFPsf.load(tmp_path / "psf.zarr")
    assert psf.optics == small_optics
    sample = simulate_sample(psf, n_lenslets=(4, 4), n_cells=3, n_frames=3, seed=0)
    write_array(sample.light_field, tmp_path / "lf.zarr", axes="tyx")
    code = main(["lfm-reconstruct", str(tmp_path / "lf.zarr"), str(tmp_path / "vol.zarr"), "--psf",
                 str(tmp_path / "psf.zarr"), "--method", "rl", "--iterations", "4", "--device", "cpu", "-q"])
    assert code == 0
    vol = open_array(tmp_path / "vol.zarr")
    assert vol.shape == (3, 3, 12, 12) and vol.axes == "tzyx"
    assert np.all(np.isfinite(np.asarray(vol.data)))
    assert "wrote" in capsys.readouterr().out


def test_cli_bad_input_exits_2(tmp_path, small_psf, capsys):
    import tifffile

    small_psf.save(tmp_path / "psf.zarr")
    tifffile.imwrite(tmp_path / "lf.tif", np.zeros((20, 22), np.float32))
    code = main(["lfm-reconstruct", str(tmp_path / "lf.tif"), str(tmp_path / "v.zarr"), "--psf",
                 str(tmp_path / "psf.zarr"), "--method", "rl", "-q"])
    assert code == 2
    assert "does not fit" in capsys.readouterr().err
    code = main(["lfm-reconstruct", str(tmp_path / "lf.tif"), str(tmp_path / "v.zarr"), "--psf",
                 str(tmp_path / "nothing.zarr"), "-q"])
    assert code == 2
    assert not (tmp_path / "v.zarr").exists()
    code = main(["lfm-reconstruct", str(tmp_path / "lf.tif"), str(tmp_path), "--psf",
                 str(tmp_path / "psf.zarr"), "--method", "rl", "--overwrite", "-q"])
    assert code == 2
    assert (tmp_path / "psf.zarr").exists()


def test_cli_psf_from_olaf_config(tmp_path):
    from napari_mbdl.lfm.optics import LFPsf

    path = tmp_path / "cam.yaml"
    path.write_text("gridType: reg\nplenoptic: 1\nM: 20\nNA: 0.5\nfm: 3000\nlensPitch: 150\npixelPitch: 21.4\n"
                    "n: 1.33\nWaveLength: 525*1e-3\n")
    assert main(["lfm-psf", "--olaf", str(path), "--depths=-10:10:10", str(tmp_path / "p.zarr"), "-q"]) == 0
    psf = LFPsf.load(tmp_path / "p.zarr")
    assert psf.optics.pixels_per_lenslet == 7 and psf.optics.depths_um == (-10.0, 0.0, 10.0)
    assert main(["lfm-psf", "--olaf", str(tmp_path / "none.yaml"), str(tmp_path / "q.zarr"), "-q"]) == 2
