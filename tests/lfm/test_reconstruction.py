import numpy as np
import pytest
import torch

from napari_mbdl.engine import InputError
from napari_mbdl.lfm.operator import LFMOperator
from napari_mbdl.lfm.simulate import simulate_sample
from napari_mbdl.lfm.solvers import isra, richardson_lucy
from napari_mbdl.lfm.unfolded import DEFAULT_WEIGHTS, UnfoldedISTA, load_unfolded


def psnr(truth, estimate):
    return 10 * np.log10(truth.max() ** 2 / np.mean((truth - estimate) ** 2))


@pytest.fixture(scope="module")
def sample(default_psf):
    return simulate_sample(default_psf, n_lenslets=(9, 9), n_cells=8, photons=500, seed=11)


def test_simulation_is_consistent(sample, default_psf):
    H = LFMOperator(default_psf)
    np.testing.assert_allclose(H.forward(sample.volume), sample.clean_light_field, rtol=1e-4, atol=1e-3)
    assert sample.volume.shape == (9, 45, 45) and sample.light_field.shape == (135, 135)
    noise = sample.light_field - sample.clean_light_field
    assert 1.0 < noise.std() < 20.0  # shot + read noise at ~500 photons peak
    series = simulate_sample(default_psf, n_lenslets=(4, 5), n_cells=5, n_frames=6, seed=1)
    assert series.light_field.shape == (6, 60, 75) and series.volume.shape == (6, 9, 20, 25)
    assert series.activity.shape == (6, 5) and series.activity.std(axis=0).max() > 0  # some cell fires
    again = simulate_sample(default_psf, n_lenslets=(4, 5), n_cells=5, n_frames=6, seed=1)
    np.testing.assert_array_equal(series.light_field, again.light_field)


def test_rl_and_isra_improve_with_iterations(sample, default_psf):
    H = LFMOperator(default_psf)
    rl = [psnr(sample.volume, richardson_lucy(H, sample.light_field, n)) for n in (2, 10, 30)]
    assert rl[0] < rl[1] < rl[2]
    x = isra(H, sample.light_field, 10)
    assert x.min() >= 0 and psnr(sample.volume, x) > psnr(sample.volume, np.zeros_like(x)) + 2
    seen = []
    richardson_lucy(H, sample.light_field, 3, callback=lambda k, v: seen.append(k))
    assert seen == [1, 2, 3]


def test_solvers_refuse_nan(default_psf):
    H = LFMOperator(default_psf)
    lf = np.zeros((45, 45), np.float32)
    lf[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        richardson_lucy(H, lf, 2)
    with pytest.raises(InputError, match="NaN"):
        UnfoldedISTA(9, 2).reconstruct(H, lf)


def test_untrained_network_is_scale_equivariant(sample, default_psf):
    H = LFMOperator(default_psf)
    model = UnfoldedISTA(9, n_layers=4)
    a = model.reconstruct(H, sample.light_field)
    b = model.reconstruct(H, 3.0 * sample.light_field)
    np.testing.assert_allclose(b, 3.0 * a, rtol=1e-3, atol=1e-3 * a.max())
    with pytest.raises(InputError, match="depths"):
        UnfoldedISTA(5, 2).reconstruct(H, sample.light_field)


def test_weights_round_trip(tmp_path, default_psf):
    model = UnfoldedISTA(9, n_layers=3)
    with torch.no_grad():
        model.log_step.add_(0.1)
    path = model.save(tmp_path / "w.safetensors", metadata={"optics": default_psf.optics.to_dict()})
    loaded, meta = load_unfolded(path, optics=default_psf.optics)
    assert meta["optics"] == default_psf.optics.to_dict()
    torch.testing.assert_close(loaded.log_step, model.log_step)
    from napari_mbdl.lfm.optics import LFOptics

    with pytest.raises(InputError, match="different optics"):
        load_unfolded(path, optics=LFOptics(na=0.45))
    with pytest.raises(InputError, match="not found"):
        load_unfolded(tmp_path / "missing.safetensors")


def test_shipped_network_beats_rl_at_equal_and_30_iterations(sample, default_psf):
    H = LFMOperator(default_psf)
    model, meta = load_unfolded(DEFAULT_WEIGHTS, optics=default_psf.optics)
    unfolded = psnr(sample.volume, model.reconstruct(H, sample.light_field))
    rl_equal = psnr(sample.volume, richardson_lucy(H, sample.light_field, model.n_layers))
    rl30 = psnr(sample.volume, richardson_lucy(H, sample.light_field, 30))
    assert unfolded > rl_equal + 1.0
    assert unfolded > rl30
    assert meta["training"]["seed"] == 0


@pytest.mark.slow
def test_training_is_seeded_and_resumable(tmp_path):
    from napari_mbdl.lfm.train import train

    log = []
    kwargs = dict(seed=3, n_layers=2, n_gt=2, n_lenslets=3, batch_gt=1, batch_unlabelled=1, checkpoint_every=2,
                  log=log.append)
    full = train(tmp_path / "a", steps=4, **kwargs)
    train(tmp_path / "b", steps=4, stop_at=2, **kwargs)
    resumed = train(tmp_path / "b", steps=4, resume=True, **kwargs)
    assert any("resumed at step 2" in line for line in log)
    assert resumed["history"][-1]["loss"] == pytest.approx(full["history"][-1]["loss"], rel=1e-4)
    assert (tmp_path / "a" / "unfolded_ista.safetensors").exists()
