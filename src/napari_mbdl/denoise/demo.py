"""``mbdl demo`` entry for the denoisers: natural image (auto sigma, bands), fluorescence stack, deblurring."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from napari_mbdl.engine import Progress


def run_demo(out_dir: Path, device: str = "auto"):
    """Denoise the sample images, deblur a blurred one; write OME-Zarr/TIFF; return layers."""
    import tifffile

    from napari_mbdl.denoise.api import denoise_steps, detail_bands
    from napari_mbdl.denoise.deblur import blur, deblur_steps, gaussian_kernel
    from napari_mbdl.denoise.sample_data import fluorescence_stack, noisy_camera_array
    from napari_mbdl.denoise.train import psnr

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layers = []

    clean, noisy = noisy_camera_array(sigma=25.0)
    target = out_dir / "camera_denoised.ome.zarr"
    shutil.rmtree(target, ignore_errors=True)
    result = yield from denoise_steps(noisy, model="winnet", sigma="auto", device=device, out=target)
    denoised = np.asarray(result.array)
    ref = clean.astype(np.float32) / 255
    yield Progress("demo", 1, 3, f"camera: {psnr(ref, noisy):.2f} dB -> {psnr(ref, denoised):.2f} dB")
    layers.append((noisy, {"name": f"noisy camera ({psnr(ref, noisy):.2f} dB)"}, "image"))
    layers.append((denoised, {"name": f"WINNet, sigma {result.sigma:.1f} estimated ({psnr(ref, denoised):.2f} dB)"},
                   "image"))
    before, after, _ = detail_bands(noisy, sigma=result.sigma)
    layers.append((before[0], {"name": "detail bands z_d before thresholding", "visible": False}, "image"))
    layers.append((after[0], {"name": "detail bands z_d after thresholding", "visible": False}, "image"))

    truth, stack = fluorescence_stack()
    target = out_dir / "fluorescence_denoised.ome.zarr"
    shutil.rmtree(target, ignore_errors=True)
    res = yield from denoise_steps(stack, noise="poisson-gaussian", device=device, out=target,
                                   data_range=(0.0, float(stack.max())))
    meta = {"scale": (0.5, 0.1, 0.1)}
    pg = res.poisson_gaussian
    layers.append((stack, {"name": "noisy fluorescence (uint16)", **meta}, "image"))
    layers.append((np.asarray(res.array), {"name": f"Anscombe + WINNet (gain {pg.gain:.2f} estimated)", **meta},
                   "image"))
    yield Progress("demo", 2, 3, "fluorescence stack denoised")

    kernel = gaussian_kernel(1.6)
    rng = np.random.default_rng(1)
    blurred = (blur(ref, kernel, mode="reflect") + rng.standard_normal(ref.shape) * (5 / 255)).astype(np.float32)
    deblurred = yield from deblur_steps(blurred, kernel, sigma="auto", max_iter=20, device=device)
    tifffile.imwrite(out_dir / "camera_deblurred.tif", deblurred.array)
    layers.append((blurred, {"name": f"blurred + noise ({psnr(ref, blurred):.2f} dB)"}, "image"))
    layers.append((deblurred.array, {"name": f"PnP deblurred, {deblurred.iterations[0]} iterations "
                                               f"({psnr(ref, deblurred.array):.2f} dB)"}, "image"))
    yield Progress("demo", 3, 3, "done")
    return layers
