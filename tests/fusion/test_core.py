"""Pure-core tests of the fusion capability (no Qt)."""

import numpy as np
import pytest

from napari_mbdl.engine import InputError
from napari_mbdl.fusion.metrics import detection_scores, match_points, pearson_rows, trace_scores
from napari_mbdl.fusion.operators import as_numpy_operator
from napari_mbdl.fusion.register import (
    Registration,
    footprints_to_labels,
    map_labels_to_lfm,
    register_stack,
    resample_to_lfm,
)
from napari_mbdl.fusion.sample import centres_um_in_lfm
from napari_mbdl.fusion.segment import label_centres, segment_neurons
from napari_mbdl.fusion.simulate import simulate_structure


def test_test_operator_is_adjoint(small_pair):
    sample, operator = small_pair
    rng = np.random.default_rng(0)
    x = rng.random(sample.volume_shape).astype(np.float32)
    y = rng.random(sample.volume_shape[1:]).astype(np.float32)
    assert np.isclose(np.vdot(operator.forward(x), y), np.vdot(x, operator.adjoint(y)), rtol=1e-4)


def test_simulation_truth_is_consistent(small_pair):
    sample, _ = small_pair
    assert sample.light_fields.shape == (60, 32, 32)
    assert sample.true_labels.max() == sample.n_neurons == 8
    # True 2P label centroids, mapped with the true transform, land on the true centres.
    mapped = centres_um_in_lfm(sample.true_labels, sample.true_transform, sample.volume_shape, sample.lfm_voxel_um)
    assert np.abs(mapped - sample.true_centers_um).max() < 1.0
    assert np.all(sample.true_spikes.sum(1) >= 2)
    assert np.corrcoef(sample.true_calcium[0], sample.true_fluorescence[0])[0, 1] > 0.999


def test_segmentation_finds_every_cell(small_pair):
    sample, _ = small_pair
    labels = segment_neurons(sample.two_photon, sample.two_photon_voxel_um, (5.0, 3.2, 3.2))
    assert labels.dtype == np.int32 and labels.shape == sample.two_photon.shape
    found = centres_um_in_lfm(labels, sample.true_transform, sample.volume_shape, sample.lfm_voxel_um)
    assert detection_scores(found, sample.true_centers_um, 3.0)["f1"] == 1.0


@pytest.mark.parametrize(
    "stack, message",
    [
        (np.zeros((4, 5)), "3D"),
        (np.ones((6, 20, 20)), "constant"),
        (np.full((6, 20, 20), np.nan), "NaN"),
    ],
)
def test_segmentation_refuses_bad_stacks(stack, message):
    with pytest.raises(InputError, match=message):
        segment_neurons(stack)


def test_segmentation_of_noise_free_background_finds_no_cells():
    stack = np.zeros((8, 40, 40), np.float32)
    stack[:, :, 20:] = 1.0  # an edge, no blob
    with pytest.raises(InputError, match="no cells"):
        segment_neurons(stack, cell_radius_um=(2, 2, 2))


def _truth_volume(sample):
    """An LFM-space volume of the cells (the mean activity), as a reconstruction would see it."""
    from scipy import ndimage

    volume = np.tensordot(sample.true_fluorescence.mean(1), sample.true_footprints, axes=1)
    return ndimage.gaussian_filter(volume, (0.7, 0.7, 0.7))


def test_registration_recovers_rotation_and_shift(small_pair):
    sample, _ = small_pair
    reg = register_stack(sample.two_photon, sample.two_photon_voxel_um, _truth_volume(sample), sample.lfm_voxel_um)
    assert abs(reg.rotation_deg - sample.rotation_deg) < 1.0
    assert np.abs(np.subtract(reg.shift_um, sample.shift_um))[1:].max() < 1.0
    assert abs(reg.shift_um[0] - sample.shift_um[0]) < 3.0  # half an LFM plane
    assert reg.correlation > 0.7 and reg.overlap > 0.8
    assert "rotation" in reg.describe() and len(reg.to_dict()["matrix"]) == 4


def test_registration_without_overlap_is_refused(small_pair):
    sample, _ = small_pair
    tiny_voxels = tuple(v / 10 for v in sample.two_photon_voxel_um)  # the 2P stack shrinks to a speck
    with pytest.raises(InputError, match="no overlap"):
        register_stack(sample.two_photon, tiny_voxels, _truth_volume(sample), sample.lfm_voxel_um)


