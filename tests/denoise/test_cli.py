import numpy as np
import tifffile

from napari_mbdl.cli import main


def test_cli_denoise_to_zarr_and_tiff(tmp_path, random_weights, capsys):
    from napari_mbdl.io.arrays import open_array

    stack = (np.random.default_rng(0).random((2, 40, 48)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", stack, metadata={"axes": "ZYX"})
    code = main(["denoise", str(tmp_path / "in.tif"), str(tmp_path / "out.zarr"), "--sigma", "25",
                 "--weights", str(random_weights["winnet"]), "--device", "cpu", "-q"])
    assert code == 0
    out = open_array(tmp_path / "out.zarr")
    assert out.shape == stack.shape and out.dtype == np.uint8
    assert "sigma 25.00 given" in capsys.readouterr().out
    code = main(["denoise", str(tmp_path / "in.tif"), str(tmp_path / "out.tif"), "--sigma", "25",
                 "--weights", str(random_weights["linn"]), "-q"])
    assert code == 0 and tifffile.imread(tmp_path / "out.tif").shape == stack.shape
    capsys.readouterr()
    code = main(["denoise", str(tmp_path / "in.tif"), str(tmp_path / "ens.tif"), "--sigma", "25",
                 "--weights", str(random_weights["linn"]), "--self-ensemble", "-q"])
    assert code == 0 and "self-ensemble of 8 views" in capsys.readouterr().out
    assert not np.array_equal(tifffile.imread(tmp_path / "ens.tif"), tifffile.imread(tmp_path / "out.tif"))
    code = main(["denoise", str(tmp_path / "in.tif"), str(tmp_path / "bf16.tif"), "--sigma", "25",
                 "--weights", str(random_weights["linn"]), "--precision", "bfloat16", "-q"])
    assert code == 0 and "bfloat16" in capsys.readouterr().out
    assert tifffile.imread(tmp_path / "bf16.tif").shape == stack.shape


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, random_weights, capsys):
    tifffile.imwrite(tmp_path / "tiny.tif", np.zeros((4, 4), np.float32))
    code = main(["denoise", str(tmp_path / "tiny.tif"), str(tmp_path / "o.zarr"), "--sigma", "25",
                 "--weights", str(random_weights["winnet"]), "-q"])
    assert code == 2 and "at least" in capsys.readouterr().err
    assert not (tmp_path / "o.zarr").exists()
    tifffile.imwrite(tmp_path / "ok.tif", np.zeros((32, 32), np.float32))
    assert main(["denoise", str(tmp_path / "ok.tif"), str(tmp_path / "o.zarr"), "--sigma", "loud", "-q"]) == 2
    assert main(["denoise", str(tmp_path / "ok.tif"), str(tmp_path / "o.zarr"), "--sigma", "300",
                 "--weights", str(random_weights["winnet"]), "-q"]) == 2
    assert main(["deblur", str(tmp_path / "ok.tif"), str(tmp_path / "d.tif"), "--kernel", "blob:3", "-q"]) == 2
    assert not (tmp_path / "d.tif").exists() and not (tmp_path / "o.zarr").exists()


def test_cli_deblur_writes_tiff(tmp_path, capsys):
    from napari_mbdl.denoise.deblur import blur, gaussian_kernel
    from napari_mbdl.denoise.sample_data import clean_camera

    img = (blur(clean_camera(64) / 255.0, gaussian_kernel(1.2), mode="reflect")).astype(np.float32)
    tifffile.imwrite(tmp_path / "b.tif", img)
    assert main(["deblur", str(tmp_path / "b.tif"), str(tmp_path / "d.tif"), "--kernel", "gaussian:1.2",
                 "--sigma", "3", "--max-iter", "3", "-q"]) == 0
    assert tifffile.imread(tmp_path / "d.tif").shape == img.shape


def test_cli_train_denoiser_small(tmp_path):
    from skimage import io as skio

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        skio.imsave(folder / f"{i}.png", (rng.random((32, 32)) * 255).astype(np.uint8), check_contrast=False)
    out = tmp_path / "w.safetensors"
    code = main(["train-denoiser", str(folder), str(out), "--model", "linn", "--init", "scratch", "--steps", "2",
                 "--batch", "2", "--patch", "16", "--device", "cpu", "-q"])
    assert code == 0 and out.exists()
    assert main(["train-denoiser", str(folder), str(out), "--steps", "2", "-q"]) == 2  # exists: no overwrite
