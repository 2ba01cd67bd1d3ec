import json

import numpy as np
import pytest

import napari_mbdl
from napari_mbdl.denoise import api
from napari_mbdl.denoise.train import psnr
from napari_mbdl.engine import CancelToken, InputError, OutputExistsError, RunCancelled, run_steps


def test_tiled_equals_whole_and_any_leading_axes(random_weights):
    rng = np.random.default_rng(0)
    img = (rng.random((2, 2, 36, 44)) * 255).astype(np.uint8)
    whole = api.denoise(img, sigma=20, weights=random_weights["linn"])
    tiled = api.denoise(img, sigma=20, weights=random_weights["linn"], tile=(1, 2, 18, 22))
    assert whole.shape == img.shape and whole.dtype == np.uint8
    assert np.array_equal(whole, tiled)
    single = api.denoise(img[1, 1], sigma=20, weights=random_weights["linn"])
    assert np.array_equal(single, whole[1, 1])


@pytest.mark.parametrize("dtype,expected", [
    (np.uint8, np.uint8), (np.uint16, np.uint16), (np.int16, np.int16), (np.float64, np.float64),
    (np.float32, np.float32), (np.float16, np.float32),
])
def test_dtype_family_and_scaling(random_weights, dtype, expected):
    rng = np.random.default_rng(1)
    base = rng.random((40, 40))
    if np.dtype(dtype).kind in "iu":
        img = (base * min(np.iinfo(dtype).max, 60000)).astype(dtype)
    else:
        img = base.astype(dtype)
    before = img.copy()
    out = api.denoise(img, sigma=15, weights=random_weights["linn"])
    assert out.dtype == expected and out.shape == img.shape
    assert np.array_equal(img, before)  # the input is untouched
    if dtype == np.uint16:  # integers are scaled by their dtype range
        as_float = api.denoise(img.astype(np.float64) / 65535, sigma=15, weights=random_weights["linn"])
        assert np.abs(out.astype(np.float64) - as_float * 65535).max() <= 1.0


def test_integer_clipping_is_reported(random_weights, caplog):
    img = np.zeros((32, 32), np.uint8)
    img[::2] = 255
    with caplog.at_level("WARNING"):
        out = api.denoise(img, sigma=50, weights=random_weights["winnet"])
    assert out.dtype == np.uint8
    assert np.all(out >= 0)


