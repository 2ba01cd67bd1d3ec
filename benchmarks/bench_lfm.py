"""Light-field benchmark: quality and speed of the unfolded network vs Richardson-Lucy, and streaming throughput.

Prints (and writes as JSON with ``--json``), all measured in one run on one device:

1. PSNR / SSIM on simulated volumes with known truth: unfolded ISTA (8 layers) vs RL at 8, 30, 100 iterations
   (and ISRA at 30);
2. time per volume of the unfolded network vs RL run to the same PSNR (iterations found on the same data),
   and their ratio;
3. a time series streamed from zarr to zarr through the engine: volumes per second and peak memory (max RSS of
   a fresh process) for several series lengths, to show memory does not grow with the length.

Sizes: default optics (20x/0.5, 15 x 15 pixels per lenslet, 5 x 5 voxels per lenslet, 9 depths over +-30 um),
light fields of 15 x 15 lenslets (225 x 225 px) -> volumes 9 x 75 x 75.

    python benchmarks/bench_lfm.py [--device cpu|cuda] [--volumes 6] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def psnr(truth, estimate):
    return float(10 * np.log10(truth.max() ** 2 / np.mean((truth - estimate) ** 2)))


def ssim3d(truth, estimate):
    from skimage.metrics import structural_similarity

    return float(structural_similarity(truth, estimate, data_range=float(truth.max())))


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def quality_and_speed(device: str, n_volumes: int, lenslets: int, max_rl: int) -> dict:
    import torch

    from napari_mbdl.lfm.operator import LFMOperator
    from napari_mbdl.lfm.optics import LFOptics, compute_psf
    from napari_mbdl.lfm.simulate import simulate_sample
    from napari_mbdl.lfm.solvers import isra, richardson_lucy
    from napari_mbdl.lfm.unfolded import load_unfolded

    t0 = time.perf_counter()
    psf = compute_psf(LFOptics())  # computed here (not read from the cache) to time it
    psf_seconds = time.perf_counter() - t0
    H = LFMOperator(psf, device=device)
    model, _ = load_unfolded(optics=psf.optics)
    model = model.to(device)
    # test data: seeds far from the training (0..) and validation (90000..) seeds
    samples = [simulate_sample(psf, n_lenslets=(lenslets, lenslets), n_cells=int(10 + 3 * i), photons=200.0 + 150 * i,
                               seed=700 + i, operator=H) for i in range(n_volumes)]
    truths = [s.volume for s in samples]
    lfs = np.stack([s.light_field for s in samples])
    y = torch.as_tensor(lfs, device=device)

    def scores(volumes):
        return (float(np.mean([psnr(t, v) for t, v in zip(truths, volumes)])),
                float(np.mean([ssim3d(t, v) for t, v in zip(truths, volumes)])))

    out = {"device": device, "psf_seconds": psf_seconds, "n_volumes": n_volumes,
           "light_field_px": list(lfs.shape[1:]), "volume_voxels": list(truths[0].shape),
           "optics": "20x/0.5 water, 150 um f/20 MLA, 15x15 px/lenslet, 5x5 voxels/lenslet, 9 depths +-30 um"}
    with torch.no_grad():
        x = model.reconstruct(H, y).cpu().numpy()
    out["unfolded"] = dict(zip(("psnr", "ssim"), scores(x)))
    # RL: one run to max_rl iterations records PSNR after every iteration
    history = []

    def record(k, xk):
        if k in (8, 30, 100):
            out[f"rl{k}"] = dict(zip(("psnr", "ssim"), scores(xk.cpu().numpy())))
        history.append(float(np.mean([psnr(t, v) for t, v in zip(truths, xk.cpu().numpy())])))

    richardson_lucy(H, y, max_rl, callback=record)
    xi = isra(H, y, 30).cpu().numpy()
    out["isra30"] = dict(zip(("psnr", "ssim"), scores(xi)))
    out["zeros"] = {"psnr": float(np.mean([psnr(t, np.zeros_like(t)) for t in truths]))}
    target = out["unfolded"]["psnr"]
    reached = [k + 1 for k, p in enumerate(history) if p >= target]
    out["rl_iterations_to_match"] = reached[0] if reached else None
    out["rl_best_psnr"] = max(history)
    out["rl_best_iteration"] = int(np.argmax(history)) + 1

    # timing, one light field at a time (per-volume latency), median of repeats, after warm-up
    single = y[:1]

    def timed(fn, repeats=5):
        fn()
        _sync(device)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    with torch.no_grad():
        t_unfolded = timed(lambda: model(H, single))
    t_rl_iter = timed(lambda: richardson_lucy(H, single, 10)) / 10
    n_match = out["rl_iterations_to_match"]
    out["seconds_per_volume"] = {
        "unfolded": t_unfolded, "rl_per_iteration": t_rl_iter, "rl30": 30 * t_rl_iter,
        "rl_to_match": None if n_match is None else n_match * t_rl_iter,
    }
    if n_match is not None:
        out["speedup_vs_rl_equal_quality"] = n_match * t_rl_iter / t_unfolded
    else:
        out["speedup_vs_rl_equal_quality_lower_bound"] = max_rl * t_rl_iter / t_unfolded
    out["speedup_vs_rl30"] = 30 * t_rl_iter / t_unfolded
    # batched throughput of the network (the engine batches frames)
    with torch.no_grad():
        batch = y[: min(4, len(y))]
        out["unfolded_volumes_per_s_batched"] = len(batch) / timed(lambda: model(H, batch), repeats=3)
    return out


def stream_child(n_frames: int, device: str, workdir: str) -> dict:
    """Run in a fresh process: write a T-frame series to zarr, reconstruct it zarr -> zarr, report speed and RSS."""
    from napari_mbdl.engine import run_steps
    from napari_mbdl.io.writing import write_array
    from napari_mbdl.lfm.api import lfm_reconstruct_steps
    from napari_mbdl.lfm.optics import LFOptics, default_cache_dir, load_or_compute_psf
    from napari_mbdl.lfm.simulate import simulate_sample

    psf = load_or_compute_psf(LFOptics(), default_cache_dir())
    base = simulate_sample(psf, n_lenslets=(15, 15), n_cells=15, n_frames=8, seed=5)
    reps = int(np.ceil(n_frames / 8))
    series = np.concatenate([base.light_field] * reps)[:n_frames]
    lf_path = Path(workdir) / f"lf_{n_frames}.zarr"
    write_array(series, lf_path, axes="tyx", overwrite=True)
    del series, base
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = run_steps(lfm_reconstruct_steps(str(lf_path), psf, method="unfolded",
                                             out=Path(workdir) / f"vol_{n_frames}.zarr", overwrite=True,
                                             device=device, frames_per_chunk=4))
    seconds = time.perf_counter() - start
    return {"frames": n_frames, "seconds": seconds, "volumes_per_s": n_frames / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_run_mb": rss_before / 1024, "output_shape": list(result.array.shape)}


def streaming(device: str, lengths: list[int]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-lfm-") as workdir:
        for n in lengths:
            proc = subprocess.run([sys.executable, __file__, "--child", str(n), "--device", device,
                                   "--workdir", workdir], capture_output=True, text=True, env=os.environ.copy())
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-2000:])
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--volumes", type=int, default=6)
    parser.add_argument("--lenslets", type=int, default=15)
    parser.add_argument("--max-rl", type=int, default=300)
    parser.add_argument("--series", default="16,64,256", help="time-series lengths for the streaming test")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.child is not None:
        print(json.dumps(stream_child(args.child, args.device, args.workdir)))
        return
    report = quality_and_speed(args.device, args.volumes, args.lenslets, args.max_rl)
    report["streaming"] = streaming(args.device, [int(v) for v in args.series.split(",")])
    report["threads"] = args.threads
    q = report
    print(f"LFM benchmark on {q['device']} ({args.threads} thread(s)); light field {q['light_field_px']} px -> "
          f"volume {q['volume_voxels']} voxels; {q['n_volumes']} simulated volumes; PSF computed in "
          f"{q['psf_seconds']:.1f} s")
    print(f"  {'method':24s} {'PSNR dB':>8s} {'SSIM':>7s}")
    for name, label in (("unfolded", "unfolded ISTA (8 layers)"), ("rl8", "Richardson-Lucy x8"),
                        ("rl30", "Richardson-Lucy x30"), ("rl100", "Richardson-Lucy x100"), ("isra30", "ISRA x30")):
        print(f"  {label:24s} {q[name]['psnr']:8.2f} {q[name]['ssim']:7.4f}")
    print(f"  (all-zero volume: {q['zeros']['psnr']:.2f} dB; RL best {q['rl_best_psnr']:.2f} dB at iteration "
          f"{q['rl_best_iteration']} of {args.max_rl})")
    s = q["seconds_per_volume"]
    print(f"  time per volume: unfolded {s['unfolded'] * 1e3:.1f} ms; RL {s['rl_per_iteration'] * 1e3:.1f} ms/iteration, "
          f"x30 {s['rl30'] * 1e3:.0f} ms")
    if q.get("rl_iterations_to_match"):
        print(f"  RL needs {q['rl_iterations_to_match']} iterations to match the network's PSNR: "
              f"{s['rl_to_match'] * 1e3:.0f} ms -> unfolded is {q['speedup_vs_rl_equal_quality']:.1f}x faster "
              f"at equal quality")
    else:
        print(f"  RL does not reach the network's PSNR within {args.max_rl} iterations: unfolded is more than "
              f"{q['speedup_vs_rl_equal_quality_lower_bound']:.1f}x faster at equal quality")
    print(f"  unfolded vs RL x30: {q['speedup_vs_rl30']:.1f}x faster; batched network throughput "
          f"{q['unfolded_volumes_per_s_batched']:.1f} volumes/s")
    for row in q["streaming"]:
        print(f"  stream zarr->zarr, {row['frames']:4d} frames: {row['volumes_per_s']:.2f} volumes/s, "
              f"peak RSS {row['peak_rss_mb']:.0f} MB (before the run {row['rss_before_run_mb']:.0f} MB)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
