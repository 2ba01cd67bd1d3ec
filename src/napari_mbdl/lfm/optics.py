"""Light-field microscope optics and its wave-optics point-spread function (Broxton et al. 2013).

The PSF of a light-field microscope (microlens array, MLA, at the native image plane of a telecentric
widefield microscope, camera one microlens focal length behind it) is computed in three steps for a point
source at each voxel position of one lenslet period and each depth:

1. the field at the native image plane from the Debye integral of the objective,
   ``U(rho, z) = int_0^alpha sqrt(cos t) exp(i k z cos t) J0(k rho sin t) sin t dt`` with ``k = 2 pi n / lambda``
   and ``rho`` the lateral distance (object units) from the source;
2. multiplied by the transmittance of the microlens array (a quadratic phase ``exp(-i k0 |x - c|^2 / 2 f)`` per
   lenslet, square apertures);
3. propagated over the microlens focal length to the sensor with the Fresnel transfer function; the sensor
   records ``|U|^2`` integrated over each pixel (the field is computed on a grid ``oversample`` times finer).

Because the array is periodic, a source moved laterally by one lenslet (in object space: pitch / M) moves its
light field by exactly one lenslet on the sensor, so only ``voxels_per_lenslet**2`` sources per depth are needed;
:class:`~napari_mbdl.lfm.operator.LFMOperator` builds the whole forward model from them.

This module is numpy/scipy only (no torch).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_mbdl.engine.errors import InputError

PSF_FORMAT = "napari-mbdl/lfm-psf/v1"


@dataclass(frozen=True)
class LFOptics:
    """Optics of a light-field microscope, in micrometres.

    Attributes
    ----------
    magnification : float
        Objective (+ tube lens) magnification ``M``.
    na : float
        Numerical aperture of the objective.
    n : float
        Refractive index of the immersion medium / sample.
    wavelength_um : float
        Emission wavelength.
    lenslet_pitch_um : float
        Microlens pitch (on the MLA, i.e. image side).
    mla_focal_um : float
        Microlens focal length; the camera sits this far behind the MLA.  Matched f-numbers
        (``f / pitch == M / (2 NA)``) fill the lenslet images without overlap.
    pixel_size_um : float
        Camera pixel size.  ``lenslet_pitch_um / pixel_size_um`` must equal ``pixels_per_lenslet``
        (rectify raw frames first, see :mod:`napari_mbdl.lfm.calibration`).
    pixels_per_lenslet : int
        Sensor pixels behind one lenslet, per side (odd ``N``).
    voxels_per_lenslet : int
        Lateral volume samples per lenslet, per side (odd ``s``); voxel size is ``pitch / (M s)``.
    depths_um : tuple of float
        Depths of the volume planes relative to the native object (focal) plane.
    psf_lenslets : int
        Lateral extent of the PSF in lenslets (odd); must cover the blur of the deepest plane.
    oversample : int
        Field samples per sensor pixel (per side) used in the wave-optics computation (odd).
    """

    magnification: float = 20.0
    na: float = 0.5
    n: float = 1.33
    wavelength_um: float = 0.525
    lenslet_pitch_um: float = 150.0
    mla_focal_um: float = 3000.0
    pixel_size_um: float = 10.0
    pixels_per_lenslet: int = 15
    voxels_per_lenslet: int = 5
    depths_um: tuple = (-30.0, -22.5, -15.0, -7.5, 0.0, 7.5, 15.0, 22.5, 30.0)
    psf_lenslets: int = 7
    oversample: int = 3

    def __post_init__(self):
        object.__setattr__(self, "depths_um", tuple(float(d) for d in self.depths_um))
        self.validate()

    # -- derived quantities -------------------------------------------------------------------------
    @property
    def n_depths(self) -> int:
        return len(self.depths_um)

    @property
    def voxel_size_um(self) -> tuple[float, float, float]:
        """(z, y, x) voxel size in object space; z is the depth step (1 for a single plane)."""
        lateral = self.lenslet_pitch_um / (self.magnification * self.voxels_per_lenslet)
        dz = float(np.median(np.diff(self.depths_um))) if self.n_depths > 1 else 1.0
        return (abs(dz), lateral, lateral)

    def validate(self) -> None:
        """Raise :class:`InputError` for optics that cannot describe a light-field microscope."""
        positive = ("magnification", "na", "n", "wavelength_um", "lenslet_pitch_um", "mla_focal_um", "pixel_size_um")
        for name in positive:
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise InputError(f"optics: {name} must be a positive number, got {value!r}")
        if self.na >= self.n:
            raise InputError(f"optics: NA ({self.na}) must be smaller than the immersion index n ({self.n})")
        for name in ("pixels_per_lenslet", "voxels_per_lenslet", "psf_lenslets", "oversample"):
            value = getattr(self, name)
            if int(value) != value or value < 1 or value % 2 == 0:
                raise InputError(f"optics: {name} must be a positive odd integer, got {value!r}")
        if self.voxels_per_lenslet > self.pixels_per_lenslet:
            raise InputError("optics: voxels_per_lenslet cannot exceed pixels_per_lenslet")
        ratio = self.lenslet_pitch_um / self.pixel_size_um
        if abs(ratio - self.pixels_per_lenslet) > 1e-3 * self.pixels_per_lenslet:
            raise InputError(
                f"optics: lenslet pitch / pixel size = {ratio:.3f} but pixels_per_lenslet = {self.pixels_per_lenslet}; "
                "rectify the light field to an integer number of pixels per lenslet"
            )
        if not self.depths_um or not all(np.isfinite(self.depths_um)):
            raise InputError("optics: depths_um must be a non-empty list of finite numbers")
        if list(self.depths_um) != sorted(set(self.depths_um)):
            raise InputError("optics: depths_um must be strictly increasing")

    # -- (de)serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["depths_um"] = list(self.depths_um)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> LFOptics:
        """Build from a mapping (e.g. a YAML file); ``depths_um`` may be a list or ``{start, stop, step}``."""
        if not isinstance(values, dict):
            raise InputError("optics: expected a mapping of optical parameters")
        values = dict(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"optics: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        depths = values.get("depths_um")
        if isinstance(depths, dict):
            try:
                start, stop, step = float(depths["start"]), float(depths["stop"]), float(depths["step"])
            except (KeyError, TypeError, ValueError):
                raise InputError("optics: depths_um as a mapping needs numeric start, stop and step") from None
            if step <= 0 or stop < start:
                raise InputError("optics: depths_um needs step > 0 and stop >= start")
            values["depths_um"] = tuple(np.round(np.arange(start, stop + step / 2, step), 6))
        try:
            return cls(**values)
        except TypeError as error:
            raise InputError(f"optics: {error}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> LFOptics:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise InputError(f"optics file not found: {path}")
        with open(path) as handle:
            values = yaml.safe_load(handle)
        if isinstance(values, dict) and "optics" in values and isinstance(values["optics"], dict):
            values = values["optics"]
        return cls.from_dict(values)

    def key(self) -> str:
        """A short hash identifying these optics (PSF cache keys, operation keys)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass
