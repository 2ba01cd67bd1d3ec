"""``mbdl demo`` entry of the fusion capability: the simulated pair, fused, scored against its truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from napari_mbdl.engine.progress import Progress


def run_demo(out_dir: Path, device: str = "auto"):
    """Simulate the paired sample, fuse it, write results into ``out_dir``; return napari layer data."""
    import tifffile

    from napari_mbdl.fusion.api import fuse_steps
    from napari_mbdl.fusion.metrics import detection_scores, match_points, trace_scores
    from napari_mbdl.fusion.sample import centres_um_in_lfm, make_sample

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    yield Progress("fusion sample", 0, 1, "simulating the 2P stack and the light-field series")
    sample, psf = make_sample(n_frames=150)
    yield Progress("fusion sample", 1, 1)
    tifffile.imwrite(out_dir / "two_photon.tif", sample.two_photon, metadata={"axes": "ZYX"})
    result = yield from fuse_steps(
        sample.two_photon, sample.light_fields, psf, two_photon_voxel_um=sample.two_photon_voxel_um,
        out=out_dir / "fusion", overwrite=True, frame_rate_hz=sample.frame_rate_hz, device=device,
    )
    found = centres_um_in_lfm(result.labels, sample.true_transform, sample.volume_shape, sample.lfm_voxel_um)
    detection = detection_scores(found, sample.true_centers_um, max_distance=4.0)
    pairs = match_points(found[result.activity.label_ids - 1], sample.true_centers_um, 4.0)
    traces = trace_scores(result.activity.traces, sample.true_fluorescence, pairs)
    scores = {"detection_f1": detection["f1"], "median_pearson": traces["median_pearson"],
              "registration": result.registration.describe()}
    (out_dir / "scores.json").write_text(json.dumps(scores, indent=2))
    lfm_scale = sample.lfm_voxel_um
    return [
        (sample.two_photon, {"name": "2P stack", "scale": sample.two_photon_voxel_um}, "image"),
        (result.labels, {"name": "2P labels", "scale": sample.two_photon_voxel_um}, "labels"),
        (result.mean_volume, {"name": "mean LFM volume", "scale": lfm_scale, "colormap": "green"}, "image"),
        (result.activity.lfm_labels, {"name": "LFM labels", "scale": lfm_scale, "opacity": 0.4}, "labels"),
        (np.asarray(result.activity.volumes), {"name": "activity (t, z, y, x)", "scale": (1.0, *lfm_scale),
                                                "colormap": "inferno"}, "image"),
    ]
