"""``mbdl demo --only lfm``: a simulated light-field time series -> OME-Zarr volumes (unfolded network and RL)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_mbdl.engine import Progress


def run_demo(out_dir: Path, device: str = "auto"):
    """Simulate 8 light fields of firing cells, write them to zarr, reconstruct them streamed from there."""
    from napari_mbdl.io.writing import write_array
    from napari_mbdl.lfm.api import OPTICS_ATTR, lfm_reconstruct_steps
    from napari_mbdl.lfm.optics import LFOptics, cached_psf_steps, default_cache_dir
    from napari_mbdl.lfm.simulate import simulate_sample

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    optics = LFOptics()
    psf = yield from cached_psf_steps(optics, default_cache_dir())
    yield Progress("lfm simulate", 0, 1, "8 frames, 15 x 15 lenslets")
    sample = simulate_sample(psf, n_lenslets=(15, 15), n_cells=15, n_frames=8, seed=2)
    lf_path = out_dir / "light_fields.ome.zarr"
    write_array(sample.light_field, lf_path, axes="tyx", overwrite=True, attrs={OPTICS_ATTR: optics.to_dict()})
    yield Progress("lfm simulate", 1, 1)
    unfolded = yield from lfm_reconstruct_steps(str(lf_path), psf, method="unfolded",
                                                out=out_dir / "volumes_unfolded.ome.zarr", overwrite=True,
                                                device=device)
    rl = yield from lfm_reconstruct_steps(str(lf_path), psf, method="rl", n_iter=30,
                                          out=out_dir / "volumes_rl30.ome.zarr", overwrite=True, device=device)

    def psnr(estimate):
        truth = sample.volume
        return 10 * np.log10(truth.max() ** 2 / np.mean((np.asarray(estimate) - truth) ** 2))

    common = {"scale": tuple(unfolded.scale), "colormap": "magma", "blending": "additive"}
    return [
        (sample.light_field, {"name": "light fields (simulated)", "colormap": "gray"}, "image"),
        (sample.volume, {"name": "true volumes", **common}, "image"),
        (unfolded.array, {"name": f"unfolded ISTA ({psnr(unfolded.array):.1f} dB)", **common}, "image"),
        (rl.array, {"name": f"Richardson-Lucy x30 ({psnr(rl.array):.1f} dB)", **common}, "image"),
    ]
