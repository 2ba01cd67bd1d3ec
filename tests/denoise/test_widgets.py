import numpy as np
import pytest

from napari_mbdl._widgets.denoise import DeblurWidget, DenoiseWidget, TrainDenoiserWidget
from napari_mbdl.denoise.train import psnr


def test_denoise_widget_end_to_end_from_sample_data(make_napari_viewer_proxy, qtbot):
    from napari_mbdl.denoise.sample_data import noisy_camera

    viewer = make_napari_viewer_proxy()
    (noisy, meta, _), (clean, _, _) = noisy_camera()
    viewer.add_image(noisy[:128, :128], name="noisy", scale=(0.5, 0.5), translate=(2, 3))
    widget = DenoiseWidget(viewer)
    widget.image.value = viewer.layers["noisy"]
    widget.auto_sigma.value = True
    widget.bands.value = True
    widget.run(sync=True)
    assert widget.last_error is None
    out = [layer for layer in viewer.layers if "denoised" in layer.name][0]
    assert out.data.shape == (128, 128)
    assert tuple(out.scale) == (0.5, 0.5) and tuple(out.translate) == (2, 3)
    ref = clean[:128, :128] / 255.0
    assert psnr(ref, np.asarray(out.data)) > psnr(ref, noisy[:128, :128]) + 5
    assert "estimated" in widget.estimate.value
    band_layers = [layer for layer in viewer.layers if "z_d" in layer.name]
    assert len(band_layers) == 2 and band_layers[0].data.shape == (15, 128, 128)


def test_denoise_widget_stack_with_weights_file(make_napari_viewer_proxy, qtbot, random_weights):
    viewer = make_napari_viewer_proxy()
    stack = (np.random.default_rng(0).random((3, 40, 40)) * 4000).astype(np.uint16)
    viewer.add_image(stack, name="stack")
    widget = DenoiseWidget(viewer)
    widget.image.value = viewer.layers["stack"]
    widget.auto_sigma.value = False
    widget.sigma.value = 10
    widget.weights.value = str(random_weights["linn"])
    widget.run(sync=True)
    assert widget.last_error is None
    out = viewer.layers[-1]
    assert out.data.shape == stack.shape and out.data.dtype == np.uint16


@pytest.mark.parametrize("option,value,kwargs,name_part", [
    ("ensemble", True, {"self_ensemble": True}, ", 8-view ensemble"),
    ("precision", "bfloat16", {"precision": "bfloat16"}, ", bfloat16"),
])
def test_denoise_widget_options_reach_the_result(make_napari_viewer_proxy, qtbot, random_weights, option, value,
                                                 kwargs, name_part):
    from napari_mbdl.denoise.api import denoise

    viewer = make_napari_viewer_proxy()
    img = np.random.default_rng(2).random((40, 48)).astype(np.float32)
    viewer.add_image(img, name="img")
    widget = DenoiseWidget(viewer)
    widget.image.value = viewer.layers["img"]
    widget.auto_sigma.value = False
    widget.sigma.value = 20
    widget.weights.value = str(random_weights["winnet"])
    getattr(widget, option).value = value
    widget.run(sync=True)
    assert widget.last_error is None
    out = viewer.layers[-1]
    assert name_part in out.name
    expected = denoise(img, sigma=20, weights=random_weights["winnet"], **kwargs)
    assert np.allclose(np.asarray(out.data), expected, atol=1e-6)
    assert not np.allclose(np.asarray(out.data), denoise(img, sigma=20, weights=random_weights["winnet"]), atol=1e-6)


