"""``mbdl lfm-psf`` and ``mbdl lfm-reconstruct``."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    from napari_mbdl.cli import add_common_arguments

    psf = subparsers.add_parser("lfm-psf", help="compute a wave-optics light-field PSF (Broxton 2013) into a zarr file")
    psf.add_argument("out", help="output PSF, *.zarr")
    psf.add_argument("--optics", default=None,
                     help="optics YAML (magnification, na, n, wavelength_um, lenslet_pitch_um, mla_focal_um, "
                          "pixel_size_um, pixels_per_lenslet, voxels_per_lenslet, depths_um, psf_lenslets) or a "
                          "napari-LF calibration file (*.lfc); default: the built-in 20x/0.5 optics")
    psf.add_argument("--olaf", default=None,
                     help="instead of --optics: an oLaF / pyolaf camera YAML (M, NA, n, WaveLength, lensPitch, ...)")
    psf.add_argument("--depths", default=None,
                     help="with --olaf (default -30:30:7.5) or an --optics .lfc (default: its z slices): depths in um, "
                          "start:stop:step or a,b,c (write --depths=-30:30:7.5)")
    psf.add_argument("--overwrite", action="store_true")
    psf.add_argument("-q", "--quiet", action="store_true")
    psf.set_defaults(func=_psf)

    rec = subparsers.add_parser("lfm-reconstruct",
                                help="reconstruct volumes from a light field or a (T, H, W) time series")
    rec.add_argument("light_field", help="light field (H, W) or time series (T, H, W): zarr, OME-Zarr or TIFF")
    rec.add_argument("out", help="output volumes: *.zarr (OME-Zarr, resumable) or *.tif")
    rec.add_argument("--psf", required=True, help="PSF zarr from mbdl lfm-psf (or an optics YAML: computed, cached)")
    rec.add_argument("--method", default="unfolded", choices=["unfolded", "rl", "isra"])
    rec.add_argument("--iterations", type=int, default=None, help="RL / ISRA iterations (default 30)")
    rec.add_argument("--weights", default=None, help="unfolded-network weights (default: shipped ones)")
    rec.add_argument("--white", default=None,
                     help="white image (TIFF/zarr) of the same camera: calibrate the lenslet grid and rectify raw frames")
    rec.add_argument("--grid", default=None, help="lenslet grid JSON (from a previous calibration) to rectify raw frames")
    rec.add_argument("--pitch-hint", type=float, default=None, help="approximate lenslet pitch in raw pixels")
    rec.add_argument("--frames-per-chunk", type=int, default=4)
    add_common_arguments(rec)
    rec.set_defaults(func=_reconstruct)


def _psf(args) -> int:
    from napari_mbdl.cli import run_steps_with_bar
    from napari_mbdl.engine import InputError
    from napari_mbdl.lfm.api import lfm_psf_steps
    from napari_mbdl.lfm.optics import optics_from_olaf_config

    optics = args.optics
    if args.olaf:
        if args.optics:
            raise InputError("give either --optics or --olaf, not both")
        optics = optics_from_olaf_config(args.olaf, depths_um=args.depths or "-30:30:7.5")
    elif optics and str(optics).lower().endswith(".lfc"):
        from napari_mbdl.lfm.lfc import optics_from_lfc

        optics = optics_from_lfc(optics, depths_um=args.depths)
    psf = run_steps_with_bar(lfm_psf_steps(optics, out=args.out, overwrite=args.overwrite), args.quiet)
    o = psf.optics
    print(f"wrote {args.out}: PSF {tuple(psf.psf.shape)} for {o.n_depths} depths "
          f"({o.depths_um[0]:g}..{o.depths_um[-1]:g} um), voxel {o.voxel_size_um} um")
    return 0


def _reconstruct(args) -> int:
    from napari_mbdl.cli import run_steps_with_bar
    from napari_mbdl.engine import InputError
    from napari_mbdl.io.arrays import open_array
    from napari_mbdl.lfm.api import lfm_reconstruct_steps
    from napari_mbdl.lfm.calibration import LensletGrid, calibrate_lenslet_grid

    grid = None
    if args.grid:
        path = Path(args.grid)
        if not path.is_file():
            raise InputError(f"lenslet grid file not found: {path}")
        try:
            grid = LensletGrid.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as error:
            raise InputError(f"{path} is not a lenslet-grid JSON file ({error})") from None
    elif args.white:
        import numpy as np

        white = np.asarray(open_array(args.white).data[...], dtype=np.float64)
        if white.ndim == 3:
            white = white.mean(axis=0)
        grid = calibrate_lenslet_grid(white, pitch_hint=args.pitch_hint)
        print(f"lenslet grid: pitch {grid.pitch_px:.3f} px, rotation {grid.rotation_deg:.3f} deg, "
              f"centre ({grid.center_yx[0]:.2f}, {grid.center_yx[1]:.2f})", file=sys.stderr)
    steps = lfm_reconstruct_steps(
        args.light_field, args.psf, method=args.method, n_iter=args.iterations, weights=args.weights, grid=grid,
        out=args.out, overwrite=args.overwrite, device=args.device, frames_per_chunk=args.frames_per_chunk,
        scheduler=args.scheduler, memory_budget=args.memory_budget,
    )
    result = run_steps_with_bar(steps, args.quiet)
    print(f"wrote {result.path}: volumes {tuple(result.array.shape)} ({result.axes}), "
          f"voxel {tuple(round(s, 4) for s in result.scale)}, {result.seconds:.1f} s on {result.device}")
    return 0
