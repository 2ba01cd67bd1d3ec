"""``mbdl info``, ``mbdl convert`` and ``mbdl demo``."""

from __future__ import annotations

import sys
from pathlib import Path


def register(subparsers) -> None:
    info = subparsers.add_parser("info", help="versions, devices found, and the dask cluster in use")
    info.add_argument("--scheduler", default=None, help="also describe this dask cluster ('local' or an address)")
    info.set_defaults(func=_info)

    convert = subparsers.add_parser(
        "convert", help="copy a TIFF / zarr / .npy array into OME-Zarr or TIFF, streamed chunk by chunk"
    )
    convert.add_argument("input")
    convert.add_argument("output", help="*.zarr (OME-Zarr) or *.tif")
    convert.add_argument("--axes", default=None, help="axis letters of the input, e.g. tzyx (default: from the file)")
    convert.add_argument("--overwrite", action="store_true")
    convert.add_argument("-q", "--quiet", action="store_true")
    convert.set_defaults(func=_convert)

    demo = subparsers.add_parser(
        "demo", help="run every capability on its built-in sample data; write results and a napari screenshot"
    )
    demo.add_argument("--out", default="demo_output", help="folder for the results (default: demo_output)")
    demo.add_argument("--device", default="auto")
    demo.add_argument("--only", default=None, help="comma-separated capabilities to run (default: all)")
    demo.add_argument("--gui", action="store_true", help="open napari with the layers and widgets docked")
    demo.add_argument("--no-screenshot", action="store_true")
    demo.add_argument("-q", "--quiet", action="store_true")
    demo.set_defaults(func=_demo)


def _info(args) -> int:
    import importlib.metadata as metadata
    import platform

    from napari_mbdl import __version__

    print(f"napari-mbdl {__version__} on Python {platform.python_version()} ({platform.platform()})")
    for package in ("napari", "numpy", "torch", "zarr", "dask", "distributed", "tifffile", "xraylib"):
        try:
            print(f"  {package:12s} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            print(f"  {package:12s} not installed")
    import torch

    from napari_mbdl.engine.device import memory_budget, resolve_device

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    chosen = resolve_device("auto")
    print(f"devices: {', '.join(devices)}; auto -> {chosen}; memory budget {memory_budget(chosen) / 2**30:.1f} GiB")
    if args.scheduler:
        from napari_mbdl.engine.cluster import describe

        print(f"dask cluster: {describe(args.scheduler)}")
    else:
        print("dask cluster: none (local threads); pass --scheduler local or an address to use one")
    from napari_mbdl.demo import available_demos

    print(f"capabilities: {', '.join(name for name in available_demos() if name != 'engine')}")
    return 0


def _convert(args) -> int:
    from napari_mbdl.cli import run_steps_with_bar
    from napari_mbdl.engine.run import run_blocks
    from napari_mbdl.io.arrays import open_array
    from napari_mbdl.io.writing import copy_operation

    source = open_array(args.input, axes=args.axes)
    steps = run_blocks(copy_operation(source.dtype), source, out=args.output, overwrite=args.overwrite,
                       check_finite=False, stage="convert")
    result = run_steps_with_bar(steps, args.quiet)
    print(f"wrote {result.path} {tuple(result.array.shape)} axes={result.axes}")
    return 0


def _demo(args) -> int:
    from napari_mbdl.demo import open_gui, run_demos, screenshot

    out = Path(args.out).resolve()
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    layers, failures = run_demos(out, device=args.device, only=only, quiet=args.quiet)
    print(f"\nResults in {out}:")
    for name in layers:
        folder = out / name
        files = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
        print(f"  {name:8s} {folder}  ({', '.join(files)})")
    for name, message in failures.items():
        print(f"  {name:8s} FAILED: {message}", file=sys.stderr)
    if args.gui:
        open_gui(layers)
    elif not args.no_screenshot:
        png = screenshot(layers, out / "napari_screenshot.png")
        print(f"  napari screenshot: {png}")
    return 1 if failures else 0