class LFPsf:
    """A computed light-field PSF.

    Attributes
    ----------
    psf : ndarray, shape (Z, s, s, P*N, P*N), float32
        ``psf[z, i, j]`` is the sensor image (P x P lenslets of N x N pixels, the source's lenslet in the
        middle) of a point source at depth ``z`` and sub-lenslet voxel offset ``(i, j)``.
    optics : LFOptics
        The optics it was computed for.
    metadata : dict
        Normalisation and provenance (``relative_energy_per_depth``: light inside the PSF window per depth).
    """

    psf: np.ndarray
    optics: LFOptics
    metadata: dict = field(default_factory=dict)

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write to a zarr group (array ``psf`` + the optics and metadata in its attributes)."""
        import zarr

        from napari_mbdl.engine.store import clear_partial, commit_store

        path = Path(path)
        if path.exists():
            if not overwrite:
                from napari_mbdl.engine.errors import OutputExistsError

                raise OutputExistsError(f"{path} exists; pass overwrite=True to replace it")
            if not _is_psf_store(path):
                raise InputError(f"refusing to replace {path}: it is not a light-field PSF written by napari-mbdl")
        tmp = path.with_name(path.name + ".partial")
        clear_partial(tmp)
        group = zarr.open_group(str(tmp), mode="w")
        arr = group.create_array("psf", shape=self.psf.shape, dtype="float32", chunks=(1, 1, 1, *self.psf.shape[3:]))
        arr[...] = self.psf.astype(np.float32)
        group.attrs.update({"format": PSF_FORMAT, "optics": self.optics.to_dict(), "metadata": _jsonable(self.metadata)})
        commit_store(tmp, path)  # the old PSF goes only once the new one is complete
        return path

    @classmethod
    def load(cls, path: str | Path) -> LFPsf:
        """Read a PSF written by :meth:`save` (``mbdl lfm-psf``)."""
        import zarr

        path = Path(path)
        if not path.exists():
            raise InputError(f"PSF file not found: {path}")
        try:
            group = zarr.open_group(str(path), mode="r")
            attrs = dict(group.attrs)
            psf = np.asarray(group["psf"][...], dtype=np.float32)
        except Exception as error:  # any unreadable store is the user's file problem
            raise InputError(f"{path} is not a light-field PSF written by mbdl lfm-psf ({error})") from None
        if attrs.get("format") != PSF_FORMAT:
            raise InputError(f"{path} is not a light-field PSF written by mbdl lfm-psf (format {attrs.get('format')!r})")
        optics = LFOptics.from_dict(attrs["optics"])
        out = cls(psf=psf, optics=optics, metadata=dict(attrs.get("metadata", {})))
        out.check()
        return out

    def check(self) -> None:
        o = self.optics
        expected = (o.n_depths, o.voxels_per_lenslet, o.voxels_per_lenslet,
                    o.psf_lenslets * o.pixels_per_lenslet, o.psf_lenslets * o.pixels_per_lenslet)
        if self.psf.shape != expected:
            raise InputError(f"PSF array has shape {self.psf.shape} but its optics need {expected}")
        if not np.all(np.isfinite(self.psf)):
            raise InputError("PSF contains NaN or infinite values")


def _is_psf_store(path: Path) -> bool:
    """True only for a zarr group that holds a PSF of ours (never replace anything else)."""
    if not path.is_dir():
        return False
    for name in ("zarr.json", ".zattrs"):
        meta = path / name
        if meta.is_file():
            try:
                text = meta.read_text()
            except OSError:
                return False
            return PSF_FORMAT in text
    return False


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


# ---------------------------------------------------------------------------------------------------
# wave optics
# ---------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)  # an eigenvalue problem: worth computing once


def debye_radial_field(rho_um: np.ndarray, depth_um: float, optics: LFOptics, n_angles: int = 256) -> np.ndarray:
    """Field of the objective at the native image plane vs lateral distance (object units) from the source.

    Debye integral with sine-condition apodisation ``sqrt(cos theta)``:
    ``U(rho, z) = int_0^alpha sqrt(cos t) exp(i k z cos t) J0(k rho sin t) sin t dt``, ``k = 2 pi n / lambda``.

    Parameters
    ----------
    rho_um : ndarray
        Lateral distances in object space (micrometres).
    depth_um : float
        Source depth relative to the native object plane.
    optics : LFOptics
    n_angles : int
        Gauss-Legendre nodes over the aperture angle.

    Returns
    -------
    ndarray of complex128, same shape as ``rho_um``.
    """
    from scipy.special import j0

    alpha = np.arcsin(optics.na / optics.n)
    k = 2 * np.pi * optics.n / optics.wavelength_um
    nodes, weights = _gauss_legendre(n_angles)
    theta = 0.5 * alpha * (nodes + 1)
    weights = 0.5 * alpha * weights
    integrand_angle = np.sqrt(np.cos(theta)) * np.exp(1j * k * depth_um * np.cos(theta)) * np.sin(theta) * weights
    rho = np.asarray(rho_um, dtype=np.float64)
    flat = rho.reshape(-1)
    out = np.empty(flat.shape, dtype=np.complex128)
    step = max(1, 2_000_000 // n_angles)  # bound memory of the (rho, theta) table
    for start in range(0, flat.size, step):
        part = flat[start:start + step]
        out[start:start + step] = j0(k * part[:, None] * np.sin(theta)[None, :]) @ integrand_angle
    return out.reshape(rho.shape)


def _mla_transmittance(optics: LFOptics, coords_um: np.ndarray) -> np.ndarray:
    """Microlens array transmittance on a square grid of image-plane coordinates (1-D, both axes alike)."""
    k0 = 2 * np.pi / optics.wavelength_um
    pitch = optics.lenslet_pitch_um
    local = coords_um - np.round(coords_um / pitch) * pitch  # position relative to the lenslet centre
    phase_1d = np.exp(-1j * k0 * local**2 / (2 * optics.mla_focal_um))
    return phase_1d[:, None] * phase_1d[None, :]  # separable: |x - c|^2 = dx^2 + dy^2, square apertures


def compute_psf(optics: LFOptics | None = None, progress=None) -> LFPsf:
    """Wave-optics light-field PSF for every depth and sub-lenslet voxel offset (Broxton et al. 2013).

    Parameters
    ----------
    optics : LFOptics, optional
        Defaults to ``LFOptics()`` (20x/0.5 water, 150 um / f 3 mm MLA, 15 x 15 pixels per lenslet,
        5 x 5 voxels per lenslet, 9 depths over +-30 um): computed in a few seconds on one CPU core.
    progress : callable, optional
        Called as ``progress(done, total)`` after each depth.

    Returns
    -------
    LFPsf
        ``psf`` of shape (Z, s, s, P*N, P*N), normalised so that the mean over voxels of the light a voxel sends
        to the sensor window is 1.
    """
    from napari_mbdl.engine.progress import run_steps

    return run_steps(psf_steps(optics), None if progress is None else lambda event: progress(event.done, event.total))


def psf_steps(optics: LFOptics | None = None):
    """Generator form of :func:`compute_psf`: yields a :class:`~napari_mbdl.engine.Progress` per depth."""
    from scipy import fft as sp_fft

    from napari_mbdl.engine.progress import Progress

    optics = optics or LFOptics()
    o = optics
    N, s, P, os_ = o.pixels_per_lenslet, o.voxels_per_lenslet, o.psf_lenslets, o.oversample
    pitch, M = o.lenslet_pitch_um, o.magnification
    n_grid = P * N * os_  # odd, so one sample sits on the centre of the middle lenslet
    dx = o.pixel_size_um / os_
    coords = (np.arange(n_grid) - (n_grid - 1) / 2) * dx
    mla = _mla_transmittance(o, coords)
    # Fresnel transfer function on a grid padded by a quarter window per side: over one focal length the field
    # spreads by about one lenslet, so this keeps wrap-around out of the window at a fraction of 2x padding's cost.
    n_pad = sp_fft.next_fast_len(int(np.ceil(1.5 * n_grid)) + 2)
    freqs = np.fft.fftfreq(n_pad, d=dx)
    f2 = freqs[:, None] ** 2 + freqs[None, :] ** 2
    transfer = np.exp(-1j * np.pi * o.wavelength_um * o.mla_focal_um * f2).astype(np.complex64)
    # Voxel sub-lenslet offsets (image-plane units), the centre voxel on the lenslet centre.
    offsets = ((np.arange(s) + 0.5) / s - 0.5) * pitch
    # Radial table for the Debye field: object-space distances up to the window corner from any offset.
    rho_max = (np.sqrt(2) * (coords[-1] + pitch / 2)) / M + 1.0
    rho_table = np.linspace(0.0, rho_max, int(np.ceil(rho_max / (dx / M / 4))) + 2)
    psf = np.zeros((o.n_depths, s, s, P * N, P * N), dtype=np.float32)
    lo = (n_pad - n_grid) // 2
    for zi, depth in enumerate(o.depths_um):
        table = debye_radial_field(rho_table, depth, o)
        for i, oy in enumerate(offsets):
            for j, ox in enumerate(offsets):
                rho = np.sqrt((coords[:, None] - oy) ** 2 + (coords[None, :] - ox) ** 2) / M
                field_nip = np.interp(rho, rho_table, table.real) + 1j * np.interp(rho, rho_table, table.imag)
                padded = np.zeros((n_pad, n_pad), dtype=np.complex64)
                padded[lo:lo + n_grid, lo:lo + n_grid] = field_nip * mla
                sensor = sp_fft.ifft2(sp_fft.fft2(padded) * transfer)[lo:lo + n_grid, lo:lo + n_grid]
                intensity = np.abs(sensor) ** 2
                psf[zi, i, j] = intensity.reshape(P * N, os_, P * N, os_).sum(axis=(1, 3))
        yield Progress("lfm psf", zi + 1, o.n_depths, f"depth {depth:g} um")
    # One global scale (not per voxel), so light lost outside a too-small PSF window shows in the metadata.
    column_sums = psf.sum(axis=(3, 4))
    psf /= float(column_sums.mean())
    relative = (column_sums / column_sums.max()).mean(axis=(1, 2))
    metadata = {
        "normalisation": "mean voxel column sum = 1",
        "relative_energy_per_depth": [float(c) for c in relative],
        "method": "Broxton 2013: Debye NIP field x MLA phase, Fresnel transfer function over f_mla",
        "optics_key": o.key(),
    }
    return LFPsf(psf=psf, optics=o, metadata=metadata)


def cached_psf_steps(optics: LFOptics, cache_dir: str | Path | None = None):
    """Steps generator: the PSF of ``optics`` from ``cache_dir/lfm-psf-<key>.zarr``, or computed (and cached)."""
    if cache_dir is None:
        return (yield from psf_steps(optics))
    path = Path(cache_dir) / f"lfm-psf-{optics.key()}.zarr"
    if path.exists():
        try:
            cached = LFPsf.load(path)
        except InputError:
            cached = None
        if cached is not None and cached.optics == optics:
            return cached
    psf = yield from psf_steps(optics)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not _is_psf_store(path):
        return psf  # never replace a foreign folder; just do not cache
    psf.save(path, overwrite=True)
    return psf


def load_or_compute_psf(optics: LFOptics, cache_dir: str | Path | None = None) -> LFPsf:
    """Compute the PSF of ``optics``, or read it from ``cache_dir/lfm-psf-<key>.zarr`` if computed before."""
    from napari_mbdl.engine.progress import run_steps

    return run_steps(cached_psf_steps(optics, cache_dir))


def _olaf_number(value, key: str) -> float:
    """A number from an oLaF/pyolaf YAML value, which may be written as a product such as ``525*1e-3``."""
    if isinstance(value, (int, float)):
        return float(value)
    try:
        result = 1.0
        for factor in str(value).split("*"):
            result *= float(factor.strip())
        return result
    except ValueError:
        raise InputError(f"oLaF config: {key} = {value!r} is not a number") from None


def optics_from_olaf_config(path: str | Path, depths_um, voxels_per_lenslet: int = 5, psf_lenslets: int = 7,
                            pixels_per_lenslet: int | None = None) -> LFOptics:
    """Optics from an oLaF / pyolaf camera YAML (keys ``M, NA, n, WaveLength, lensPitch, pixelPitch, fm, ...``).

    Lengths in that file are micrometres.  Only the original LFM design (``plenoptic: 1``, regular grid) is
    supported.  The raw pixel size is replaced by ``lensPitch / N``: frames are rectified onto ``N`` pixels per
    lenslet (``N`` = the odd integer nearest ``lensPitch / pixelPitch`` unless given); calibrate the grid on the
    white image of the same camera (:func:`napari_mbdl.lfm.calibration.calibrate_lenslet_grid`).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"oLaF config file not found: {path}")
    with open(path) as handle:
        camera = yaml.safe_load(handle)
    if not isinstance(camera, dict):
        raise InputError(f"{path} is not an oLaF camera configuration (expected a YAML mapping)")
    missing = [k for k in ("M", "NA", "WaveLength", "lensPitch", "pixelPitch", "fm") if k not in camera]
    if missing:
        raise InputError(f"oLaF config {path.name}: missing {', '.join(missing)}")
    if str(camera.get("gridType", "reg")).lower() != "reg":
        raise InputError("oLaF config: only regular (square) lenslet grids are supported, not hexagonal")
    if int(_olaf_number(camera.get("plenoptic", 1), "plenoptic")) != 1:
        raise InputError("oLaF config: only the original LFM design (plenoptic: 1) is supported")
    pitch = _olaf_number(camera["lensPitch"], "lensPitch")
    wavelength = _olaf_number(camera["WaveLength"], "WaveLength")
    if not 0.1 < wavelength < 5:
        raise InputError(f"oLaF config: WaveLength {wavelength} does not look like micrometres (e.g. 525*1e-3)")
    ratio = pitch / _olaf_number(camera["pixelPitch"], "pixelPitch")
    if pixels_per_lenslet is None:
        pixels_per_lenslet = int(round(ratio))
        if pixels_per_lenslet % 2 == 0:
            pixels_per_lenslet += 1 if ratio >= pixels_per_lenslet else -1
    fm = camera["fm"]
    if isinstance(fm, list):
        raise InputError("oLaF config: multi-focus lenslet arrays (a list of fm) are not supported")
    return LFOptics(
        magnification=_olaf_number(camera["M"], "M"), na=_olaf_number(camera["NA"], "NA"),
        n=_olaf_number(camera.get("n", 1.0), "n"), wavelength_um=wavelength, lenslet_pitch_um=pitch,
        mla_focal_um=_olaf_number(fm, "fm"), pixel_size_um=pitch / pixels_per_lenslet,
        pixels_per_lenslet=int(pixels_per_lenslet), voxels_per_lenslet=int(voxels_per_lenslet),
        depths_um=parse_depths(depths_um) if isinstance(depths_um, str) else tuple(depths_um),
        psf_lenslets=int(psf_lenslets),
    )


def default_cache_dir() -> Path:
    """Per-user cache folder for computed PSFs."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "napari-mbdl" / "lfm"


def parse_depths(text: str | Sequence[float]) -> tuple[float, ...]:
    """Depths from ``"start:stop:step"`` or ``"a,b,c"`` or a sequence."""
    if not isinstance(text, str):
        return tuple(float(v) for v in text)
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if step <= 0:
                raise ValueError
            return tuple(np.round(np.arange(start, stop + step / 2, step), 6))
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"depths: expected 'start:stop:step' or comma-separated numbers, got {text!r}") from None
