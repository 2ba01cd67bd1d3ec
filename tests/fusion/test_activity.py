"""Activity extraction: the NNLS solver, the engine run, the API and its refusals."""

import json

import numpy as np
import pytest

from napari_mbdl.engine import InputError, OutputExistsError, run_steps
from napari_mbdl.fusion.api import (
    activity_steps,
    fuse,
    fuse_steps,
    resolve_operator,
    summarise_series_steps,
)
from napari_mbdl.fusion.metrics import match_points, trace_scores
from napari_mbdl.fusion.register import Registration
from napari_mbdl.fusion.sample import centres_um_in_lfm


def test_batched_nnls_matches_scipy():
    import torch
    from scipy.optimize import nnls

    from napari_mbdl.fusion.activity import solve_nnls_batch

    rng = np.random.default_rng(0)
    design = rng.random((60, 6))
    truth = np.clip(rng.normal(0.5, 1.0, (5, 6)), 0, None)
    frames = truth @ design.T + 0.05 * rng.standard_normal((5, 60))
    gram = torch.as_tensor(design.T @ design)
    got = solve_nnls_batch(gram, torch.as_tensor(frames @ design), n_constrained=6, n_iter=3000, tol=1e-12).numpy()
    for frame, coefficients in zip(frames, got):
        np.testing.assert_allclose(coefficients, nnls(design, frame)[0], atol=1e-5)
    assert got.min() >= 0


def _true_registration(sample):
    return Registration.from_parameters(sample.rotation_deg, sample.shift_um, sample.two_photon.shape,
                                        sample.two_photon_voxel_um, sample.volume_shape, sample.lfm_voxel_um)


