"""``mbdl xray-separate MIXED RGB1 [RGB2] OUT``, ``mbdl xray-align`` and ``mbdl xray-sample``."""

from __future__ import annotations

from pathlib import Path

from napari_mbdl.engine.errors import InputError

_PICTURES = (".png", ".jpg", ".jpeg", ".bmp")


def _read(path: str, what: str):
    """zarr / TIFF / .npy through the engine's reader (lazy); PNG/JPEG photographs via scikit-image."""
    from napari_mbdl.io.arrays import open_array

    source = Path(path)
    if source.suffix.lower() in _PICTURES:
        if not source.exists():
            raise InputError(f"{source} does not exist")
        from skimage.io import imread

        try:
            return imread(source)
        except Exception as error:
            raise InputError(f"cannot read the {what} {source.name}: {error}") from None
    return open_array(source).data


def register(subparsers) -> None:
    from napari_mbdl.cli import add_common_arguments

    p = subparsers.add_parser(
        "xray-separate",
        help="separate a mixed X-ray of a double-sided painting into the X-rays of its two sides",
        description="Trains the unfolded sparse separation network on this painting (self-supervised), then "
        "separates the whole X-ray tile by tile. OUT (.zarr or .tif) holds 3 channels: side 1, side 2 and "
        "the re-synthesis error. Photographs must be registered to the X-ray (see 'mbdl xray-align').",
    )
    p.add_argument("mixed", help="mixed X-ray (H, W): TIFF, zarr or .npy")
    p.add_argument("rgb1", help="photograph of side 1 (H, W, 3): TIFF, zarr, .npy, PNG or JPEG")
    p.add_argument("rgb2", nargs="?", default=None, help="photograph of side 2, mirrored onto the X-ray (optional)")
    p.add_argument("out", help="output .zarr (OME-Zarr, axes c,y,x) or .tif")
    p.add_argument("--iterations", type=int, default=300, help="training iterations (default 300)")
    p.add_argument("--minutes", type=float, default=None, help="stop training after this many minutes")
    p.add_argument("--no-registration-check", action="store_true", help="do not refuse misregistered photographs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exclusion-weight", type=float, default=None,
                   help="weight of the exclusion loss (default: 0.005 with one photograph; 0 with two, "
                        "where the exclusion shares what the photographs leave unexplained by the sides' "
                        "edges); 0 is the model without its exclusion term; results are sensitive to it")
    add_common_arguments(p)
    p.set_defaults(func=_separate)

    a = subparsers.add_parser("xray-align", help="resize/mirror/shift a photograph onto an X-ray's pixel grid")
    a.add_argument("rgb", help="photograph (h, w, 3)")
    a.add_argument("mixed", help="the X-ray it should match")
    a.add_argument("out", help="aligned photograph (.tif)")
    a.add_argument("--no-mirror", action="store_true", help="never mirror the photograph")
    a.add_argument("--overwrite", action="store_true")
    a.set_defaults(func=_align)

    s = subparsers.add_parser("xray-sample", help="write the synthetic double-sided panel (with its true sides)")
    s.add_argument("out", help="output folder (mixed.tif, rgb1.tif, rgb2.tif, xray1.tif, xray2.tif)")
    s.add_argument("--size", type=int, default=256)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=_sample)


def _separate(args) -> int:
    from dataclasses import replace

    from napari_mbdl.cli import run_steps_with_bar
    from napari_mbdl.xray_separation.api import separate_xray_steps
    from napari_mbdl.xray_separation.training import SeparationConfig

    out = Path(args.out)
    if out.suffix.lower() not in (".zarr", ".tif", ".tiff"):
        raise InputError(f"the output must be a .zarr or .tif path; got {out.name}")
    if args.memory_budget:
        import os

        os.environ["MBDL_MEMORY_BUDGET"] = str(args.memory_budget)
    config = replace(SeparationConfig(), iterations=args.iterations, max_minutes=args.minutes, seed=args.seed)
    if args.exclusion_weight is not None:
        config = replace(config, weight_exclusion=args.exclusion_weight)
    result = run_steps_with_bar(
        separate_xray_steps(
            _read(args.mixed, "mixed X-ray"), _read(args.rgb1, "photograph of side 1"),
            _read(args.rgb2, "photograph of side 2") if args.rgb2 else None,
            config=config, device=args.device, out=out, overwrite=args.overwrite,
            check_alignment=not args.no_registration_check, scheduler=args.scheduler,
        ),
        quiet=args.quiet,
    )
    trained = result.trained
    print(f"wrote {result.run.path} (channels: side 1, side 2, re-synthesis error); on {result.run.device}, "
          f"{trained.summary()}")
    return 0


def _align(args) -> int:
    import numpy as np
    import tifffile

    from napari_mbdl.xray_separation.registration import align_to_xray

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} already exists; choose another path or pass --overwrite")
    rgb = np.asarray(_read(args.rgb, "photograph"))
    mixed = _read(args.mixed, "mixed X-ray")
    if len(mixed.shape) != 2:
        raise InputError(f"the mixed X-ray image must be 2-D (H, W); got shape {tuple(mixed.shape)}")
    aligned, alignment = align_to_xray(rgb, mixed, allow_mirror=not args.no_mirror)
    if rgb.dtype.kind in "ui":
        aligned = np.clip(np.round(aligned), 0, np.iinfo(rgb.dtype).max).astype(rgb.dtype)
    tifffile.imwrite(out, aligned, photometric="rgb")
    print(f"wrote {out}: zoom {alignment.scale[0]:.4g} x {alignment.scale[1]:.4g}, "
          f"{'mirrored, ' if alignment.mirrored else ''}shift {alignment.shift[0]:.1f}, {alignment.shift[1]:.1f} px "
          f"(edge correlation {alignment.score:.2f})")
    return 0


def _sample(args) -> int:
    import tifffile

    from napari_mbdl.xray_separation.synthetic import make_double_sided_panel

    out = Path(args.out)
    panel = make_double_sided_panel(args.size)
    out.mkdir(parents=True, exist_ok=True)
    names = ("mixed", "rgb1", "rgb2", "xray1", "xray2")
    # refuse before writing anything, so a refused call leaves the folder as it was
    for name in names:
        path = out / f"{name}.tif"
        if path.exists() and not args.overwrite:
            raise InputError(f"{path} already exists; pass --overwrite")
    for name in names:
        image = getattr(panel, name)
        tifffile.imwrite(out / f"{name}.tif", image, photometric="rgb" if image.ndim == 3 else "minisblack")
    print(f"wrote the {args.size} x {args.size} synthetic panel to {out}")
    return 0
