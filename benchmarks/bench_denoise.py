"""Benchmark of the invertible denoisers: PSNR on Set12, speed vs DnCNN-17, invertibility, sizes.

    python benchmarks/bench_denoise.py [--set12 DIR] [--threads 1] [--quick] [--json out.json]

All figures are measured in this one run:

* PSNR (dB, 8-bit scale: images in [0, 1] = [0, 255], output clipped) on Set12 at sigma 15/25/50
  with fixed noise seeds (image i uses seed i), for WINNet and LINN (the dedicated model when
  shipped, else the blind model told the true sigma), WINNet's 8-view self-ensemble (with its time
  over Set12 as a ratio to the single pass), the blind models with NENet's estimate, and the
  baselines run here: scikit-image wavelet BayesShrink (needs PyWavelets), scikit-image
  non-local means, and BM3D when the ``bm3d`` package is installed (never a runtime dependency).
  Published anchors, not measured here: DnCNN 32.86/30.44/27.18; WINNet reference weights
  32.84/30.48/27.32.
* Speed: CPU seconds per megapixel of each network and of a DnCNN-17 with random weights on the
  same 256x256 and 512x512 images, and of WINNet through ``napari_mbdl.denoise()``, interleaved
  repeats, median; the ratio to DnCNN-17.  WINNet with ``precision="bfloat16"`` (convolutions in
  bfloat16, torch autocast) in the same loop, and in the PSNR table its change against float32.
  With a CUDA GPU: megapixels per second with batched tiles, float32 and bfloat16 autocast, and
  the PSNR change.
* Invertibility error ||F^-1(F(x)) - x|| / ||x|| of the shipped networks, parameter counts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SET12 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "denoise" / "Set12"
ANCHORS = {"DnCNN (published)": (32.86, 30.44, 27.18), "WINNet reference weights": (32.84, 30.48, 27.32)}


def _psnr_table(images, sigmas, quick):
    import torch
    from skimage.restoration import denoise_nl_means, denoise_wavelet, estimate_sigma

    from napari_mbdl.denoise import api
    from napari_mbdl.denoise.nets import self_ensemble
    from napari_mbdl.denoise.train import noisy_set, psnr
    from napari_mbdl.denoise.weights import load_weights

    methods: dict[str, dict[int, float]] = {}

    def record(name, sigma, value):
        methods.setdefault(name, {})[sigma] = value

    nets = {}
    for family in ("winnet", "linn"):
        nets[f"{family}_blind"] = load_weights(api.resolve_weights(family, None))[0]
        for s in sigmas:
            path = api.resolve_weights(family, float(s))
            nets[f"{family}_{s}"] = (load_weights(path)[0], path.stem)
    try:
        import pywt  # noqa: F401

        have_pywt = True
    except ImportError:
        have_pywt = False
    try:
        import bm3d
    except ImportError:
        bm3d = None

    for s in sigmas:
        noisy = noisy_set(images, s, seed=0)
        record("noisy input", s, float(np.mean([psnr(c, n) for c, n in zip(images, noisy)])))
        for family in ("winnet", "linn"):
            net, stem = nets[f"{family}_{s}"]
            blind = nets[f"{family}_blind"]
            scores, scores_auto, estimates, scores_ensemble, scores_bf16 = [], [], [], [], []
            seconds_single = seconds_ensemble = 0.0
            with torch.inference_mode():
                for c, n in zip(images, noisy):
                    x = torch.from_numpy(n)[None, None]
                    start = time.perf_counter()
                    scores.append(psnr(c, net(x, float(s))[0, 0].numpy()))
                    seconds_single += time.perf_counter() - start
                    with api.network_precision("cpu", "bfloat16"):
                        scores_bf16.append(psnr(c, net(x, float(s))[0, 0].float().numpy()))
                    if not quick:
                        est = api.estimate_sigma_unit([n.astype(np.float64)])
                        estimates.append(est)
                        scores_auto.append(psnr(c, blind(x, est)[0, 0].numpy()))
                    if family == "winnet" and not quick:
                        start = time.perf_counter()
                        scores_ensemble.append(psnr(c, self_ensemble(net, x, float(s))[0, 0].numpy()))
                        seconds_ensemble += time.perf_counter() - start
            label = "WINNet" if family == "winnet" else "LINN"
            if scores_ensemble:
                record(f"{label} self-ensemble (8 views)", s, float(np.mean(scores_ensemble)))
                record(f"{label} self-ensemble time / single pass", s, seconds_ensemble / seconds_single)
            kind = "dedicated" if "blind" not in stem else "blind, true sigma"
            record(f"{label} (shipped model for sigma)", s, float(np.mean(scores)))
            record(f"{label} bfloat16 autocast", s, float(np.mean(scores_bf16)))
            record(f"{label} bfloat16 - float32 (dB)", s, float(np.mean(scores_bf16) - np.mean(scores)))
            record(f"{label} [{s}: {stem}, {kind}]", s, float(np.mean(scores)))
            if not quick:
                record(f"{label} blind + NENet sigma", s, float(np.mean(scores_auto)))
                record("NENet |sigma error| (mean)", s, float(np.mean(np.abs(np.array(estimates) - s))))
        if have_pywt:
            record("skimage wavelet BayesShrink", s, float(np.mean([
                psnr(c, denoise_wavelet(n, method="BayesShrink", mode="soft", rescale_sigma=True,
                                        sigma=s / 255.0)) for c, n in zip(images, noisy)])))
        nlm = []
        for c, n in zip(images, noisy):
            nlm.append(psnr(c, denoise_nl_means(n, h=0.8 * s / 255.0, sigma=s / 255.0, patch_size=5,
                                                patch_distance=6, fast_mode=True)))
        record("skimage non-local means", s, float(np.mean(nlm)))
        if bm3d is not None and not quick:
            record("BM3D (bm3d package)", s, float(np.mean([
                psnr(c, bm3d.bm3d(n, sigma_psd=s / 255.0)) for c, n in zip(images, noisy)])))
        print(f"  sigma {s} done", file=sys.stderr, flush=True)
    del estimate_sigma
    notes = []
    if not have_pywt:
        notes.append("wavelet BayesShrink skipped: PyWavelets not installed")
    if bm3d is None:
        notes.append("BM3D skipped: the bm3d package is not installed")
    return methods, notes


API = "denoise()"
API_BF16 = "denoise(precision='bfloat16')"


def _time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def _speed(image, repeats):
    import torch

    from napari_mbdl.denoise import api
    from napari_mbdl.denoise.nets import DnCNN
    from napari_mbdl.denoise.weights import load_weights

    torch.manual_seed(0)
    dncnn = DnCNN().eval()  # as published (its plain convolutions gain nothing from channels-last)
    nets = {f: load_weights(api.resolve_weights(f, None))[0] for f in ("winnet", "linn")}
    x = torch.from_numpy(image)[None, None]
    mp = image.size / 1e6
    runs = {"DnCNN-17": lambda: dncnn(x), **{k.upper(): (lambda n=n: n(x, 25.0)) for k, n in nets.items()}}

    def winnet_bf16():
        with api.network_precision("cpu", "bfloat16"):
            return nets["winnet"](x, 25.0)

    runs["WINNET bf16"] = winnet_bf16
    # the whole public API on the same image (engine tiling, dtype handling, halo), interleaved
    # with the others so that the machine's load moves its ratio no more than theirs
    runs[API] = lambda: api.denoise(image, sigma=25)
    runs[API_BF16] = lambda: api.denoise(image, sigma=25, precision="bfloat16")
    samples = {k: [] for k in runs}
    with torch.inference_mode():
        for fn in runs.values():
            fn()  # warm-up
        for _ in range(repeats):  # interleaved, so a busy machine slows every method alike
            for name, fn in runs.items():
                samples[name] += _time(fn, 1)
    per_mp = {k: statistics.median(v) / mp for k, v in samples.items()}
    return per_mp, {k: per_mp.pop(k) for k in (API, API_BF16)}


def _gpu(images, sigma=25):
    import torch

    from napari_mbdl.denoise import api
    from napari_mbdl.denoise.nets import DnCNN
    from napari_mbdl.denoise.train import noisy_set, psnr
    from napari_mbdl.denoise.weights import load_weights

    if not torch.cuda.is_available():
        return None
    dev = "cuda"
    net = load_weights(api.resolve_weights("winnet", float(sigma)))[0].to(dev)
    dncnn = DnCNN().eval().to(dev)
    tiles = torch.rand(16, 1, 512, 512, device=dev)
    out = {}
    for name, fn in (("WINNet fp32", lambda: net(tiles, 25.0)), ("DnCNN-17 fp32", lambda: dncnn(tiles))):
        with torch.inference_mode():
            fn()
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(5):
                fn()
            torch.cuda.synchronize()
        out[name] = 5 * tiles.numel() / 1e6 / (time.perf_counter() - t)
    with torch.inference_mode(), api.network_precision("cuda", "bfloat16"):
        net(tiles, 25.0)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(5):
            net(tiles, 25.0)
        torch.cuda.synchronize()
    out["WINNet bf16 autocast"] = 5 * tiles.numel() / 1e6 / (time.perf_counter() - t)
    noisy = noisy_set(images, sigma, 0)
    p32, p16 = [], []
    with torch.inference_mode():
        for c, n in zip(images, noisy):
            x = torch.from_numpy(n)[None, None].to(dev)
            p32.append(psnr(c, net(x, 25.0).float().cpu().numpy()[0, 0]))
            with api.network_precision("cuda", "bfloat16"):
                p16.append(psnr(c, net(x, 25.0).float().cpu().numpy()[0, 0]))
    out["bf16 PSNR change (dB)"] = float(np.mean(p16) - np.mean(p32))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set12", default=str(SET12.resolve()))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer methods (no NENet, no BM3D)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    import torch

    from napari_mbdl.denoise import api
    from napari_mbdl.denoise.nets import PRESETS, DnCNN, InvertibleDenoiser, count_parameters
    from napari_mbdl.denoise.train import load_image_folder
    from napari_mbdl.denoise.weights import available_weights, load_weights

    torch.set_num_threads(args.threads)
    images = load_image_folder(args.set12)
    sigmas = (15, 25, 50)
    print(f"napari-mbdl denoise benchmark: {len(images)} Set12 images, torch {torch.__version__}, "
          f"{args.threads} CPU thread(s); shipped weights: {', '.join(available_weights())}")

    methods, notes = _psnr_table(images, sigmas, args.quick)
    print("\nPSNR (dB) on Set12, fixed noise seeds")
    print(f"{'method':44s}" + "".join(f"{'sigma ' + str(s):>11s}" for s in sigmas))
    for name, row in methods.items():
        if "[" in name:
            continue  # per-sigma file names, listed below the table
        print(f"{name:44s}" + "".join(f"{row[s]:11.2f}" if s in row else f"{'-':>11s}" for s in sigmas))
    for name, row in ANCHORS.items():
        print(f"{name + ' [anchor, not run]':44s}" + "".join(f"{v:11.2f}" for v in row))
    print("  shipped model used per sigma: " + "; ".join(name.split("[", 1)[1].rstrip("]")
                                                      for name in methods if "[" in name))
    for note in notes:
        print(f"  note: {note}")

    speed = {}
    for shape in ((256, 256), (512, 512)):
        speed_image = images[[i for i, im in enumerate(images) if im.shape == shape][0]]
        per_mp, api_per_mp = _speed(speed_image, args.repeats)
        speed[f"{shape[0]}x{shape[1]}"] = {"networks": per_mp, "api": api_per_mp}
        print(f"\nCPU speed, {shape[0]}x{shape[1]} Set12 image, {args.threads} thread(s), median of "
              f"{args.repeats} interleaved runs")
        for name, value in per_mp.items():
            print(f"  {name:12s} {value:8.2f} s/MP   ratio to DnCNN-17: {value / per_mp['DnCNN-17']:.2f}")
        print(f"  WINNet through napari_mbdl.{API} (engine, halo tiling): {api_per_mp[API]:.2f} s/MP "
              f"(ratio {api_per_mp[API] / per_mp['DnCNN-17']:.2f})")
        print(f"  WINNet through napari_mbdl.{API_BF16}: {api_per_mp[API_BF16]:.2f} s/MP "
              f"(ratio {api_per_mp[API_BF16] / per_mp['DnCNN-17']:.2f}; time / float32 "
              f"{api_per_mp[API_BF16] / api_per_mp[API]:.2f}; bare network bf16 / float32 "
              f"{per_mp['WINNET bf16'] / per_mp['WINNET']:.2f})")

    print("\nInvertibility ||F^-1(F(x)) - x|| / ||x|| (float32, a Set12 image) and parameters")
    x = torch.from_numpy(images[0])[None, None]
    inv = {}
    for family in ("winnet", "linn"):
        for s in (None, *sigmas):
            path = api.resolve_weights(family, s)
            if path.stem in inv:
                continue
            net = load_weights(path)[0]
            with torch.inference_mode():
                back = net.inverse_transform(net.transform(x, float(s or 25)), float(s or 25))
            inv[path.stem] = (float((back - x).norm() / x.norm()), count_parameters(net))
    for stem, (err, n) in inv.items():
        print(f"  {stem:14s} error {err:.2e}   parameters {n:,}")
    two = InvertibleDenoiser(**{**PRESETS["winnet"], "levels": 2})
    print(f"  (2-scale WINNet architecture, untrained: {count_parameters(two):,} parameters; "
          f"DnCNN-17: {count_parameters(DnCNN()):,})")

    gpu = _gpu(images)
    if gpu:
        print("\nGPU (batched 16 x 512x512 tiles)")
        for k, v in gpu.items():
            print(f"  {k:24s} {v:10.3f}" + ("" if "PSNR" in k else " MP/s"))
    else:
        print("\nGPU: none here (CUDA not available); GPU figures not measured")

    if args.json:
        Path(args.json).write_text(json.dumps({
            "psnr": methods, "anchors": ANCHORS, "cpu_s_per_mp": speed,
            "invertibility": inv, "gpu": gpu, "threads": args.threads, "notes": notes,
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
