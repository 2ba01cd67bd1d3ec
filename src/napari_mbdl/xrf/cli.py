"""``mbdl xrf-maps CUBE OUT``: elemental quantity and confidence maps of an MA-XRF cube."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    from napari_mbdl.cli import add_common_arguments

    parser = subparsers.add_parser(
        "xrf-maps",
        help="elemental maps (quantity + confidence per element) of an MA-XRF cube",
        description="Detect the elements of a macro-XRF cube (FRI pulses matched to xraylib lines) and map them. "
        "The output OME-Zarr has axes (c, y, x): the quantity of each element, then its confidence "
        "(standard errors); the channel names are in its metadata.",
    )
    parser.add_argument("cube", help="XRF cube: .zarr / OME-Zarr, .rpl (+ .raw), .h5 (PyXRF / XRF-Maps), .bcf (Bruker; extra [bcf]), .tif, .npy")
    parser.add_argument("out", help="output maps, *.zarr (OME-Zarr, resumable) or *.tif")
    parser.add_argument("--elements", default="auto", help="auto (detect), or a list such as Fe,Cu,Pb")
    parser.add_argument("--add", default="", help="with auto: elements to add, e.g. Sn,Co")
    parser.add_argument("--exclude", default="", help="with auto: elements never to report, e.g. Ar")
    parser.add_argument("--method", default="fri", choices=["fri", "linear"],
                        help="fri: FRI-refined lines, local detection, non-negative fit; linear: PyMca-style fast linear fit")
    parser.add_argument("--energy", default=None,
                        help="calibration 'offset_keV,gain_keV' when the file has none (e.g. 0,0.01)")
    parser.add_argument("--calibrate", default=None,
                        help="two-line calibration 'channel:line,channel:line', e.g. '640:Fe,1055:Pb-La'")
    parser.add_argument("--energy-axis", type=int, default=None, help="axis of the spectra (default: from metadata, else last)")
    parser.add_argument("--tube-kv", type=float, default=None,
                        help="X-ray tube voltage in kV (default 50, or the top of the energy axis when higher)")
    parser.add_argument("--detector-noise", type=float, default=0.100, help="detector electronic noise FWHM in keV")
    add_common_arguments(parser)
    parser.set_defaults(func=_run)


def _symbols(text):
    return [part.strip() for part in str(text or "").split(",") if part.strip()]


def _parse_energy(text):
    from napari_mbdl.engine import InputError

    try:
        offset, gain = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--energy wants 'offset_keV,gain_keV', got {text!r}") from None
    return offset, gain


def _run(args) -> int:
    from napari_mbdl.cli import run_steps_with_bar
    from napari_mbdl.xrf.api import xrf_maps_steps
    from napari_mbdl.xrf.io import read_cube
    from napari_mbdl.xrf.spectral import DetectorResponse

    cube = read_cube(args.cube)
    energy = _parse_energy(args.energy) if args.energy else None
    if args.calibrate:
        energy = two_line_calibration(cube, args.calibrate, args.energy_axis)
        print(f"two-line calibration: offset {energy.offset:.4f} keV, gain {1000 * energy.gain:.3f} eV/channel",
              file=sys.stderr)
    elements = "auto" if args.elements.strip().lower() == "auto" else _symbols(args.elements)
    result = run_steps_with_bar(
        xrf_maps_steps(
            cube, energy, elements, add=_symbols(args.add), exclude=_symbols(args.exclude), method=args.method,
            detector=DetectorResponse(noise=args.detector_noise), tube_kv=args.tube_kv, energy_axis=args.energy_axis,
            out=args.out, overwrite=args.overwrite, device=args.device, scheduler=args.scheduler,
            memory_budget=args.memory_budget,
        ),
        args.quiet,
    )
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    summary = ", ".join(f"{e} ({result.identification.significance.get(e, 0):.0f} sigma)" for e in result.elements)
    print(f"wrote {args.out}: {len(result.elements)} elements by {result.method}: {summary}")
    return 0


def two_line_calibration(cube, text, energy_axis=None):
    """Parse '640:Fe,1055:Pb-La' and fit offset/gain on the cube's sum spectrum (a subsample of pixels)."""
    import numpy as np

    from napari_mbdl.engine import InputError
    from napari_mbdl.xrf.lines import main_line_energy
    from napari_mbdl.xrf.spectral import calibrate_two_lines

    points = []
    for part in text.split(","):
        try:
            channel, line = part.split(":")
            points.append((float(channel), main_line_energy(line)))
        except ValueError:
            raise InputError(f"--calibrate wants 'channel:line,channel:line' such as '640:Fe,1055:Pb-La'; got {part!r}") from None
    if len(points) != 2:
        raise InputError("--calibrate needs exactly two 'channel:line' pairs")
    data = cube.data
    letters = cube.axes or "yxc"
    axis = energy_axis if energy_axis is not None else (letters.index("c") if "c" in letters else 2)
    step = max(1, int(np.sqrt(data.shape[0] * data.shape[1] * data.shape[2] / data.shape[axis] / 4096.0)))
    index = [slice(None, None, step)] * 3
    index[axis] = slice(None)                     # ~4096 spectra are enough to find two peaks
    spectrum = np.asarray(data[tuple(index)], dtype=np.float64).sum(axis=tuple(a for a in range(3) if a != axis))
    return calibrate_two_lines(spectrum, points[0], points[1])