def test_label_mapping_keeps_volume_and_drops_outside_cells(small_pair):
    sample, _ = small_pair
    reg = Registration.from_parameters(sample.rotation_deg, sample.shift_um, sample.two_photon.shape,
                                       sample.two_photon_voxel_um, sample.volume_shape, sample.lfm_voxel_um)
    np.testing.assert_allclose(reg.matrix, sample.true_transform)
    footprints, ids = map_labels_to_lfm(sample.true_labels, reg)
    assert list(ids) == list(range(1, 9))
    tp_volume = np.bincount(sample.true_labels.ravel())[1:] * abs(np.linalg.det(reg.matrix[:3, :3]))
    # Per cell within sampling error of these coarse grids; in total within a few percent.
    np.testing.assert_allclose(footprints.reshape(8, -1).sum(1), tp_volume, rtol=0.2)
    assert footprints.sum() == pytest.approx(tp_volume.sum(), rel=0.05)
    # Footprints overlap the true (analytic) ones well.
    overlap = (footprints * sample.true_footprints).sum((1, 2, 3)) / np.sqrt(
        (footprints**2).sum((1, 2, 3)) * (sample.true_footprints**2).sum((1, 2, 3)))
    assert overlap.min() > 0.8
    hard = footprints_to_labels(footprints, ids)
    assert set(np.unique(hard)) <= set([0, *ids])
    # A cell moved far outside the LFM volume is dropped; all outside -> refused.
    far = Registration.from_parameters(0, (0, 500, 0), sample.two_photon.shape, sample.two_photon_voxel_um,
                                       sample.volume_shape, sample.lfm_voxel_um)
    with pytest.raises(InputError, match="overlap"):
        map_labels_to_lfm(sample.true_labels, far)
    with pytest.raises(InputError, match="shape"):
        map_labels_to_lfm(sample.true_labels[1:], reg)


def test_resample_identity():
    stack = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(resample_to_lfm(stack, np.eye(4), stack.shape), stack, atol=1e-6)


def test_metrics():
    truth = np.array([[0, 0, 0], [10, 10, 10], [20, 0, 0]], float)
    found = np.array([[0.5, 0, 0], [10, 11, 10], [50, 50, 50]], float)
    scores = detection_scores(found, truth, 2.0)
    assert scores["matched"] == 2 and np.isclose(scores["f1"], 2 / 3)
    assert match_points(found, truth, 2.0) == [(0, 0), (1, 1)]
    a = np.array([[1, 2, 3, 4.0], [1, 1, 1, 1.0]])
    r = pearson_rows(a, np.array([[2, 4, 6, 8.0], [1, 2, 3, 4.0]]))
    assert np.isclose(r[0], 1.0) and np.isnan(r[1])
    s = trace_scores(a, a, [(0, 0)])
    assert s["per_cell"][0] == pytest.approx(1.0) and s["per_cell"][1] == 0.0


def test_numpy_operator_wrapper(small_pair):
    sample, operator = small_pair
    op = as_numpy_operator(operator)
    assert op.volume_shape == sample.volume_shape and op.light_field_shape == (32, 32)
    batch = np.random.default_rng(1).random((3, *sample.volume_shape)).astype(np.float32)
    np.testing.assert_allclose(op.forward(batch)[1], operator.forward(batch[1]), rtol=1e-5)
    with pytest.raises(InputError):
        as_numpy_operator(object())


def test_simulation_refuses_too_many_cells():
    with pytest.raises(InputError, match="fit"):
        simulate_structure(volume_shape=(2, 10, 10), lfm_voxel_um=(4, 2, 2), n_neurons=200, n_frames=5)


def test_label_centres():
    labels = np.zeros((3, 5, 5), np.int32)
    labels[1, 2, 2] = 1
    labels[0, 0, 0:2] = 2
    np.testing.assert_allclose(label_centres(labels), [[1, 2, 2], [0, 0, 0.5]])


def test_segmentation_of_pure_noise_finds_no_cells():
    stack = np.random.default_rng(0).normal(1.0, 0.05, (10, 48, 48)).astype(np.float32)
    with pytest.raises(InputError, match="no cells"):
        segment_neurons(stack, cell_radius_um=(3, 3, 3))
