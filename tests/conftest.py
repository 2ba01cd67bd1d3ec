import os

import pytest

# Keep torch and BLAS polite on small CI machines.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MBDL_MEMORY_BUDGET", "512MB")


@pytest.fixture
def tmp_zarr(tmp_path):
    return tmp_path / "out.zarr"


@pytest.fixture
def pause_after_first_progress():
    """Make a widget's threaded run stop after its first progress event until the test releases it.

    ``gate = pause_after_first_progress(widget)`` wraps ``widget.build_steps``; the worker then
    waits after its first event (``gate.reached`` is set), so a test can press Cancel at a known
    point instead of racing a fast machine to the end of the run.  ``gate.set()`` lets it go on.
    """
    import threading

    gates = []

    def install(widget):
        gate = threading.Event()
        gate.reached = threading.Event()
        original = widget.build_steps

        def build_steps(cancel):
            steps = original(cancel)

            def gated():
                first = next(steps)
                yield first
                gate.reached.set()
                if not gate.wait(timeout=60):
                    raise TimeoutError("the test never released the paused run")
                return (yield from steps)

            return gated()

        widget.build_steps = build_steps
        gates.append(gate)
        return gate

    yield install
    for gate in gates:  # never leave a worker thread waiting after a failed test
        gate.set()


@pytest.fixture
def cancel_after_first_progress(pause_after_first_progress, qtbot):
    """``cancel_after_first_progress(widget)``: start a threaded run, press Cancel after its first
    progress event, and wait until the worker has finished."""

    def run_and_cancel(widget, timeout_ms: int = 60000):
        gate = pause_after_first_progress(widget)
        widget.run()
        qtbot.waitUntil(gate.reached.is_set, timeout=timeout_ms)
        widget.cancel()
        gate.set()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout_ms)

    return run_and_cancel