def test_denoise_widget_reports_bad_input(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy()
    widget = DenoiseWidget(viewer)
    widget.run(sync=True)
    assert widget.last_error and "choose" in widget.last_error
    img = np.random.rand(30, 30)
    img[0, 0] = np.nan
    viewer.add_image(img, name="nan")
    widget.image.value = viewer.layers["nan"]
    widget.auto_sigma.value = False
    widget.run(sync=True)
    assert widget.last_error and "NaN" in widget.last_error
    assert len(viewer.layers) == 1


@pytest.mark.slow
def test_deblur_widget_end_to_end(make_napari_viewer_proxy, qtbot):
    from napari_mbdl.denoise.deblur import blur, gaussian_kernel
    from napari_mbdl.denoise.sample_data import clean_camera

    viewer = make_napari_viewer_proxy()
    ref = clean_camera(128) / 255.0
    blurred = (blur(ref, gaussian_kernel(1.6), mode="reflect")
               + np.random.default_rng(0).standard_normal(ref.shape) * 5 / 255).astype(np.float32)
    viewer.add_image(blurred, name="blurred")
    widget = DeblurWidget(viewer)
    widget.image.value = viewer.layers["blurred"]
    widget.kernel_kind.value = "gaussian"
    widget.width.value = 1.6
    widget.max_iter.value = 8
    widget.run(sync=True)
    assert widget.last_error is None
    out = viewer.layers[-1]
    assert "deblurred" in out.name and "current iterate" not in " ".join(layer.name for layer in viewer.layers)
    assert psnr(ref, np.asarray(out.data)) > psnr(ref, blurred)


def test_deblur_widget_kernel_choices(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy()
    widget = DeblurWidget(viewer)
    widget.kernel_kind.value = "motion"
    widget.length.value = 7
    assert abs(widget.kernel().sum() - 1) < 1e-9
    widget.kernel_kind.value = "image layer"
    widget.run(sync=True)
    assert widget.last_error  # no image, no kernel layer


def test_train_widget_fine_tunes_and_saves(make_napari_viewer_proxy, qtbot, tmp_path):
    viewer = make_napari_viewer_proxy()
    clean = (np.random.default_rng(0).random((2, 48, 48)) * 255).astype(np.uint8)
    viewer.add_image(clean, name="clean")
    widget = TrainDenoiserWidget(viewer)
    widget.clean.value = viewer.layers["clean"]
    widget.model.value = "linn"
    widget.start.value = "scratch"
    widget.steps.value = 6
    widget.output.value = str(tmp_path / "mine.safetensors")
    widget.run(sync=True)
    assert widget.last_error is None
    assert (tmp_path / "mine.safetensors").exists()
    assert len(widget.losses) >= 2 and all(np.isfinite(v) for _, v in widget.losses)
    widget.run(sync=True)  # the file exists now: refused, not overwritten
    assert widget.last_error and "exists" in widget.last_error
    import torch

    if not torch.cuda.is_available():  # a GPU asked for where there is none: a message, no file
        widget.device.value = "cuda"
        widget.output.value = str(tmp_path / "gpu.safetensors")
        widget.run(sync=True)
        assert widget.last_error and "no CUDA GPU" in widget.last_error
        assert not (tmp_path / "gpu.safetensors").exists()


def test_denoise_widget_cancel_in_a_thread_adds_nothing(
    make_napari_viewer_proxy, qtbot, monkeypatch, cancel_after_first_progress
):
    monkeypatch.setenv("MBDL_MEMORY_BUDGET", "64MB")  # many small tiles, so Cancel lands between them
    viewer = make_napari_viewer_proxy()
    stack = (np.random.default_rng(1).random((60, 96, 96)) * 255).astype(np.uint8)
    viewer.add_image(stack, name="long stack")
    widget = DenoiseWidget(viewer)
    qtbot.addWidget(widget)
    widget.image.value = viewer.layers["long stack"]
    widget.auto_sigma.value = False
    widget.sigma.value = 25
    cancel_after_first_progress(widget)
    assert widget.last_error is None and widget.run_button.isEnabled()
    assert widget.progress_bar.value() < 1000
    assert [layer.name for layer in viewer.layers] == ["long stack"]


def test_large_results_stream_to_a_cache_zarr_and_show_lazily(make_napari_viewer_proxy, qtbot, monkeypatch, tmp_path):
    from napari_mbdl._widgets import _base

    monkeypatch.setattr(_base, "IN_MEMORY_LIMIT_BYTES", 0)  # pretend every result is huge
    monkeypatch.setattr("platformdirs.user_cache_dir", lambda name: str(tmp_path / name))
    viewer = make_napari_viewer_proxy()
    viewer.add_image((np.random.default_rng(2).random((2, 48, 48)) * 255).astype(np.uint8), name="stack")
    widget = DenoiseWidget(viewer)
    qtbot.addWidget(widget)
    widget.image.value = viewer.layers["stack"]
    widget.auto_sigma.value = False
    widget.sigma.value = 25
    widget.run(sync=True)
    assert widget.last_error is None, widget.last_error
    out = [layer for layer in viewer.layers if "denoised" in layer.name][0]
    assert hasattr(out.data, "dask") and out.data.shape == (2, 48, 48)
    assert len(list((tmp_path / "napari-mbdl" / "results").glob("*.zarr"))) == 1
