"""Progress and Cancel inside one long call of a block function (a big tile on a CPU)."""

import os
import threading
import time

import numpy as np
import pytest

from napari_mbdl.engine import CancelToken, Operation, RunCancelled, checkpoint, progress_span, run_blocks, run_steps
from napari_mbdl.engine.progress import CallState, in_call
from napari_mbdl.io.arrays import open_array

STEPS = 200


@pytest.fixture
def fast_heartbeat(monkeypatch):
    monkeypatch.setattr("napari_mbdl.engine.run.HEARTBEAT_SECONDS", 0.005)


def _make_stepping(device, counter, pause=0.002):
    def fn(block):
        for i in range(STEPS):
            time.sleep(pause)
            counter["steps"] += 1
            checkpoint((i + 1) / STEPS, f"step {i + 1}/{STEPS}")
        return block * 2

    return fn


def _stepping_op(counter, key="stepping"):
    return Operation(key=key, make=lambda device: _make_stepping(device, counter))


def test_a_long_call_reports_progress_before_it_ends(fast_heartbeat):
    x = np.ones((64, 64), np.float32)
    counter = {"steps": 0}
    events = []
    result = run_steps(run_blocks(_stepping_op(counter, "stepping-progress"), x, tile=(64, 64)), events.append)
    np.testing.assert_array_equal(result.array, 2 * x)
    done = [e.done for e in events]
    assert done == sorted(done) and done[-1] == x.size
    inside = [e for e in events if 0 < e.done < x.size]
    assert len(inside) >= 3  # the bar moves within the one tile this run has
    assert any("step " in e.message for e in inside)


def test_cancel_stops_the_only_call_at_its_next_checkpoint(fast_heartbeat, tmp_zarr):
    # one chunk, one call: a cancel checked only between tiles would let this run finish
    x = np.ones((64, 64), np.float32)
    counter = {"steps": 0}
    cancel = CancelToken()
    steps = run_blocks(_stepping_op(counter, "stepping-cancel"), x, tile=(64, 64), out=tmp_zarr, cancel=cancel)
    with pytest.raises(RunCancelled):
        for event in steps:
            if 0 < event.done < x.size:
                cancel.cancel()
    assert counter["steps"] < STEPS
    assert not tmp_zarr.exists()  # nothing that looks complete
    with pytest.raises(Exception, match="unfinished"):
        open_array(tmp_zarr.with_name("out.zarr.partial"))


def test_a_dropped_run_stops_its_call(fast_heartbeat):
    """A napari worker that quits drops the generator mid-call: the call must not run on."""
    counter = {"steps": 0}
    steps = run_blocks(_stepping_op(counter, "stepping-drop"), np.ones((64, 64), np.float32), tile=(64, 64))
    for event in steps:
        if event.done > 0:
            break
    steps.close()  # returns once the call has stopped at a checkpoint
    stopped_at = counter["steps"]
    time.sleep(0.05)
    assert stopped_at < STEPS and counter["steps"] == stopped_at


def test_errors_from_the_compute_thread_keep_their_type():
    def make(device):
        def fn(block):
            raise ZeroDivisionError("inside the block function")

        return fn

    with pytest.raises(ZeroDivisionError, match="inside the block function"):
        run_steps(run_blocks(Operation(key="failing", make=make), np.ones((8, 8), np.float32)))


def test_nested_spans_compose_and_never_go_back():
    state = CallState(CancelToken())
    with in_call(state):
        with progress_span(0.5, 1.0):
            with progress_span(0.0, 0.5):
                checkpoint(1.0)
                assert state.fraction == pytest.approx(0.75)
                checkpoint(0.2)  # a smaller report inside the same span does not move the bar back
                assert state.fraction == pytest.approx(0.75)
            assert state.fraction == pytest.approx(0.75)
        assert state.fraction == pytest.approx(1.0)


def test_checkpoint_outside_a_call_does_nothing_and_cancel_is_per_thread():
    checkpoint(0.5)  # no engine call: a no-op
    with progress_span(0.0, 1.0):
        checkpoint(1.0)
    token = CancelToken()
    token.cancel()
    seen = {}

    def other_thread():
        try:
            checkpoint()
            seen["raised"] = False
        except RunCancelled:
            seen["raised"] = True

    with in_call(CallState(token)):
        with pytest.raises(RunCancelled):
            checkpoint()
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert seen == {"raised": False}
    checkpoint()  # the state is gone once the call ends


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to tell one thread from two")
def test_the_compute_thread_keeps_torchs_thread_count():
    """torch.set_num_threads(1) must hold in the engine's compute thread too (a fresh thread's
    oneDNN convolutions would otherwise use every core): CPU time over wall time stays near 1."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    seen = {}

    def make(device):
        x, w = torch.randn(1, 32, 768, 768), torch.randn(32, 32, 3, 3)

        def fn(block):
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(3):
                torch.nn.functional.conv2d(x, w, padding=1)
            seen["cores"] = (time.process_time() - cpu) / (time.perf_counter() - wall)
            return block

        return fn

    try:
        torch.set_num_threads(1)
        run_steps(run_blocks(Operation(key="threads", make=make, uses_torch=True), np.ones((8, 8), np.float32)))
    finally:
        torch.set_num_threads(before)
    assert seen["cores"] < 1.4
