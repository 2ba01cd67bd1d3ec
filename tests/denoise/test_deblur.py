import numpy as np
import pytest

from napari_mbdl.denoise import deblur as db
from napari_mbdl.denoise.train import psnr
from napari_mbdl.engine import InputError, run_steps


def test_kernels_are_normalised():
    for k in (db.gaussian_kernel(1.5), db.motion_kernel(9, 30), db.motion_kernel(4)):
        assert abs(k.sum() - 1) < 1e-12 and k.min() >= 0
        assert k.shape[0] % 2 == 1
    k = db.motion_kernel(5, 0)
    assert np.allclose(k[k.shape[0] // 2].sum(), 1.0)  # a horizontal line through the centre


def test_data_step_inverts_noise_free_blur():
    rng = np.random.default_rng(0)
    x = rng.random((32, 32))
    k = db.gaussian_kernel(1.0)
    y = db.blur(x, k, mode="wrap")
    otf = db._otf(k, x.shape)
    # with mu -> 0 the closed form is the inverse filter on the circular domain
    est = np.fft.irfft2(np.conj(otf) * np.fft.rfft2(y) / (np.abs(otf) ** 2 + 1e-10), s=x.shape)
    assert np.abs(est - x).max() < 1e-3


def test_bad_kernels_and_parameters():
    img = np.random.rand(32, 32)
    for bad in (np.zeros((3, 3)), np.ones((3, 3, 3)), np.full((3, 3), np.nan), np.ones((40, 40))):
        with pytest.raises(InputError):
            db.deblur(img, bad)
    with pytest.raises(InputError):
        db.deblur(img, db.gaussian_kernel(1.0), lam=-1)
    with pytest.raises(InputError):
        db.deblur(img, db.gaussian_kernel(1.0), sigma="loud")
    with pytest.raises(InputError):
        db.gaussian_kernel(0)
    with pytest.raises(InputError):
        db.motion_kernel(0.5)


@pytest.mark.slow
def test_pnp_deblurring_improves_psnr(camera):
    clean, _ = camera
    ref = clean / 255.0
    k = db.gaussian_kernel(1.6)
    rng = np.random.default_rng(1)
    blurred = db.blur(ref, k, mode="reflect") + rng.standard_normal(ref.shape) * 5 / 255
    result = run_steps(db.deblur_steps(blurred, k, sigma="auto", max_iter=15))
    assert result.array.shape == ref.shape and result.array.dtype == np.float64
    assert 1 <= result.iterations[0] <= 15
    assert psnr(ref, result.array) > psnr(ref, blurred) + 1.0
    stack = np.stack([blurred, blurred]).astype(np.float32)
    two = db.deblur(stack, k, sigma=5.0, max_iter=3)
    assert two.shape == stack.shape and two.dtype == np.float32


def test_progress_moves_and_cancel_acts_within_one_denoiser_pass(monkeypatch):
    from napari_mbdl.engine import CancelToken, RunCancelled

    monkeypatch.setattr("napari_mbdl.engine.run.HEARTBEAT_SECONDS", 0.002)
    rng = np.random.default_rng(2)
    img = db.blur(rng.random((96, 96)), db.gaussian_kernel(1.5)) + rng.normal(0, 0.02, (96, 96))
    events = []
    run_steps(db.deblur_steps(img, db.gaussian_kernel(1.5), sigma=5, max_iter=2), events.append)
    per_iteration = db._UNITS
    within = {e.done % per_iteration for e in events if e.done % per_iteration}
    assert len(within) >= 3  # the bar moves between iterations, not only at their ends
    done = [e.done for e in events]
    assert done == sorted(done) and done[-1] == events[-1].total
    cancel = CancelToken()
    steps = db.deblur_steps(img, db.gaussian_kernel(1.5), sigma=5, max_iter=1, cancel=cancel)
    with pytest.raises(RunCancelled):
        for event in steps:
            if "denoising" in event.message:
                cancel.cancel()  # only one iteration: a cancel between iterations would come too late