def test_bad_input_is_refused(random_weights, tmp_path):
    w = random_weights["winnet"]
    img = np.random.rand(32, 32)
    img[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        api.denoise(img, sigma=25, weights=w)
    with pytest.raises(InputError, match="outside"):
        api.denoise(np.random.rand(32, 32), sigma=200, weights=w)
    with pytest.raises(InputError, match="outside"):
        api.denoise(np.random.rand(32, 32), sigma=-3, weights=w)
    with pytest.raises(InputError, match="at least"):
        api.denoise(np.random.rand(5, 40), sigma=25, weights=w)
    with pytest.raises(InputError, match="2 axes"):
        api.denoise(np.random.rand(40), sigma=25, weights=w)
    with pytest.raises(InputError, match="sigma"):
        api.denoise(np.random.rand(32, 32), sigma="loud", weights=w)
    with pytest.raises(InputError, match="unknown model"):
        api.denoise(np.random.rand(32, 32), model="dncnn", sigma=25)
    with pytest.raises(InputError, match="noise"):
        api.denoise(np.random.rand(32, 32), sigma=25, noise="speckle", weights=w)
    with pytest.raises(InputError, match="data_range"):
        api.denoise(np.random.rand(32, 32), sigma=25, weights=w, data_range=(1, 1))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a weights file")
    with pytest.raises(InputError):
        api.denoise(np.random.rand(32, 32), sigma=25, weights=junk)
    with pytest.raises(InputError, match="not found"):
        api.denoise(np.random.rand(32, 32), sigma=25, weights=tmp_path / "missing.safetensors")


def test_wrong_architecture_weights_are_refused(random_weights, tmp_path):
    from safetensors.torch import load_file, save_file

    from napari_mbdl.denoise.nets import NENet
    from napari_mbdl.denoise.weights import read_metadata, save_weights

    meta = read_metadata(random_weights["winnet"])
    tensors = load_file(str(random_weights["winnet"]))
    config = dict(meta["config"], steps=meta["config"]["steps"] + 1)  # claims more steps than it holds
    path = tmp_path / "wrong.safetensors"
    save_file(tensors, str(path), metadata={"format": "napari-mbdl-denoise/1", "kind": "denoiser",
                                            "name": "winnet", "config": json.dumps(config), "info": "{}"})
    with pytest.raises(InputError, match="architecture"):
        api.denoise(np.random.rand(32, 32), sigma=25, weights=path)
    nenet_path = tmp_path / "nenet.safetensors"
    save_weights(NENet(), nenet_path, kind="nenet", name="nenet")
    with pytest.raises(InputError, match="denoiser"):
        api.denoise(np.random.rand(32, 32), sigma=25, weights=nenet_path)


def test_zarr_output_written_and_lazy(random_weights, tmp_path):
    img = np.random.default_rng(2).random((2, 40, 40)).astype(np.float32)
    result = run_steps(api.denoise_steps(img, sigma=25, weights=random_weights["winnet"], out=tmp_path / "o.zarr"))
    assert result.path is not None and result.path.exists()
    assert np.allclose(np.asarray(result.array), api.denoise(img, sigma=25, weights=random_weights["winnet"]))


def test_shipped_winnet_denoises_camera(camera):
    clean, noisy = camera
    ref = clean / 255.0
    out = napari_mbdl.denoise(noisy, model="winnet", sigma=25)
    assert psnr(ref, out) > psnr(ref, noisy) + 7.0


def test_auto_sigma_uses_nenet_and_blind_model(camera):
    clean, noisy = camera
    result = run_steps(api.denoise_steps(noisy, model="linn", sigma="auto"))
    assert result.sigma_estimated and abs(result.sigma - 25) < 4
    assert "blind" in result.weights
    assert psnr(clean / 255.0, result.array) > psnr(clean / 255.0, noisy) + 5.0
    assert abs(napari_mbdl.estimate_noise(noisy * 255, data_range=(0, 255)) - result.sigma) < 0.5


def test_weights_choice_rule():
    from napari_mbdl.denoise.weights import shipped_path

    assert api.resolve_weights("winnet", 37.0) == shipped_path("winnet", None)
    for s in (15, 25, 50):
        assert api.resolve_weights("winnet", float(s)) in (shipped_path("winnet", s), shipped_path("winnet", None))


def test_poisson_gaussian_stack_is_denoised():
    from napari_mbdl.denoise.sample_data import fluorescence_stack

    truth, stack = fluorescence_stack(shape=(2, 96, 96))
    result = run_steps(api.denoise_steps(stack, noise="poisson-gaussian", gain=2.0, read_noise=3.0, offset=100.0,
                                         data_range=(0, float(stack.max()))))
    out = result.array
    assert out.dtype == np.uint16 and out.shape == stack.shape
    err_noisy = np.mean((stack.astype(np.float64) - truth) ** 2)
    err_out = np.mean((out.astype(np.float64) - truth) ** 2)
    assert err_out < 0.5 * err_noisy
    estimated = run_steps(api.denoise_steps(stack, noise="poisson-gaussian", data_range=(0, float(stack.max()))))
    assert estimated.poisson_gaussian.gain > 0
    assert np.mean((estimated.array.astype(np.float64) - truth) ** 2) < err_noisy


def test_detail_bands_before_after(camera):
    _, noisy = camera
    before, after, out = api.detail_bands(noisy, model="winnet", sigma=25)
    assert before[0].shape == (15, *noisy.shape) and after[0].shape == (15, *noisy.shape)
    assert np.abs(after[0]).mean() < np.abs(before[0]).mean()
    with pytest.raises(InputError):
        api.detail_bands(np.zeros((2, 30, 30)))


def test_self_ensemble_is_equivariant_tiled_and_better(random_weights, camera):
    rng = np.random.default_rng(3)
    img = rng.random((36, 44)).astype(np.float32)
    w = random_weights["winnet"]
    one = api.denoise(img, sigma=20, weights=w)
    ens = api.denoise(img, sigma=20, weights=w, self_ensemble=True)
    # the average over all 8 views commutes with transposes and rotations; a single pass does not
    for move in (np.transpose, np.rot90, np.fliplr):
        assert np.allclose(api.denoise(move(img).copy(), sigma=20, weights=w, self_ensemble=True), move(ens),
                           atol=1e-5)
    assert not np.allclose(api.denoise(img.T.copy(), sigma=20, weights=w), one.T, atol=1e-5)
    assert np.allclose(api.denoise(img, sigma=20, weights=w, self_ensemble=True, tile=(18, 22)), ens, atol=1e-5)
    clean, noisy = camera
    single = psnr(clean / 255.0, api.denoise(noisy, model="winnet", sigma=25))
    averaged = psnr(clean / 255.0, api.denoise(noisy, model="winnet", sigma=25, self_ensemble=True))
    assert averaged > single + 0.02


def test_self_ensemble_is_recorded_and_replaces_a_single_pass_result(random_weights, tmp_path):
    img = np.random.default_rng(4).random((2, 40, 40)).astype(np.float32)
    w = random_weights["linn"]
    single = run_steps(api.denoise_steps(img, sigma=20, weights=w, out=tmp_path / "r.zarr"))
    assert not single.self_ensemble
    single_values = np.asarray(single.array)  # read now: the next run replaces the store
    ens = run_steps(api.denoise_steps(img, sigma=20, weights=w, out=tmp_path / "r.zarr", overwrite=True,
                                      self_ensemble=True))
    assert ens.self_ensemble
    assert np.array_equal(np.asarray(ens.array), api.denoise(img, sigma=20, weights=w, self_ensemble=True))
    assert not np.allclose(np.asarray(ens.array), single_values, atol=1e-4)
    import zarr

    assert zarr.open_group(str(tmp_path / "r.zarr"), mode="r").attrs["napari_mbdl"]["denoise"]["self_ensemble"]


def test_progress_moves_and_cancel_acts_within_one_tile(random_weights, monkeypatch):
    # one chunk, one call: the bar moves through the 8 views and the lifting steps of each, and a
    # Cancel stops the call part-way (checked only between tiles, this run could not be cancelled)
    monkeypatch.setattr("napari_mbdl.engine.run.HEARTBEAT_SECONDS", 0.002)
    img = np.random.default_rng(5).random((96, 96)).astype(np.float32)
    w = random_weights["winnet"]
    events = []
    run_steps(api.denoise_steps(img, sigma=20, weights=w, self_ensemble=True), events.append)
    inside = sorted({e.done for e in events if e.stage == "denoise" and 0 < e.done < img.size})
    assert len(inside) >= 4
    cancel = CancelToken()
    steps = api.denoise_steps(img, sigma=20, weights=w, self_ensemble=True, cancel=cancel)
    with pytest.raises(RunCancelled):
        for event in steps:
            if event.stage == "denoise" and 0 < event.done < img.size:
                cancel.cancel()


def test_bfloat16_precision_is_close_recorded_and_kept_apart(camera, tmp_path):
    clean, noisy = camera
    full = api.denoise(noisy, model="winnet", sigma=25)
    half = run_steps(api.denoise_steps(noisy, model="winnet", sigma=25, precision="bfloat16",
                                       out=tmp_path / "bf16.zarr"))
    assert half.precision == "bfloat16"
    lower = np.asarray(half.array)
    assert not np.array_equal(lower, full)  # the convolutions did run in bfloat16
    assert abs(psnr(clean / 255.0, lower) - psnr(clean / 255.0, full)) < 0.05
    import zarr

    assert zarr.open_group(str(tmp_path / "bf16.zarr"), mode="r").attrs["napari_mbdl"]["denoise"]["precision"] == \
        "bfloat16"
    # a float32 run never resumes (or silently replaces) a bfloat16 result
    with pytest.raises(OutputExistsError):
        run_steps(api.denoise_steps(noisy, model="winnet", sigma=25, out=tmp_path / "bf16.zarr"))
    with pytest.raises(InputError, match="precision"):
        api.denoise(noisy, sigma=25, precision="float16")