def test_activity_recovers_traces_and_tiling_does_not_change_them(small_pair):
    from napari_mbdl.engine import run_blocks
    from napari_mbdl.fusion.activity import activity_operation, design_matrix
    from napari_mbdl.fusion.operators import as_numpy_operator

    sample, operator = small_pair
    spec = resolve_operator(operator, (32, 32), volume_shape=sample.volume_shape, lfm_voxel_um=sample.lfm_voxel_um)
    result = run_steps(activity_steps(sample.light_fields, spec, sample.true_labels, _true_registration(sample),
                                      device="cpu"))
    assert result.traces.shape == (8, 60) and result.dff.shape == (8, 60)
    assert result.volumes.shape == (60, *sample.volume_shape)
    assert result.traces.min() >= 0
    scores = trace_scores(result.traces, sample.true_fluorescence, [(i, i) for i in range(8)])
    assert scores["median_pearson"] > 0.95
    # The activity volume of a frame is the footprints weighted by that frame's traces.
    np.testing.assert_allclose(result.volumes[7], np.tensordot(result.traces[:, 7], result.footprints, 1), rtol=1e-4,
                               atol=1e-4)
    # Whole-series and tiled runs agree (every frame is solved on its own).
    design, norms, k = design_matrix(as_numpy_operator(operator), result.footprints)
    op = activity_operation(design, norms, k)
    tiled = run_steps(run_blocks(op, sample.light_fields, n_tiled=1, tile=(7,), device="cpu")).array
    whole = run_steps(run_blocks(op, sample.light_fields, n_tiled=1, tile=(60,), device="cpu")).array
    np.testing.assert_allclose(tiled, whole, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(tiled[:, :8].T, result.traces, rtol=1e-4, atol=1e-3)


def test_baseline_rl_averaging_runs(small_pair):
    import functools

    from napari_mbdl.engine import run_blocks
    from napari_mbdl.fusion.activity import rl_average_operation

    sample, operator = small_pair
    factory = functools.partial(lambda device, op: op, op=operator)
    op = rl_average_operation(factory, sample.true_footprints, n_iter=5)
    out = run_steps(run_blocks(op, sample.light_fields[:10], n_tiled=1, device="cpu")).array
    assert out.shape == (10, 8) and np.all(np.isfinite(out)) and out.min() >= 0


def test_dropped_frames_and_bad_series_are_refused(small_pair):
    sample, _ = small_pair
    series = sample.light_fields.copy()
    series[17] = 0.0
    before = series.copy()
    with pytest.raises(InputError, match="dropped"):
        run_steps(summarise_series_steps(series))
    np.testing.assert_array_equal(series, before)  # input untouched
    with pytest.raises(InputError, match="dropped"):
        run_steps(summarise_series_steps(sample.light_fields, timestamps=np.r_[np.arange(30), np.arange(31, 61)] * 0.1))
    with pytest.raises(InputError, match="timestamps"):
        run_steps(summarise_series_steps(sample.light_fields, timestamps=np.arange(59)))
    with pytest.raises(InputError, match="3D"):
        run_steps(summarise_series_steps(sample.light_fields[0]))
    nan = sample.light_fields.copy()
    nan[3, 2, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        run_steps(summarise_series_steps(nan))
    mean, means = run_steps(summarise_series_steps(sample.light_fields, timestamps=np.arange(60) * 0.1))
    np.testing.assert_allclose(mean, sample.light_fields.mean(0), rtol=1e-4)
    assert means.shape == (60,)


def test_fuse_refuses_bad_input(small_pair, tmp_path):
    sample, operator = small_pair
    kwargs = dict(two_photon_voxel_um=sample.two_photon_voxel_um, volume_shape=sample.volume_shape,
                  lfm_voxel_um=sample.lfm_voxel_um)
    with pytest.raises(InputError, match="PSF"):
        fuse(sample.two_photon, sample.light_fields, None, **kwargs)
    with pytest.raises(InputError, match="PSF file not found"):
        fuse(sample.two_photon, sample.light_fields, tmp_path / "missing.zarr", **kwargs)
    with pytest.raises(InputError, match="2P stack must be 3D"):
        fuse(sample.two_photon[0], sample.light_fields, operator, **kwargs)
    with pytest.raises(InputError, match="series must be 3D"):
        fuse(sample.two_photon, sample.light_fields[:, None], operator, **kwargs)
    with pytest.raises(InputError, match="zero neurons"):
        fuse(sample.two_photon, sample.light_fields, operator, labels=np.zeros(sample.two_photon.shape, np.int32),
             **kwargs)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "traces.csv").write_text("keep me")
    with pytest.raises(OutputExistsError):
        fuse(sample.two_photon, sample.light_fields, operator, out=tmp_path / "full", **kwargs)
    assert (tmp_path / "full" / "traces.csv").read_text() == "keep me"


def test_fuse_with_the_physical_lfm_model(lfm_pair, tmp_path):
    """Sample data -> segmentation, registration, activity -> written outputs, scored against truth."""
    sample, psf = lfm_pair
    psf_path = psf.save(tmp_path / "psf.zarr")
    series = sample.light_fields.copy()
    result = fuse(sample.two_photon, series, psf_path, two_photon_voxel_um=sample.two_photon_voxel_um,
                  out=tmp_path / "out", frame_rate_hz=10.0, device="cpu")
    np.testing.assert_array_equal(series, sample.light_fields)
    reg = result.registration
    assert abs(reg.rotation_deg - sample.rotation_deg) < 1.5
    assert np.abs(np.subtract(reg.shift_um, sample.shift_um))[1:].max() < 1.0
    found = centres_um_in_lfm(result.labels, reg.matrix, sample.volume_shape, sample.lfm_voxel_um)
    pairs = match_points(found[result.activity.label_ids - 1], sample.true_centers_um, 4.0)
    assert len(pairs) >= 0.9 * sample.n_neurons
    assert trace_scores(result.activity.traces, sample.true_fluorescence, pairs)["median_pearson"] > 0.9
    out = tmp_path / "out"
    for name in ("traces.csv", "traces_dff.csv", "traces.zarr", "activity.zarr", "labels_2p.tif", "labels_lfm.tif",
                 "registration.json"):
        assert (out / name).exists(), name
    table = np.loadtxt(out / "traces.csv", delimiter=",", skiprows=1)
    assert table.shape == (60, 2 + len(result.activity.label_ids))
    np.testing.assert_allclose(table[:, 2:].T, result.activity.traces, rtol=1e-4)
    assert json.loads((out / "registration.json").read_text())["matrix"][3] == [0, 0, 0, 1]
    import zarr

    group = zarr.open_group(str(out / "traces.zarr"), mode="r")
    np.testing.assert_allclose(group["dff"][...], result.activity.dff)
    # Running again into the same folder refuses; with overwrite it replaces.
    with pytest.raises(OutputExistsError):
        fuse(sample.two_photon, series, psf_path, two_photon_voxel_um=sample.two_photon_voxel_um, out=out,
             volumes=False)
    again = run_steps(fuse_steps(sample.two_photon, series, psf_path, two_photon_voxel_um=sample.two_photon_voxel_um,
                                 labels=result.labels, registration=reg, out=out, overwrite=True, volumes=False))
    np.testing.assert_allclose(again.activity.traces, result.activity.traces, rtol=1e-4, atol=1e-3)
