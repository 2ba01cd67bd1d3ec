"""napari LayerDataTuples for XRF results, the sample cube and the demo (plain tuples: no napari import)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLORMAPS = ("red", "green", "blue", "magenta", "cyan", "yellow", "bop orange", "bop purple", "bop blue", "gray")


def result_layers(result, scale=None, translate=None) -> list[tuple]:
    """One image layer per element quantity (additive colours) and one per confidence (hidden)."""
    layers = []
    identification = result.identification
    for index, element in enumerate(result.elements):
        quantity, confidence = result.maps[element]
        meta = {
            "element": element,
            "method": result.method,
            "significance_in_sum_spectrum": float(identification.significance.get(element, np.nan)),
            "counts_in_sum_spectrum": float(identification.counts.get(element, np.nan)),
            "calibration": result.calibration.as_metadata(),
            "source": str(result.run.path) if result.run is not None and result.run.path else None,
        }
        geometry = {}
        if scale is not None:
            geometry["scale"] = tuple(scale)
        if translate is not None:
            geometry["translate"] = tuple(translate)
        layers.append((quantity, {
            "name": f"{element} quantity", "colormap": COLORMAPS[index % len(COLORMAPS)], "blending": "additive",
            "visible": index < 3, "metadata": {**meta, "kind": "quantity (counts of the main line family)"}, **geometry,
        }, "image"))
        layers.append((confidence, {
            "name": f"{element} confidence", "colormap": "viridis", "visible": False,
            "contrast_limits": (0.0, 10.0),
            "metadata": {**meta, "kind": "confidence (quantity / standard error)"}, **geometry,
        }, "image"))
    return layers


def sample_cube(shape=(64, 64), n_channels=2048, seed=0):
    """The simulated painting as a napari layer (energy, y, x) with its calibration in the metadata."""
    from napari_mbdl.xrf.simulate import simulate_painting

    scan = simulate_painting(shape, n_channels, seed=seed)
    data = np.ascontiguousarray(np.moveaxis(scan.cube, -1, 0))
    meta = {
        "name": "MA-XRF painting (simulated)",
        "axis_labels": ("energy", "y", "x"),
        "metadata": {"axes": "cyx", "xrf_energy": scan.calibration.as_metadata(), "tube_kv": scan.tube_kv,
                     "true_elements": sorted(scan.true_maps)},
    }
    return [(data, meta, "image")]


def sample_data():
    """npe2 sample-data command: the simulated painting (64 x 64 pixels, 2048 channels), generated on demand."""
    return sample_cube()


def run_demo(out_dir: Path, device: str = "auto"):
    """Simulate a 64x64x2048 painting, write it as OME-Zarr, detect its elements and map them into OME-Zarr."""
    from napari_mbdl.xrf.api import xrf_maps_steps
    from napari_mbdl.xrf.io import cube_layer, read_cube, write_cube_zarr
    from napari_mbdl.xrf.simulate import simulate_painting

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scan = simulate_painting((64, 64), 2048, seed=0)
    cube_path = out_dir / "painting_cube.zarr"
    write_cube_zarr(scan.cube, cube_path, scan.calibration, overwrite=True)
    cube = read_cube(cube_path)
    result = yield from xrf_maps_steps(cube, elements="auto", method="fri", out=out_dir / "elemental_maps.ome.zarr",
                                       overwrite=True, device=device)
    truth, found = set(scan.true_maps), set(result.elements)
    summary = (f"detected {sorted(found)}; missed {sorted(truth - found) or 'none'}; "
               f"phantoms {sorted(found - truth) or 'none'}")
    pearson = {e: float(np.corrcoef(np.asarray(result.maps[e][0]).ravel(), scan.true_maps[e].ravel())[0, 1])
               for e in found & truth}
    lines = [summary] + [f"{e}: Pearson {r:.3f}" for e, r in sorted(pearson.items())]
    (out_dir / "summary.txt").write_text("\n".join(lines) + "\n")
    return [cube_layer(cube), *result_layers(result)]
