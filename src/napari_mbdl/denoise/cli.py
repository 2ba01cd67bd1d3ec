"""``mbdl denoise``, ``mbdl deblur`` and ``mbdl train-denoiser``."""

from __future__ import annotations

from pathlib import Path

from napari_mbdl.engine.errors import InputError


def _sigma(text: str):
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--sigma must be a number or 'auto', not {text!r}") from None


def _range(text: str | None):
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--data-range must look like 0,4095, not {text!r}") from None
    return (lo, hi)


def register(subparsers) -> None:
    from napari_mbdl.cli import add_common_arguments

    p = subparsers.add_parser("denoise", help="denoise an image/stack with LINN or WINNet (invertible networks)")
    p.add_argument("input", help="TIFF, zarr/OME-Zarr or .npy; last two axes are (y, x)")
    p.add_argument("output", help="*.zarr (OME-Zarr) or *.tif")
    p.add_argument("--model", default="winnet", choices=["winnet", "linn"])
    p.add_argument("--sigma", default="auto", help="noise level in 8-bit units of the data range, or 'auto'")
    p.add_argument("--noise", default="gaussian", choices=["gaussian", "poisson-gaussian"])
    p.add_argument("--gain", type=float, default=None, help="Poisson-Gaussian gain (estimated if omitted)")
    p.add_argument("--read-noise", type=float, default=None, help="Poisson-Gaussian read noise (data units)")
    p.add_argument("--offset", type=float, default=0.0, help="Poisson-Gaussian offset (data units)")
    p.add_argument("--weights", default=None, help="a weights file (.safetensors) instead of the shipped one")
    p.add_argument("--self-ensemble", action="store_true",
                   help="average over the 8 flips/rotations of each tile: ~0.1 dB better, 8x slower")
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                   help="bfloat16: convolutions in bfloat16, within 0.02 dB; faster on CPUs with bfloat16 units")
    p.add_argument("--data-range", default=None, help="intensities meaning 0 and 255, e.g. 0,4095")
    p.add_argument("--axes", default=None, help="axis letters of the input, e.g. tzyx")
    add_common_arguments(p)
    p.set_defaults(func=_denoise)

    d = subparsers.add_parser("deblur", help="plug-and-play deblurring (blind WINNet/LINN + NENet)")
    d.add_argument("input")
    d.add_argument("output", help="*.tif or *.npy")
    d.add_argument("--kernel", required=True,
                   help="gaussian:SIGMA, motion:LENGTH[:ANGLE] or a kernel image file (.tif/.npy/.png)")
    d.add_argument("--model", default="winnet", choices=["winnet", "linn"])
    d.add_argument("--sigma", default="auto", help="noise level (8-bit units) or 'auto'")
    d.add_argument("--lam", type=float, default=0.23, help="proximity weight (default 0.23)")
    d.add_argument("--max-iter", type=int, default=30)
    d.add_argument("--data-range", default=None)
    add_common_arguments(d)
    d.set_defaults(func=_deblur)

    t = subparsers.add_parser("train-denoiser", help="train or fine-tune a denoiser on your own clean images")
    t.add_argument("images", help="folder of clean grey images (png/tif)")
    t.add_argument("output", help="weights file to write (.safetensors)")
    t.add_argument("--model", default="winnet", choices=["winnet", "linn"])
    t.add_argument("--init", default="shipped", help="'shipped' (blind model), 'scratch', or a weights file")
    t.add_argument("--sigma", default="25", help="noise level, or lo-hi for a blind model")
    t.add_argument("--steps", type=int, default=500)
    t.add_argument("--batch", type=int, default=10)
    t.add_argument("--patch", type=int, default=40)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint", default=None, help="resumable checkpoint (default: OUTPUT.ckpt.pt)")
    t.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or mps")
    t.add_argument("--overwrite", action="store_true")
    t.add_argument("-q", "--quiet", action="store_true")
    t.set_defaults(func=_train)


