"""2P / LFM fusion figures (issue 5), all measured in one run on simulated pairs with known truth.

For each scenario (simulated 2P stack + LFM series through the wave-optics model, Poisson-Gaussian
noise; see ``napari_mbdl.fusion.sample.make_sample``):

1. Neuron detection F1: 2P segmentation, mapped to LFM space with the *fitted* registration, against
   the true cell centres (match within 4 um).  Baseline: the same LoG + watershed segmentation run
   on the Richardson-Lucy reconstruction of the mean light field (LFM alone, no 2P).
2. Median Pearson correlation of recovered vs true traces (unmatched true cells count as 0).
   Ours: footprint-constrained NNLS per frame (``y_t ~ H A c_t``, ``c_t >= 0``).  Baseline: every frame
   reconstructed with Richardson-Lucy (the LFM capability's solver, through the engine), then averaged
   inside the same footprints.
3. Frames per second of the activity extraction vs the per-frame RL reconstruction, same data, same run
   (both through the streaming engine, same device).  The one-off footprint light fields (``H A``) are
   timed separately.
4. The second route: the unfolded ISTA network (``napari_mbdl.lfm``) trained on this recording with
   2P-derived ground-truth volumes + light-field re-synthesis of its frames, every frame reconstructed
   and averaged inside the footprints (median Pearson, training seconds, frames/s).

The last scenario simulates the data with other optics (NA 0.45, 560 nm) than the analysis assumes
(NA 0.5, 525 nm): elsewhere the same ``H`` simulates and inverts the data.

Usage: python benchmarks/bench_fusion.py [--rl-iter 20] [--unfolded-steps 40] [--device cpu] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

SCENARIOS = {
    # name: make_sample keyword arguments (+ "true_optics": optics the data are simulated with, when they
    # differ from the assumed ones: a model-mismatch check, since otherwise the same H simulates and inverts)
    "default (20 cells, 200 photons)": dict(n_neurons=20, n_frames=200, photons=200.0, seed=0),
    "dim (20 cells, 30 photons)": dict(n_neurons=20, n_frames=200, photons=30.0, seed=1),
    "dense (32 cells, 100 photons)": dict(n_neurons=32, n_frames=200, photons=100.0, seed=2),
    "PSF mismatch (true NA 0.45, 560 nm)": dict(n_neurons=20, n_frames=200, photons=100.0, seed=3,
                                                true_optics={"na": 0.45, "wavelength_um": 0.56}),
}


def _make_rl(device: str, psf, n_iter: int):
    """Block function: the LFM capability's batched Richardson-Lucy on every frame of a tile."""
    from napari_mbdl.lfm.operator import LFMOperator
    from napari_mbdl.lfm.solvers import richardson_lucy

    H = LFMOperator(psf, device=device)

    def fn(block):
        lead = block.shape[:-2]
        volumes = richardson_lucy(H, np.asarray(block, np.float32).reshape(-1, *block.shape[-2:]), n_iter)
        return volumes.reshape(*lead, *volumes.shape[1:])

    return fn


def rl_operation(psf, n_iter: int, volume_shape):
    """Full per-frame volume reconstruction through the engine (what the baseline and the timing use)."""
    import functools

    from napari_mbdl.engine import Operation

    o = psf.optics
    return Operation(key=f"bench-rl/{o.key()}/{n_iter}", make=functools.partial(_make_rl, psf=psf, n_iter=n_iter),
                     halo=(0,), out_core_shape=tuple(int(v) for v in volume_shape), bytes_per_voxel=64.0,
                     uses_torch=True, min_tile=(1,))


