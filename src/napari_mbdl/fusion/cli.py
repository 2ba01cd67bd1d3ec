"""``mbdl fusion TWO_P LF_SERIES OUT --psf PSF.zarr`` and ``mbdl fusion-sample OUT``."""

from __future__ import annotations

import json
from pathlib import Path

from napari_mbdl.engine.errors import InputError

SAMPLE_FILES = ("two_photon.tif", "light_fields.tif", "psf.zarr", "truth.npz", "truth.json")


def _triple(text: str, what: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise InputError(f"{what}: expected three comma-separated numbers 'z,y,x', got {text!r}") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or min(values) <= 0:
        raise InputError(f"{what}: expected three positive numbers 'z,y,x', got {text!r}")
    return values


def register(subparsers) -> None:
    from napari_mbdl.cli import add_common_arguments

    p = subparsers.add_parser(
        "fusion",
        help="2P / LFM fusion: neurons from a two-photon stack, their activity from a light-field series",
        description="Segment the cells of TWO_P, register it to the LFM volume space, and extract per-frame "
        "activity of each cell from LF_SERIES (non-negative, footprint-constrained inverse problem with the "
        "physical light-field model). Writes traces.csv, traces_dff.csv, traces.zarr, activity.zarr, "
        "labels_2p.tif, labels_lfm.tif and registration.json into OUT.",
    )
    p.add_argument("two_photon", help="2P structural stack (z, y, x): TIFF or zarr")
    p.add_argument("light_fields", help="light-field series (t, v, u): TIFF or zarr (streamed)")
    p.add_argument("out", help="output folder")
    p.add_argument("--psf", required=True, help="light-field PSF zarr (from 'mbdl lfm-psf' or 'mbdl fusion-sample')")
    p.add_argument("--voxel-2p", default=None,
                   help="2P voxel size in um 'dz,dy,dx' (default: the stack's metadata)")
    p.add_argument("--cell-radius", default="5,4,4", help="expected cell semi-axes in um 'rz,ry,rx' (default 5,4,4)")
    p.add_argument("--labels", default=None, help="use these 2P cell labels (TIFF/zarr) instead of segmenting")
    p.add_argument("--frame-rate", type=float, default=None, help="frames per second (adds a time column)")
    p.add_argument("--no-volumes", action="store_true", help="skip the 4D activity volumes")
    add_common_arguments(p)
    p.set_defaults(func=_run)

    s = subparsers.add_parser("fusion-sample", help="write the simulated paired 2P / LFM sample (with its truth)")
    s.add_argument("out", help="output folder")
    s.add_argument("--frames", type=int, default=200)
    s.add_argument("--neurons", type=int, default=20)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true", help="replace the sample files already in OUT")
    s.set_defaults(func=_sample)


def _run(args) -> int:
    import numpy as np

    from napari_mbdl.cli import run_steps_with_bar
    from napari_mbdl.fusion.api import fuse_steps
    from napari_mbdl.io.arrays import open_array

    two_photon = open_array(args.two_photon)
    if args.voxel_2p:
        voxel = _triple(args.voxel_2p, "--voxel-2p")
    elif two_photon.scale and len(two_photon.scale) == 3 and any(v != 1 for v in two_photon.scale):
        voxel = tuple(float(v) for v in two_photon.scale)
    else:
        raise InputError("the 2P stack has no voxel size in its metadata; pass --voxel-2p dz,dy,dx (um)")
    labels = None
    if args.labels:
        labels = np.asarray(open_array(args.labels).data)
    light_fields = open_array(args.light_fields)
    result = run_steps_with_bar(
        fuse_steps(
            np.asarray(two_photon.data), light_fields, Path(args.psf), two_photon_voxel_um=voxel,
            cell_radius_um=_triple(args.cell_radius, "--cell-radius"), labels=labels, out=Path(args.out),
            overwrite=args.overwrite, volumes=not args.no_volumes, frame_rate_hz=args.frame_rate,
            device=args.device, scheduler=args.scheduler,
        ),
        quiet=args.quiet,
    )
    print(f"{len(result.activity.label_ids)} neurons, {result.activity.traces.shape[1]} frames")
    print(f"registration: {result.registration.describe()}")
    for name, path in result.paths.items():
        print(f"  {name}: {path}")
    return 0


def _sample(args) -> int:
    import shutil

    import numpy as np
    import tifffile

    from napari_mbdl.engine.errors import OutputExistsError
    from napari_mbdl.fusion.sample import make_sample

    out = Path(args.out)
    existing = [out / name for name in SAMPLE_FILES if (out / name).exists()]
    if existing:
        if not args.overwrite:
            raise OutputExistsError(f"{existing[0]} exists; choose another folder or pass --overwrite")
        # Only the files this command writes are replaced; nothing else in OUT is touched.
        for path in existing:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    sample, psf = make_sample(n_neurons=args.neurons, n_frames=args.frames, seed=args.seed)
    tifffile.imwrite(out / "two_photon.tif", sample.two_photon, imagej=True,
                     resolution=(1 / sample.two_photon_voxel_um[2], 1 / sample.two_photon_voxel_um[1]),
                     metadata={"axes": "ZYX", "spacing": sample.two_photon_voxel_um[0], "unit": "um"})
    tifffile.imwrite(out / "light_fields.tif", sample.light_fields, metadata={"axes": "TYX"})
    psf.save(out / "psf.zarr")
    np.savez_compressed(out / "truth.npz", centers_um=sample.true_centers_um, calcium=sample.true_calcium,
                        fluorescence=sample.true_fluorescence, spikes=sample.true_spikes, labels=sample.true_labels,
                        transform=sample.true_transform)
    (out / "truth.json").write_text(json.dumps({
        "two_photon_voxel_um": sample.two_photon_voxel_um, "lfm_voxel_um": sample.lfm_voxel_um,
        "volume_shape": sample.volume_shape, "rotation_deg": sample.rotation_deg, "shift_um": sample.shift_um,
        "frame_rate_hz": sample.frame_rate_hz, "n_neurons": sample.n_neurons,
    }, indent=2))
    print(f"wrote {out}: two_photon.tif (voxel {sample.two_photon_voxel_um} um), light_fields.tif "
          f"{sample.light_fields.shape}, psf.zarr, truth.npz/json")
    print(f"next: mbdl fusion {out / 'two_photon.tif'} {out / 'light_fields.tif'} OUT --psf {out / 'psf.zarr'} "
          f"--voxel-2p {','.join(str(v) for v in sample.two_photon_voxel_um)}")
    return 0
