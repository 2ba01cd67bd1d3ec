"""Benchmark of the MA-XRF capability (issue 6): accuracy of both methods and a peer, speed and memory.

Run from the repository root::

    python benchmarks/bench_xrf.py                 # everything (generates a 2 GB cube into .bench/ once)
    python benchmarks/bench_xrf.py --skip-speed    # accuracy only (about a minute)

Accuracy
    Simulated paintings (``napari_mbdl.xrf.simulate``) with known maps of Ca, Mn, Fe, Co, Cu, Zn, Sn,
    Hg and Pb: element detection precision / recall of the automatic (FRI) detection, and the
    Pearson correlation of each quantity map with the truth for the ``fri`` method, the ``linear``
    method and PyMca5's FastXRFLinearFit (the peer, given the true element list; skipped if PyMca5 is
    not installed).  "ceiling" is the Pearson correlation a perfect method would reach: the truth
    against its own Poisson draw of the main line family's counts.
Speed and memory
    A 512 x 512 x 4096 uint16 cube (2 GiB) streamed from zarr, each run in a fresh process: spectra
    per second of the whole pipeline (sum-spectrum pass + detection + map pass) and of the map pass
    alone, as a ratio to a plain matrix-multiply pseudo-inverse fit of the same cube (same design
    matrix, same zarr chunks), and each process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _pearson(a, b):
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _main_fraction(element, energies, tube_kv=50.0):
    """Fraction of an element's simulated counts in its strongest family (what the quantity estimates)."""
    from napari_mbdl.xrf.lines import families_in_range
    from napari_mbdl.xrf.simulate import path_transmission

    weights = [f.weight * path_transmission(f.main_energy) for f in families_in_range(element, energies[0], energies[-1], tube_kv)]
    return max(weights) / sum(weights)


def _pymca_maps(cube, calibration, elements, tube_kv=50.0):
    """PyMca5 FastXRFLinearFit on the cube with the given elements; element -> map of its strongest family."""
    import copy

    from PyMca5.PyMcaPhysics.xrf import ClassMcaTheory, FastXRFLinearFit

    from napari_mbdl.xrf.lines import families_in_range

    n_channels = cube.shape[-1]
    energies = calibration.energies(n_channels)
    config = copy.deepcopy(ClassMcaTheory.McaTheory().config)
    config["detector"].update(zero=calibration.offset, gain=calibration.gain, noise=0.1, fano=0.114)
    # PyMca needs a matrix for polychromatic excitation; one effective energy above the Sn K edge instead
    config["fit"].update(energy=[35.0], energyweight=[1.0], energyflag=[1], energyscatter=[0], stripflag=1,
                         stripalgorithm=1, snipwidth=20, xmin=int(1.0 / calibration.gain), xmax=n_channels - 1,
                         escapeflag=0, sumflag=0, hypermetflag=1, scatterflag=0)
    config["peaks"] = {e: [f.family for f in families_in_range(e, 1.0, energies[-1], tube_kv)] for e in elements}
    fit = FastXRFLinearFit.FastXRFLinearFit()
    fit.setFitConfiguration(config)
    started = time.perf_counter()
    out = fit.fitMultipleSpectra(y=np.asarray(cube, dtype=np.float64), weight=0, refit=1, concentrations=0)
    seconds = time.perf_counter() - started
    names, parameters = list(out.labels("parameters")), np.asarray(out["parameters"])
    maps = {}
    for element in elements:
        rows = [i for i, n in enumerate(names) if n.split()[0] == element]
        if rows:
            best = max(rows, key=lambda i: parameters[i].sum())
            maps[element] = parameters[best]
    return maps, seconds


