"""The common base of every napari-mbdl dock widget.

A subclass adds its controls to ``self.form`` and implements :meth:`JobWidget.build_steps`, which
reads layers and options on the main thread, validates them (raising ``InputError``) and returns a
steps generator.  The base class runs that generator in a napari thread worker (or synchronously,
for tests), shows its progress (in the widget and in napari's activity dock), stops it at the next
step on Cancel, shows bad input as a notification without traceback, and adds the returned
layers on the main thread.
"""

from __future__ import annotations

import logging
from collections.abc import Generator

from magicgui.widgets import Container
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from napari_mbdl.engine.progress import CancelToken, Progress
from napari_mbdl.errors import InputError, MBDLError, RunCancelled

log = logging.getLogger(__name__)

# Results larger than this are streamed to a zarr store on disk and shown lazily (dask).
IN_MEMORY_LIMIT_BYTES = 256 * 2**20


class JobWidget(QWidget):
    """Base dock widget: form + Run/Cancel + progress, running one steps generator at a time."""

    title = "napari-mbdl"
    run_text = "Run"

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.form = Container(labels=True)
        self.run_button = QPushButton(self.run_text)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button.clicked.connect(self.cancel)
        self.worker = None
        self._cancel_token: CancelToken | None = None
        self._napari_progress = None
        self.last_error: str | None = None
        self.last_result = None

    # -- to implement -------------------------------------------------------------------------
    def build_steps(self, cancel: CancelToken) -> Generator[Progress, None, list]:
        """Read layers and options, validate them, and return a steps generator.

        The generator yields :class:`Progress` and returns a list of napari LayerDataTuples.
        """
        raise NotImplementedError

    def on_preview(self, preview) -> None:
        """Show an intermediate result carried by ``Progress.preview`` (main thread)."""

    def on_result(self, layer_data: list) -> None:
        """Add the returned layers; subclasses may also update plots etc."""
        self.add_layers(layer_data)

    # -- running ------------------------------------------------------------------------------
    def run(self, sync: bool = False):
        """Start the job; with ``sync=True`` run it to the end on this thread (tests, scripts)."""
        if self.worker is not None:
            return None
        self.last_error = None
        self._cancel_token = CancelToken()
        try:
            steps = self.build_steps(self._cancel_token)
        except Exception as error:  # bad input found before starting
            self._on_error(error)
            return None
        self._set_running(True)
        if sync:
            return self._run_sync(steps)
        from napari.qt.threading import create_worker

        # Connecting "errored" through _connect stops napari from also re-raising the error in the
        # event loop, which would show a traceback for a cancelled run or bad input.
        self.worker = create_worker(
            _forward,
            steps,
            _connect={
                "yielded": self._on_progress,
                "returned": self._on_returned,
                "errored": self._on_error,
                "aborted": self._on_cancelled,
                "finished": self._on_finished,
            },
            _start_thread=False,
        )
        self.worker.start()
        return self.worker

    def _run_sync(self, steps):
        try:
            while True:
                try:
                    event = next(steps)
                except StopIteration as stop:
                    self._on_returned(stop.value)
                    return stop.value
                self._on_progress(event)
        except Exception as error:
            self._on_error(error)
            return None
        finally:
            self._on_finished()

    def cancel(self) -> None:
        """Stop at the next step of the current tile (or the next tile, for operations without
        steps); finished chunks of a zarr output are kept for resuming."""
        if self._cancel_token is not None:
            self._cancel_token.cancel()
        if self.worker is not None:
            self.worker.quit()
        self.status.setText("Cancelling...")

    # -- callbacks (main thread) ------------------------------------------------------------------
    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if running:
            self.progress_bar.setValue(0)
            self.status.setText("Running...")
            try:
                from napari.utils import progress

                self._napari_progress = progress(total=1000, desc=self.title)
            except Exception:  # the activity dock is a nicety; never fail a run for it
                self._napari_progress = None
        elif self._napari_progress is not None:
            self._napari_progress.close()
            self._napari_progress = None

    def _on_progress(self, event: Progress) -> None:
        value = int(1000 * min(max(event.fraction, 0.0), 1.0))
        self.progress_bar.setValue(value)
        text = f"{event.stage}: {100 * event.fraction:.0f}%" + (f" ({event.message})" if event.message else "")
        self.status.setText(text)
        bar = self._napari_progress
        if bar is not None:
            bar.n = value
            bar.set_description(f"{self.title}: {event.stage}")
        if event.preview is not None:
            self.on_preview(event.preview)

    def _on_returned(self, layer_data) -> None:
        self.last_result = layer_data
        self.progress_bar.setValue(1000)
        self.status.setText("Done.")
        if layer_data:
            self.on_result(layer_data)

    def _on_error(self, error: BaseException) -> None:
        from napari.utils.notifications import show_error, show_info

        if isinstance(error, RunCancelled):
            self._on_cancelled()
            return
        if isinstance(error, MBDLError):
            message = str(error)
        else:
            log.error("%s failed", self.title, exc_info=error)
            message = f"failed: {type(error).__name__}: {error}"
        self.last_error = message
        self.status.setText(message)
        show_error(f"{self.title}: {message}")

    def _on_cancelled(self) -> None:
        from napari.utils.notifications import show_info

        self.last_error = None
        self.status.setText("Cancelled. Running again resumes where it stopped (zarr outputs).")
        show_info(f"{self.title}: cancelled")

    def _on_finished(self) -> None:
        self.worker = None
        self._set_running(False)

    def add_layers(self, layer_data: list) -> list:
        from napari.layers import Layer

        added = []
        for data, meta, layer_type in layer_data:
            added.append(self.viewer.add_layer(Layer.create(data, dict(meta), layer_type)))
        return added


