import time

import numpy as np
from magicgui.widgets import create_widget

import napari
from napari_mbdl._widgets._base import JobWidget, layer_metadata, require_layer
from napari_mbdl.engine import Operation, run_blocks
from napari_mbdl.engine.progress import Progress
from napari_mbdl.errors import InputError

from ..engine import ops


def _slow_copy(device):
    def fn(block):
        time.sleep(0.05)
        return block.astype(np.float32)

    return fn


class SmoothWidget(JobWidget):
    title = "Smooth (test)"

    def __init__(self, viewer, slow=False):
        super().__init__(viewer)
        self.image = create_widget(annotation=napari.layers.Image, label="image")
        self.form.append(self.image)
        self.slow = slow
        self.image.reset_choices()
        viewer.layers.events.inserted.connect(self.image.reset_choices)

    def build_steps(self, cancel):
        layer = require_layer(self.image.value, "image")
        op = (Operation(key="slow", make=_slow_copy) if self.slow
              else Operation(key="gauss", make=ops.gaussian, halo=(0, 9, 9)))
        data = np.asarray(layer.data)

        def steps():
            result = yield from run_blocks(op, data[None] if data.ndim == 2 else data, tile=(1, 16, 16), cancel=cancel)
            array = result.array[0] if data.ndim == 2 else result.array
            return [(array, {"name": f"{layer.name} smoothed", **layer_metadata(layer)}, "image")]

        return steps()


