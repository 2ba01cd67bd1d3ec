"""Second route: unfolded ISTA trained with 2P-derived volumes (a few steps only: wiring, not quality)."""

import numpy as np
import pytest

from napari_mbdl.engine import CancelToken, InputError, RunCancelled, run_steps
from napari_mbdl.fusion.unfolded_route import train_on_two_photon_steps, two_photon_volumes, unfolded_traces_steps


def test_two_photon_volumes_are_footprint_combinations():
    footprints = np.zeros((2, 3, 8, 8), np.float32)
    footprints[0, 1, 2:4, 2:4] = 1
    footprints[1, 2, 5:7, 5:7] = 1
    volumes = two_photon_volumes(footprints, 5, np.random.default_rng(0), background=0.1)
    assert volumes.shape == (5, 3, 8, 8) and volumes.min() >= 0.1 - 1e-6
    assert np.allclose(volumes[:, 0], 0.1)  # no cell in plane 0: background only
    assert np.all(volumes[:, 1, 2, 2] >= 0.6 + 0.1 - 1e-6)


def test_training_and_inference_run(lfm_pair):
    from napari_mbdl.fusion.register import Registration, map_labels_to_lfm

    sample, psf = lfm_pair
    reg = Registration.from_parameters(sample.rotation_deg, sample.shift_um, sample.two_photon.shape,
                                       sample.two_photon_voxel_um, sample.volume_shape, sample.lfm_voxel_um)
    footprints, _ = map_labels_to_lfm(sample.true_labels, reg)
    model, log = run_steps(train_on_two_photon_steps(sample.light_fields, psf, footprints, steps=3, n_layers=3,
                                                     n_gt=4))
    assert len(log) == 3 and all(np.isfinite(e["loss"]) for e in log)
    traces, seconds = run_steps(unfolded_traces_steps(sample.light_fields[:8], psf, model, footprints, device="cpu"))
    assert traces.shape == (len(footprints), 8) and np.all(np.isfinite(traces)) and traces.min() >= 0
    with pytest.raises(InputError, match="zero neurons"):
        run_steps(train_on_two_photon_steps(sample.light_fields, psf, footprints[:0]))
    token = CancelToken()
    token.cancel()
    with pytest.raises(RunCancelled):
        run_steps(train_on_two_photon_steps(sample.light_fields, psf, footprints, steps=2, cancel=token))