def _forward(steps):
    """Wrap a steps generator so napari's worker forwards its events and return value."""
    return (yield from steps)


def layer_metadata(layer) -> dict:
    """scale/translate/metadata/axis labels of a layer, to give the result the same geometry."""
    meta = {"scale": tuple(layer.scale), "translate": tuple(layer.translate), "metadata": dict(layer.metadata)}
    labels = getattr(layer, "axis_labels", None)
    if labels is not None:
        meta["axis_labels"] = tuple(labels)
    units = getattr(layer, "units", None)
    if units is not None:
        meta["units"] = tuple(str(u) for u in units)
    return meta


def result_store(name: str, expected_bytes: float):
    """Where a widget's result goes: ``None`` (memory) when small, else a fresh zarr path in the cache.

    Large results are written chunk by chunk by the engine and the layer reads them back lazily,
    so a huge output never has to fit in RAM.
    """
    if expected_bytes <= IN_MEMORY_LIMIT_BYTES:
        return None
    import re
    import time
    from pathlib import Path

    import platformdirs

    folder = Path(platformdirs.user_cache_dir("napari-mbdl")) / "results"
    folder.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]
    return folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}.zarr"


def optional_path(widget) -> str | None:
    """The text of a path field (a magicgui FileEdit or LineEdit), or None when it is empty.

    An empty FileEdit reads as the current folder (``.`` or its absolute path); that must never
    become an output (or input) path, so it counts as empty.
    """
    from pathlib import Path

    text = str(widget.value or "").strip()
    if text in ("", "."):
        return None
    try:
        if Path(text).resolve() == Path.cwd().resolve():
            return None
    except OSError:
        pass
    return text


def require_layer(layer, what: str):
    """The chosen layer, or an InputError saying which one is missing or empty."""
    if layer is None:
        raise InputError(f"choose a {what} layer first")
    shape = getattr(layer.data, "shape", ())
    if len(shape) == 0 or any(n == 0 for n in shape):
        raise InputError(f"the {what} layer {layer.name!r} is empty")
    return layer