def test_sync_run_adds_layer_with_same_geometry(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy()
    image = np.random.default_rng(0).random((40, 50)).astype(np.float32)
    viewer.add_image(image, name="noisy", scale=(0.5, 0.25), translate=(3, 4))
    widget = SmoothWidget(viewer)
    qtbot.addWidget(widget)
    widget.run(sync=True)
    assert widget.last_error is None
    out = viewer.layers["noisy smoothed"]
    assert tuple(out.scale) == (0.5, 0.25) and tuple(out.translate) == (3, 4)
    np.testing.assert_allclose(out.data, ops.gaussian_reference(image[None])[0], atol=1e-6)
    assert widget.progress_bar.value() == 1000 and widget.run_button.isEnabled()


def test_missing_layer_is_reported_not_raised(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy()
    widget = SmoothWidget(viewer)
    qtbot.addWidget(widget)
    widget.run(sync=True)
    assert "choose a image layer" in widget.last_error
    assert len(viewer.layers) == 0


def test_nan_input_is_reported_and_input_untouched(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy()
    image = np.ones((20, 20), np.float32)
    image[3, 3] = np.nan
    viewer.add_image(image, name="bad")
    widget = SmoothWidget(viewer)
    qtbot.addWidget(widget)
    widget.run(sync=True)
    assert "NaN" in widget.last_error
    assert len(viewer.layers) == 1 and np.isnan(viewer.layers["bad"].data[3, 3])


def test_threaded_run_can_be_cancelled(make_napari_viewer_proxy, qtbot, pause_after_first_progress):
    viewer = make_napari_viewer_proxy()
    viewer.add_image(np.zeros((128, 128), np.float32), name="big")
    widget = SmoothWidget(viewer, slow=True)
    qtbot.addWidget(widget)
    gate = pause_after_first_progress(widget)
    worker = widget.run()
    assert worker is not None and not widget.run_button.isEnabled()
    qtbot.waitUntil(gate.reached.is_set, timeout=10000)
    widget.cancel()
    gate.set()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10000)
    assert widget.run_button.isEnabled()
    assert "big smoothed" not in viewer.layers
    assert widget.progress_bar.value() < 1000
    assert widget.status.text().startswith("Cancelled.")


class FailingWidget(JobWidget):
    title = "Failing (test)"

    def build_steps(self, cancel):
        def steps():
            yield Progress("reading", 1, 2)
            raise InputError("tile 3 of the input could not be read")

        return steps()


def test_error_in_a_threaded_run_is_shown_not_raised(make_napari_viewer_proxy, qtbot):
    # pytest-qt fails the test on any exception raised in the Qt event loop (a traceback in napari).
    viewer = make_napari_viewer_proxy()
    widget = FailingWidget(viewer)
    qtbot.addWidget(widget)
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10000)
    assert widget.last_error == "tile 3 of the input could not be read"
    assert widget.status.text() == widget.last_error and widget.run_button.isEnabled()


def test_threaded_run_finishes(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy()
    viewer.add_image(np.zeros((32, 32), np.float32), name="small")
    widget = SmoothWidget(viewer)
    qtbot.addWidget(widget)
    widget.run()
    qtbot.waitUntil(lambda: "small smoothed" in viewer.layers, timeout=20000)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10000)


def test_large_results_go_to_a_fresh_zarr_store(monkeypatch, tmp_path):
    from napari_mbdl._widgets import _base

    monkeypatch.setattr("platformdirs.user_cache_dir", lambda name: str(tmp_path / name))
    assert _base.result_store("small", 1e6) is None
    path = _base.result_store("denoised: cells/1", 1e10)
    assert path.suffix == ".zarr" and path.parent.exists() and not path.exists()
    assert "/" not in path.name and ":" not in path.name


def test_empty_path_fields_never_mean_the_working_folder(monkeypatch, tmp_path):
    from magicgui.widgets import FileEdit, LineEdit

    from napari_mbdl._widgets._base import optional_path

    monkeypatch.chdir(tmp_path)
    for widget in (FileEdit(mode="w"), FileEdit(mode="d"), LineEdit()):
        widget.value = ""
        assert optional_path(widget) is None
    field = FileEdit(mode="w")
    field.value = str(tmp_path / "out.zarr")
    assert optional_path(field) == str(tmp_path / "out.zarr")


def test_optional_path_fields_start_empty(make_napari_viewer_proxy, qtbot):
    """An unset file field shows nothing (not the current folder) and reads as no path."""
    from napari_mbdl._widgets._base import optional_path
    from napari_mbdl._widgets.denoise import DenoiseWidget, TrainDenoiserWidget
    from napari_mbdl._widgets.fusion import FusionWidget

    viewer = make_napari_viewer_proxy()
    denoise, train, fusion = DenoiseWidget(viewer), TrainDenoiserWidget(viewer), FusionWidget(viewer)
    fields = [denoise.weights, denoise.output, train.init_file, train.output, fusion.psf_file,
              fusion.export_folder]
    for field in fields:
        assert field.line_edit.value == "", field.label
        assert optional_path(field) is None
    denoise.output.value = "result.zarr"
    assert optional_path(denoise.output).endswith("result.zarr")


class OneLongCallWidget(JobWidget):
    """A run that is a single long call of its block function (one big tile on a CPU)."""

    title = "One long call (test)"
    steps_total = 2000

    def __init__(self, viewer):
        super().__init__(viewer)
        self.steps_done = 0

    def build_steps(self, cancel):
        from napari_mbdl.engine import checkpoint

        def make(device):
            def fn(block):
                for i in range(self.steps_total):
                    time.sleep(0.002)
                    self.steps_done += 1
                    checkpoint((i + 1) / self.steps_total)
                return block

            return fn

        def steps():
            result = yield from run_blocks(Operation(key="one-long-call", make=make), np.ones((32, 32), np.float32),
                                           tile=(32, 32), cancel=cancel)
            return [(result.array, {"name": "long call result"}, "image")]

        return steps()


def test_threaded_run_shows_progress_and_cancels_within_one_call(make_napari_viewer_proxy, qtbot, monkeypatch):
    monkeypatch.setattr("napari_mbdl.engine.run.HEARTBEAT_SECONDS", 0.01)
    viewer = make_napari_viewer_proxy()
    widget = OneLongCallWidget(viewer)
    qtbot.addWidget(widget)
    widget.run()
    # the bar moves while the only call is still running: napari's event loop is not blocked
    qtbot.waitUntil(lambda: 0 < widget.progress_bar.value() < 1000, timeout=20000)
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=20000)
    assert widget.steps_done < widget.steps_total
    assert widget.status.text().startswith("Cancelled.") and widget.run_button.isEnabled()
    assert "long call result" not in viewer.layers