def _denoise(args) -> int:
    from napari_mbdl.cli import run_steps_with_bar
    from napari_mbdl.denoise.api import denoise_steps

    steps = denoise_steps(
        args.input, model=args.model, sigma=_sigma(args.sigma), noise=args.noise, gain=args.gain,
        read_noise=args.read_noise, offset=args.offset, weights=args.weights,
        self_ensemble=args.self_ensemble, precision=args.precision, data_range=_range(args.data_range),
        axes=args.axes, device=args.device, out=args.output, overwrite=args.overwrite, scheduler=args.scheduler,
        memory_budget=args.memory_budget,
    )
    result = run_steps_with_bar(steps, args.quiet)
    how = "estimated" if result.sigma_estimated else "given"
    views = ", self-ensemble of 8 views" if result.self_ensemble else ""
    views += "" if result.precision == "float32" else f", {result.precision}"
    print(f"wrote {result.path} (sigma {result.sigma:.2f} {how}, weights {Path(result.weights).name}{views})")
    return 0


def load_kernel(text: str):
    """Parse ``gaussian:S``, ``motion:L[:ANGLE]`` or read a kernel image file."""
    import numpy as np

    from napari_mbdl.denoise.deblur import gaussian_kernel, motion_kernel

    kind, _, rest = text.partition(":")
    try:
        if kind == "gaussian":
            return gaussian_kernel(float(rest))
        if kind == "motion":
            parts = rest.split(":")
            return motion_kernel(float(parts[0]), float(parts[1]) if len(parts) > 1 else 0.0)
    except ValueError:
        raise InputError(f"cannot read the kernel {text!r}; use gaussian:2.0 or motion:9:30") from None
    path = Path(text)
    if not path.is_file():
        raise InputError(f"kernel {text!r} is neither gaussian:S, motion:L[:ANGLE] nor an existing file")
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    from skimage import io as skio

    img = skio.imread(path)
    return img.mean(-1) if img.ndim == 3 else img


def _deblur(args) -> int:
    import numpy as np

    from napari_mbdl.cli import run_steps_with_bar
    from napari_mbdl.denoise.deblur import deblur_steps

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} already exists; choose another path or pass --overwrite")
    if out.suffix.lower() not in (".tif", ".tiff", ".npy"):
        raise InputError("the deblur output must be a .tif or .npy file")
    result = run_steps_with_bar(
        deblur_steps(args.input, load_kernel(args.kernel), model=args.model, sigma=_sigma(args.sigma), lam=args.lam,
                     max_iter=args.max_iter, data_range=_range(args.data_range), device=args.device),
        args.quiet,
    )
    if out.suffix == ".npy":
        np.save(out, result.array)
    else:
        import tifffile

        tifffile.imwrite(out, result.array)
    print(f"wrote {out} ({sum(result.iterations)} iterations; initial noise {np.median(result.sigma0):.2f})")
    return 0


def _train(args) -> int:
    from napari_mbdl.cli import run_steps_with_bar
    from napari_mbdl.denoise.train import load_image_folder
    from napari_mbdl.denoise.trainer import train_denoiser_steps

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} already exists; choose another path or pass --overwrite")
    images = load_image_folder(args.images)
    try:
        sigma = tuple(float(v) for v in args.sigma.split("-")) if "-" in args.sigma else float(args.sigma)
    except ValueError:
        raise InputError(f"--sigma must be a number or lo-hi, not {args.sigma!r}") from None
    init = None if args.init == "scratch" else args.init
    result = run_steps_with_bar(
        train_denoiser_steps(images, model=args.model, init=init, sigma=sigma, steps=args.steps,
                             batch=args.batch, patch=args.patch, lr=args.lr, seed=args.seed, out=out,
                             checkpoint=args.checkpoint or str(out) + ".ckpt.pt", device=args.device),
        args.quiet,
    )
    print(f"wrote {result['path']} after {result['step']} steps (loss {result['loss']:.3g})")
    return 0
