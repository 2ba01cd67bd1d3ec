"""Public entry points: ``xrf_maps_steps`` (generator, used by the widget, CLI and demo) and ``xrf_maps``."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_mbdl.engine import CancelToken, InputError, Operation, Progress, RunResult, reduce_blocks, run_blocks, run_steps
from napari_mbdl.xrf.spectral import DetectorResponse, EnergyCalibration

log = logging.getLogger(__name__)

ENERGY_AXIS_LETTERS = "ce"
# metadata keys that may hold a calibration (ours first, then common spellings)
CALIBRATION_KEYS = ("xrf_energy", "energy_calibration", "energy")


@dataclass
class XRFResult:
    """Everything an XRF run produced.

    Attributes
    ----------
    maps : dict
        Element -> ``(quantity, confidence)`` 2-D arrays (numpy, or dask read lazily from the output).
    elements : list of str
    identification : Identification
        Detected pulses, their labels, the per-element significance in the sum spectrum.
    sum_spectrum, energies : numpy.ndarray
        The cube's sum spectrum and channel energies (refined calibration).
    calibration : EnergyCalibration
        The calibration after refinement from the detected pulses.
    run : RunResult
        The engine's record (path of the OME-Zarr output, chunks, time).
    method : str
    warnings : list of str
    """

    maps: dict[str, tuple[Any, Any]]
    elements: list[str]
    identification: Any
    sum_spectrum: np.ndarray
    energies: np.ndarray
    calibration: EnergyCalibration
    run: RunResult | None
    method: str
    warnings: list[str] = field(default_factory=list)


def parse_calibration(energy, n_channels: int | None = None) -> EnergyCalibration:
    """An :class:`EnergyCalibration` from ``(offset, gain)`` (keV), a per-channel energy array, a dict or a calibration."""
    if isinstance(energy, EnergyCalibration):
        return energy
    if isinstance(energy, dict):
        offset = energy.get("offset_keV", energy.get("offset"))
        gain = energy.get("gain_keV", energy.get("gain"))
        if offset is None or gain is None:
            raise InputError(f"the energy calibration {energy!r} needs 'offset_keV' and 'gain_keV'")
        return EnergyCalibration(float(offset), float(gain))
    values = np.asarray(energy, dtype=np.float64).ravel()
    if values.size == 2 and (n_channels is None or n_channels != 2):
        return EnergyCalibration(float(values[0]), float(values[1]))
    if n_channels is not None and values.size != n_channels:
        raise InputError(f"the energy axis has {values.size} values but the cube has {n_channels} channels")
    calibration = EnergyCalibration.from_energies(values)
    if calibration.gain > 1.0:  # eV given instead of keV
        calibration = EnergyCalibration(calibration.offset / 1000.0, calibration.gain / 1000.0)
    return calibration


def prepare_cube(cube, energy=None, energy_axis: int | None = None):
    """Open a cube lazily as (y, x, energy) and find its calibration.

    Returns ``(labeled_array_yxE, calibration)``; the input is never modified.
    """
    from napari_mbdl.io.arrays import LabeledArray, open_array

    labeled = open_array(cube)
    if labeled.ndim != 3:
        raise InputError(
            f"an XRF cube needs three axes (y, x, energy); this one has shape {labeled.shape}. "
            "Open the full datacube, not a single map or spectrum"
        )
    if energy_axis is None:
        letters = labeled.axes or ""
        found = [i for i, a in enumerate(letters) if a in ENERGY_AXIS_LETTERS]
        energy_axis = found[0] if len(found) == 1 else 2
    energy_axis = int(energy_axis) % 3
    data = labeled.data
    if energy_axis != 2:
        import dask.array as da

        order = [a for a in range(3) if a != energy_axis] + [energy_axis]
        data = da.from_array(data, chunks=getattr(data, "chunks", "auto"), asarray=True).transpose(order)
        labeled = LabeledArray(data, axes="yxc", name=labeled.name, path=labeled.path, attrs=labeled.attrs)
    else:
        labeled = LabeledArray(data, axes="yxc", scale=labeled.scale, units=labeled.units, name=labeled.name,
                               path=labeled.path, attrs=labeled.attrs)
    n_channels = labeled.shape[2]
    if n_channels < 64:
        raise InputError(
            f"the energy axis has only {n_channels} channels; an XRF cube needs its spectrum axis "
            "(set energy_axis if the spectra are along another axis)"
        )
    if energy is None:
        for key in CALIBRATION_KEYS:
            if key in labeled.attrs:
                energy = labeled.attrs[key]
                break
    if energy is None:
        raise InputError(
            "the cube has no energy calibration: pass energy=(offset_keV, gain_keV) or the channel "
            "energies, or fit it from two known lines with napari_mbdl.xrf.calibrate_two_lines"
        )
    return labeled, parse_calibration(energy, n_channels)


def _cube_statistics(block: np.ndarray):
    """Per tile: sum spectrum, negative values, saturated pixels (for the reduction)."""
    spectra = block.reshape(-1, block.shape[-1])
    total = spectra.sum(axis=0, dtype=np.float64)
    negative = int(np.count_nonzero(spectra < 0)) if spectra.dtype.kind in "if" else 0
    saturated = 0
    if spectra.dtype.kind in "ui" and spectra.dtype.itemsize <= 2:
        saturated = int(np.count_nonzero((spectra == np.iinfo(spectra.dtype).max).any(axis=1)))
    return total, negative, saturated


def _fit_function_for(model, device):
    from napari_mbdl.xrf.maps import make_fit_function

    return make_fit_function(model)


def _tile_for(shape, n_channels, superpixel, budget_bytes=128 * 2**20):
    """Square tile (multiple of the superpixel) whose working set (~14 bytes per value) fits ``budget_bytes``."""
    side = int(math.sqrt(budget_bytes / (n_channels * 14.0)))
    side = max(superpixel, side // superpixel * superpixel)
    return (min(side, shape[0]), min(side, shape[1]))


@dataclass
class Detection:
    """Sum spectrum, detected elements and input warnings of a cube (the first half of a run)."""

    sum_spectrum: np.ndarray
    identification: Any
    warnings: list[str]

    @property
    def energies(self) -> np.ndarray:
        return self.identification.calibration.energies(self.sum_spectrum.size)


def detect_steps(
    labeled,
    calibration: EnergyCalibration,
    elements="auto",
    *,
    add=(),
    exclude=(),
    detector: DetectorResponse | None = None,
    tube_kv: float | None = None,
    threshold: float = 5.0,
    refine_calibration: bool = True,
    cancel: CancelToken | None = None,
    memory_budget=None,
    identification=None,
) -> Generator[Progress, None, Detection]:
    """Stream the sum spectrum of a (y, x, energy) cube, check it, and detect its elements.

    ``labeled`` and ``calibration`` come from :func:`prepare_cube`.  Negative values and empty
    cubes raise InputError; saturated pixels produce a warning.
    """
    from napari_mbdl.xrf.identify import identify_elements

    cancel = cancel or CancelToken()
    energies = calibration.energies(labeled.shape[-1])
    if energies[-1] < 1.5:
        raise InputError(f"the energy axis ends at {energies[-1]:.3g} keV; give the calibration in keV")
    # modest tiles: the sum only needs one tile (plus the two read ahead) in memory at a time
    statistics = yield from reduce_blocks(
        _cube_statistics, labeled, n_tiled=2, tile=_tile_for(labeled.shape[:2], labeled.shape[2], 8, 32 * 2**20),
        cancel=cancel, stage="sum spectrum", memory_budget=memory_budget,
    )
    sum_spectrum, negative, saturated = statistics
    warnings = []
    if negative:
        raise InputError(
            f"the cube holds {negative} negative values; XRF counts cannot be negative "
            "(was a background already subtracted?)"
        )
    if not np.any(sum_spectrum > 0):
        raise InputError("the cube holds no counts (every channel is zero)")
    if saturated:
        warnings.append(
            f"{saturated} pixel spectra reach the largest value of {labeled.dtype}; their counts are clipped "
            "and their quantities are underestimated"
        )
    above = energies >= 1.0
    empty = int(np.count_nonzero(sum_spectrum[above] == 0))
    if empty > 0.5 * max(np.count_nonzero(above), 1):
        warnings.append(f"{empty} channels above 1 keV hold no counts at all; check the energy calibration")
    for message in warnings:
        log.warning(message)
    yield Progress("detect elements", 0, 1, "FRI pulses")
    if identification is None:
        identification = identify_elements(
            sum_spectrum, calibration, detector, tube_kv=tube_kv, elements=elements, add=add, exclude=exclude,
            threshold=threshold, refine_calibration=refine_calibration,
        )
    if not identification.elements:
        raise InputError("no element lines stand out of the sum spectrum; name the elements to map")
    detection = Detection(sum_spectrum, identification, warnings)
    yield Progress("detect elements", 1, 1, ", ".join(identification.elements), preview=detection)
    return detection


def xrf_maps_steps(
    cube,
    energy=None,
    elements="auto",
    *,
    add=(),
    exclude=(),
    method: str = "fri",
    detector: DetectorResponse | None = None,
    tube_kv: float | None = None,
    threshold: float = 5.0,
    energy_axis: int | None = None,
    superpixel: int = 8,
    out=None,
    overwrite: bool = False,
    device: str = "auto",
    scheduler=None,
    memory_budget=None,
    cancel: CancelToken | None = None,
    identification=None,
) -> Generator[Progress, None, XRFResult]:
    """Elemental quantity and confidence maps of an MA-XRF cube (generator yielding Progress).

    Parameters
    ----------
    cube : array-like or path
        Counts, shape (y, x, energy) (or with the energy axis elsewhere: ``energy_axis``); numpy,
        dask, zarr / OME-Zarr path, or HDF5 / Lispix / Bruker .bcf through :func:`napari_mbdl.xrf.io.read_cube`.
    energy : (offset_keV, gain_keV), array, dict or EnergyCalibration, optional
        Energy calibration; default: from the cube's metadata.
    elements : "auto" or sequence of str
        ``"auto"`` detects the elements (FRI pulses matched to xraylib lines); a list fixes them.
    add, exclude : sequence of str
        Elements to add to, or keep out of, the automatic detection.
    method : {"fri", "linear"}
        Per-pixel fit (see :mod:`napari_mbdl.xrf.maps`).
    detector : DetectorResponse, optional
        Peak widths ``FWHM(E)^2 = noise^2 + fano * E``; default: a silicon drift detector.
    tube_kv : float, optional
        Excitation voltage (default 50 kV, or the top of the energy axis when higher).
    threshold : float
        Detection significance (standard errors).
    energy_axis : int, optional
        Axis of the spectra (default: from the axis metadata, else the last).
    superpixel : int
        Side of the pixel blocks in which the ``fri`` method re-checks which elements are present.
    out : path, optional
        Write the maps as OME-Zarr (axes c, y, x; channel names in the metadata) instead of memory.
    identification : Identification, optional
        Reuse a detection (e.g. after the user picked elements in the widget).

    Returns
    -------
    XRFResult
    """
    from napari_mbdl.xrf.maps import METHODS, build_model
    from napari_mbdl.xrf.spectral import continuum

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    cancel = cancel or CancelToken()
    detector = detector or DetectorResponse()
    labeled, calibration = prepare_cube(cube, energy, energy_axis)
    n_y, n_x, n_channels = labeled.shape
    detection = yield from detect_steps(
        labeled, calibration, elements, add=add, exclude=exclude, detector=detector, tube_kv=tube_kv,
        threshold=threshold, refine_calibration=(method == "fri"), cancel=cancel, memory_budget=memory_budget,
        identification=identification,
    )
    sum_spectrum, identification, warnings = detection.sum_spectrum, detection.identification, detection.warnings
    cancel.raise_if_cancelled()

    refined = identification.calibration
    background = continuum(sum_spectrum, detector.sigma(refined.energies(n_channels)) / refined.gain)
    model = build_model(identification, n_channels, detector, sum_spectrum, background, method=method, superpixel=superpixel)
    op = Operation(
        key=model.key(),
        make=functools.partial(_fit_function_for, model),
        halo=(0, 0),
        out_core_shape=(model.n_outputs,),
        out_dtype="float32",
        bytes_per_voxel=14.0,
        uses_torch=False,
        min_tile=(superpixel, superpixel),
    )
    names = [f"{e} quantity" for e in model.elements] + [f"{e} confidence" for e in model.elements]
    attrs = {
        "xrf": {
            "channels": names,
            "elements": list(model.elements),
            "method": method,
            "calibration": refined.as_metadata(),
            "main_families": [model.family_labels[c] for c in model.main_columns],
        }
    }
    run = yield from run_blocks(
        op, labeled, n_tiled=2, axes="yxc", tile=_tile_for((n_y, n_x), n_channels, superpixel), out=out,
        out_core_axes="c", out_core_position="first", overwrite=overwrite, device=device, scheduler=scheduler,
        memory_budget=memory_budget, cancel=cancel, stage="elemental maps", attrs=attrs, max_batch=2,
    )
    array = run.array
    n = len(model.elements)
    maps = {element: (array[i], array[n + i]) for i, element in enumerate(model.elements)}
    return XRFResult(
        maps=maps,
        elements=list(model.elements),
        identification=identification,
        sum_spectrum=sum_spectrum,
        energies=refined.energies(n_channels),
        calibration=refined,
        run=run,
        method=method,
        warnings=warnings,
    )


def xrf_maps(cube, energy=None, elements="auto", method: str = "fri", **options) -> dict[str, tuple[Any, Any]]:
    """Elemental maps of an MA-XRF cube: ``{element: (quantity, confidence)}``.

    Parameters
    ----------
    cube : array-like or path
        Counts (y, x, energy).
    energy : (offset_keV, gain_keV), array or EnergyCalibration, optional
        Calibration; default: from the cube's metadata.
    elements : "auto" or sequence of str
        Detect automatically, or map exactly these elements.
    method : {"fri", "linear"}
    **options
        Passed to :func:`xrf_maps_steps` (``add``, ``exclude``, ``out``, ``tube_kv``, ...).

    Returns
    -------
    dict
        Element symbol -> (quantity map in counts of its main line family, confidence map in
        standard errors).

    Examples
    --------
    >>> from napari_mbdl.xrf.simulate import simulate_painting
    >>> scan = simulate_painting((16, 16), 1024)
    >>> maps = xrf_maps(scan.cube, energy=(0.0, scan.calibration.gain))
    >>> sorted(maps)[:3]
    ['Ca', 'Co', 'Cu']
    """
    result = run_steps(xrf_maps_steps(cube, energy, elements, method=method, **options))
    return result.maps