def run_scenario(name: str, kwargs: dict, rl_iter: int, device: str, unfolded_steps: int) -> dict:
    from napari_mbdl.engine import run_blocks, run_steps
    from napari_mbdl.fusion.api import activity_steps, fuse_steps, resolve_operator
    from napari_mbdl.fusion.metrics import detection_scores, match_points, trace_scores
    from napari_mbdl.fusion.sample import centres_um_in_lfm, make_sample
    from napari_mbdl.fusion.segment import label_centres, segment_neurons

    kwargs = dict(kwargs)
    true_optics = kwargs.pop("true_optics", None)
    if true_optics:
        from napari_mbdl.fusion.api import SAMPLE_OPTICS
        from napari_mbdl.fusion.sample import sample_psf
        from napari_mbdl.lfm.optics import LFOptics, compute_psf

        sample, _ = make_sample(psf=compute_psf(LFOptics(**SAMPLE_OPTICS, **true_optics)), **kwargs)
        psf = sample_psf()  # what the analysis assumes
    else:
        sample, psf = make_sample(**kwargs)
    truth_um = sample.true_centers_um
    radius = 4.0

    # --- ours ---------------------------------------------------------------------------------
    t0 = time.perf_counter()
    fused = run_steps(fuse_steps(sample.two_photon, sample.light_fields, psf,
                                 two_photon_voxel_um=sample.two_photon_voxel_um, volumes=False, device=device))
    total_seconds = time.perf_counter() - t0
    reg = fused.registration
    found_um = centres_um_in_lfm(fused.labels, reg.matrix, sample.volume_shape, sample.lfm_voxel_um)
    detection = detection_scores(found_um, truth_um, radius)
    pairs = match_points(found_um[fused.activity.label_ids - 1], truth_um, radius)
    ours = trace_scores(fused.activity.traces, sample.true_fluorescence, pairs)

    # Timing of the activity step alone (footprint light fields, then the per-frame solve), re-run.
    spec = resolve_operator(psf, sample.light_fields.shape[1:])
    t0 = time.perf_counter()
    activity = run_steps(activity_steps(sample.light_fields, spec, fused.labels, reg, volumes=False, device=device))
    activity_total = time.perf_counter() - t0
    solve_seconds = activity.seconds
    design_seconds = activity_total - solve_seconds

    # --- baseline: per-frame RL reconstruction, footprint averages ---------------------------
    t0 = time.perf_counter()
    recon = run_steps(run_blocks(rl_operation(psf, rl_iter, sample.volume_shape), sample.light_fields, n_tiled=1,
                                 axes="tvu", out_core_axes="zyx", device=device))
    rl_seconds = time.perf_counter() - t0
    volumes = np.asarray(recon.array).reshape(len(sample.light_fields), -1)
    weights = activity.footprints.reshape(len(activity.footprints), -1)
    weights = weights / weights.sum(1, keepdims=True)
    baseline_traces = (volumes @ weights.T).T
    baseline = trace_scores(baseline_traces, sample.true_fluorescence, pairs)

    # Baseline detection: LFM alone (segment the RL reconstruction of the mean light field).
    try:
        lfm_labels = segment_neurons(fused.mean_volume, sample.lfm_voxel_um, (5.0, 4.0, 4.0))
        centres = label_centres(lfm_labels)
        lfm_um = (centres - (np.asarray(sample.volume_shape) - 1) / 2.0) * np.asarray(sample.lfm_voxel_um)
        baseline_detection = detection_scores(lfm_um, truth_um, radius)
    except Exception as error:  # no cell found at all is a result too
        baseline_detection = {"f1": 0.0, "found": 0, "error": str(error)}

    # Second route: unfolded ISTA trained with 2P-derived volumes, frames reconstructed and averaged.
    unfolded = {}
    if unfolded_steps:
        from napari_mbdl.fusion.unfolded_route import train_on_two_photon_steps, unfolded_traces_steps

        t0 = time.perf_counter()
        model, log = run_steps(train_on_two_photon_steps(sample.light_fields, psf, activity.footprints,
                                                         steps=unfolded_steps, device=device))
        train_seconds = time.perf_counter() - t0
        traces, infer_seconds = run_steps(unfolded_traces_steps(sample.light_fields, psf, model, activity.footprints,
                                                                device=device))
        scores = trace_scores(traces, sample.true_fluorescence, pairs)
        unfolded = {
            "unfolded2p_median_pearson": round(scores["median_pearson"], 4),
            "unfolded2p_min_pearson": round(float(scores["per_cell"].min()), 4),
            "unfolded2p_train_s": round(train_seconds, 1),
            "unfolded2p_loss_first_last": [round(log[0]["loss"], 4), round(log[-1]["loss"], 4)],
            "unfolded2p_frames_per_s": round(len(sample.light_fields) / infer_seconds, 1),
        }

    n_frames = len(sample.light_fields)
    return {
        "scenario": name,
        "frames": n_frames,
        "light_field_shape": list(sample.light_fields.shape[1:]),
        "volume_shape": list(sample.volume_shape),
        "true_cells": sample.n_neurons,
        "registration": reg.describe(),
        "registration_error": {
            "rotation_deg": round(reg.rotation_deg - sample.rotation_deg, 3),
            "shift_um": [round(a - b, 3) for a, b in zip(reg.shift_um, sample.shift_um)],
        },
        "detection_f1": round(detection["f1"], 4),
        "detected": detection["found"],
        "baseline_detection_f1_lfm_only": round(baseline_detection["f1"], 4),
        "baseline_detected": baseline_detection.get("found"),
        "median_pearson": round(ours["median_pearson"], 4),
        "baseline_median_pearson_rl": round(baseline["median_pearson"], 4),
        "min_pearson": round(float(ours["per_cell"].min()), 4),
        "baseline_min_pearson_rl": round(float(baseline["per_cell"].min()), 4),
        "activity_frames_per_s": round(n_frames / solve_seconds, 1),
        "footprint_light_fields_s": round(design_seconds, 3),
        "activity_incl_footprints_frames_per_s": round(n_frames / activity_total, 1),
        f"rl{rl_iter}_frames_per_s": round(n_frames / rl_seconds, 2),
        "speedup_activity_vs_rl": round(rl_seconds / solve_seconds, 1),
        "speedup_incl_footprints": round(rl_seconds / activity_total, 1),
        "whole_pipeline_s": round(total_seconds, 2),
        **unfolded,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rl-iter", type=int, default=20, help="Richardson-Lucy iterations of the baseline")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="first scenario only")
    parser.add_argument("--unfolded-steps", type=int, default=40,
                        help="training steps of the second route (unfolded network, 2P ground truth); 0 skips it")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    results = []
    for name, kwargs in list(SCENARIOS.items())[: 1 if args.quick else None]:
        result = run_scenario(name, kwargs, args.rl_iter, args.device, args.unfolded_steps)
        results.append(result)
        print(json.dumps(result, indent=2), flush=True)
    print("\nsummary (goal: median Pearson >= 0.9, detection F1 >= 0.9)")
    print(f"{'scenario':36s} {'F1':>6s} {'F1 LFM-only':>11s} {'Pearson':>8s} {'Pearson RL':>10s} "
          f"{'Pearson unf':>11s} {'act fps':>8s} {'RL fps':>7s} {'speedup':>8s}")
    for r in results:
        rl_fps = r[f"rl{args.rl_iter}_frames_per_s"]
        unf = r.get("unfolded2p_median_pearson", float("nan"))
        print(f"{r['scenario']:36s} {r['detection_f1']:6.3f} {r['baseline_detection_f1_lfm_only']:11.3f} "
              f"{r['median_pearson']:8.4f} {r['baseline_median_pearson_rl']:10.4f} {unf:11.4f} "
              f"{r['activity_frames_per_s']:8.1f} "
              f"{rl_fps:7.2f} {r['speedup_activity_vs_rl']:7.1f}x")
    print(f"device {args.device}, torch threads {args.threads}, RL iterations {args.rl_iter}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