def accuracy(size: int, n_channels: int, seed: int, with_pymca: bool):
    from napari_mbdl.engine import run_steps
    from napari_mbdl.xrf.api import xrf_maps_steps
    from napari_mbdl.xrf.simulate import ELEMENTS, simulate_painting
    from napari_mbdl.xrf.spectral import EnergyCalibration

    try:
        import PyMca5  # noqa: F401

        have_pymca = with_pymca
    except ImportError:
        have_pymca = False
    scenarios = [
        ("nominal counts", 1.0, None),
        ("low counts (x0.25)", 0.25, None),
        ("calibration off by +40 eV and +0.4% gain", 1.0, (0.040, 1.004)),
    ]
    truth = set(ELEMENTS)
    summary = {}
    for title, scale, error in scenarios:
        scan = simulate_painting((size, size), n_channels, count_scale=scale, seed=seed)
        given = scan.calibration if error is None else EnergyCalibration(scan.calibration.offset + error[0],
                                                                          scan.calibration.gain * error[1])
        rng = np.random.default_rng(seed + 99)
        energies = scan.energy
        print(f"\n== accuracy: {title}; cube {size}x{size}x{n_channels}, "
              f"{scan.cube.sum(-1).mean():.0f} counts/pixel on average ==")
        rows = {}
        for method in ("fri", "linear"):
            started = time.perf_counter()
            result = run_steps(xrf_maps_steps(scan.cube, given, "auto", method=method, tube_kv=50.0))
            seconds = time.perf_counter() - started
            found = set(result.elements)
            precision = len(found & truth) / max(len(found), 1)
            recall = len(found & truth) / len(truth)
            rows[method] = {e: _pearson(result.maps[e][0], scan.true_maps[e]) if e in found else float("nan")
                            for e in ELEMENTS}
            print(f"{method:>6}: detected {sorted(found)}; precision {precision:.3f}, recall {recall:.3f}; "
                  f"phantoms {sorted(found - truth) or 'none'}; missed {sorted(truth - found) or 'none'}; "
                  f"{seconds:.1f} s")
            summary[(title, method, "precision")] = precision
            summary[(title, method, "recall")] = recall
        if have_pymca:
            maps, seconds = _pymca_maps(scan.cube, given, ELEMENTS)
            rows["PyMca5"] = {e: _pearson(maps[e], scan.true_maps[e]) if e in maps else float("nan") for e in ELEMENTS}
            print(f"PyMca5: FastXRFLinearFit given the true elements, {seconds:.1f} s")
        rows["ceiling"] = {e: _pearson(rng.poisson(scan.true_maps[e] * _main_fraction(e, energies)), scan.true_maps[e])
                           for e in ELEMENTS}
        header = "Pearson vs truth  " + " ".join(f"{e:>6}" for e in ELEMENTS) + "    min  mean"
        print(header)
        for name, values in rows.items():
            numbers = np.array([values[e] for e in ELEMENTS])
            print(f"{name:>16}  " + " ".join(f"{v:6.3f}" for v in numbers)
                  + f"  {np.nanmin(numbers):5.3f} {np.nanmean(numbers):5.3f}")
            summary[(title, name, "pearson_min")] = float(np.nanmin(numbers))
    return summary


# -- speed and memory -------------------------------------------------------------------------------
def _worker(kind: str, cube_path: str, design_path: str | None):
    """One measurement in this (fresh) process; prints a JSON line."""
    started = time.perf_counter()
    info = {"kind": kind}
    if kind == "baseline":
        import zarr

        group = zarr.open(cube_path, mode="r")
        data = group["0"]
        pinv = np.linalg.pinv(np.load(design_path)).T.astype(np.float32)        # (channels, columns)
        ny, nx, _ = data.shape
        cy, cx = data.chunks[:2]
        out = np.empty((ny, nx, pinv.shape[1]), np.float32)
        for y in range(0, ny, cy):
            for x in range(0, nx, cx):
                block = np.asarray(data[y:y + cy, x:x + cx]).astype(np.float32)
                coefficients = block.reshape(-1, block.shape[-1]) @ pinv
                out[y:y + cy, x:x + cx] = coefficients.reshape(block.shape[0], block.shape[1], -1)
        info["map_seconds"] = time.perf_counter() - started
    else:
        from napari_mbdl.engine import run_steps
        from napari_mbdl.xrf.api import xrf_maps_steps

        result = run_steps(xrf_maps_steps(cube_path, method=kind, tube_kv=50.0))
        info["map_seconds"] = result.run.seconds
        info["elements"] = result.elements
        if design_path:
            from napari_mbdl.xrf.maps import build_model
            from napari_mbdl.xrf.spectral import DetectorResponse, continuum

            detector = DetectorResponse()
            refined = result.calibration
            n = result.sum_spectrum.size
            background = continuum(result.sum_spectrum, detector.sigma(refined.energies(n)) / refined.gain)
            model = build_model(result.identification, n, detector, result.sum_spectrum, background, method=kind)
            np.save(design_path, model.design)
    info["total_seconds"] = time.perf_counter() - started
    info["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps(info))


def _run_worker(kind, cube_path, design_path=None):
    command = [sys.executable, __file__, "--worker", kind, "--cube", str(cube_path)]
    if design_path:
        command += ["--design", str(design_path)]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def speed(size: int, n_channels: int, data_dir: Path, seed: int):
    from napari_mbdl.xrf.simulate import write_painting_zarr

    data_dir.mkdir(parents=True, exist_ok=True)
    cube_path = data_dir / f"xrf_painting_{size}x{size}x{n_channels}.zarr"
    if not cube_path.exists():
        started = time.perf_counter()
        write_painting_zarr(cube_path, (size, size), n_channels, seed=seed, chunk=64)
        print(f"generated {cube_path} in {time.perf_counter() - started:.0f} s")
    n_spectra = size * size
    gib = n_spectra * n_channels * 2 / 2**30
    print(f"\n== speed and memory: {size}x{size}x{n_channels} uint16 ({gib:.2f} GiB) streamed from zarr, "
          f"{n_spectra} spectra; one fresh process per run ==")
    design_path = data_dir / "linear_design.npy"
    linear = _run_worker("linear", cube_path, design_path)
    baseline = _run_worker("baseline", cube_path, design_path)
    fri = _run_worker("fri", cube_path)
    base_rate = n_spectra / baseline["map_seconds"]
    print(f"{'run':>34} {'map pass s':>10} {'total s':>8} {'spectra/s (total)':>18} {'ratio to baseline':>18} {'peak RSS MB':>11}")
    print(f"{'baseline: matmul pseudo-inverse':>34} {baseline['map_seconds']:10.1f} {baseline['total_seconds']:8.1f} "
          f"{base_rate:18.0f} {1.0:18.2f} {baseline['peak_rss_mb']:11.0f}")
    for name, run in (("linear (sum + detect + maps)", linear), ("fri (sum + detect + maps)", fri)):
        rate = n_spectra / run["total_seconds"]
        map_rate = n_spectra / run["map_seconds"]
        print(f"{name:>34} {run['map_seconds']:10.1f} {run['total_seconds']:8.1f} {rate:18.0f} "
              f"{rate / base_rate:18.2f} {run['peak_rss_mb']:11.0f}")
        print(f"{'   map pass alone':>34} {'':>10} {'':>8} {map_rate:18.0f} {map_rate / base_rate:18.2f}")
    print(f"elements found on the large cube: fri {fri['elements']}, linear {linear['elements']}")
    print(f"goal: peak RSS < 1536 MB for the {gib:.1f} GiB cube -> "
          f"{'met' if max(linear['peak_rss_mb'], fri['peak_rss_mb']) < 1536 else 'NOT met'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="pixels per side of the speed cube")
    parser.add_argument("--channels", type=int, default=4096)
    parser.add_argument("--accuracy-size", type=int, default=96, help="pixels per side of the accuracy cubes")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".bench")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--no-pymca", action="store_true")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cube", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--design", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.cube, args.design)
        return 0
    if not args.skip_accuracy:
        accuracy(args.accuracy_size, args.channels, args.seed, not args.no_pymca)
    if not args.skip_speed:
        speed(args.size, args.channels, args.data_dir, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
