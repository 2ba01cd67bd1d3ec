"""Simulated paired two-photon / light-field data with known neurons, traces and registration.

The simulated world is a volume of cell bodies (soft ellipsoids).  The two-photon (2P) stack
images their structure finely (small voxels, a small Gaussian PSF, a little noise) in its own
frame, which is rotated about the optical axis and shifted with respect to the LFM volume
frame.  The light-field series images the same cells, each glowing with its own spike-driven
calcium trace, through the light-field forward model ``H`` with Poisson-Gaussian camera noise.

Coordinates: voxel index ``i`` of an axis with ``N`` voxels of size ``d`` sits at the physical
position ``(i - (N - 1) / 2) * d`` micrometres (volumes are centred on the optical axis), and a
point ``p2`` of the 2P frame sits at ``R p2 + t`` in the LFM frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_mbdl.engine.errors import InputError


@dataclass
class FusionSample:
    """Everything one simulation produces; the ``true_*`` fields are kept for tests and benchmarks.

    Attributes
    ----------
    two_photon : ndarray, shape (z, y, x)
        Structural 2P stack, float32.
    two_photon_voxel_um : tuple of float
        2P voxel size ``(dz, dy, dx)`` in micrometres.
    light_fields : ndarray, shape (t, v, u)
        Light-field time series (photo-electrons), float32; empty until
        :func:`simulate_light_fields` has run.
    volume_shape : tuple of int
        LFM volume grid ``(z, y, x)``.
    lfm_voxel_um : tuple of float
        LFM volume voxel size ``(dz, dy, dx)`` in micrometres.
    frame_rate_hz : float
        LF frames per second.
    true_centers_um : ndarray, shape (n, 3)
        Cell centres in the LFM frame (micrometres).
    true_labels : ndarray, shape like ``two_photon``
        Cell bodies in the 2P stack (0 = background, ``k + 1`` = cell ``k``).
    true_footprints : ndarray, shape (n, z, y, x)
        Fraction of each LFM voxel filled by each cell.
    true_spikes, true_calcium : ndarray, shape (n, t)
        Spike counts per frame and the calcium dF/F they cause.
    true_fluorescence : ndarray, shape (n, t)
        Brightness of each cell per frame: ``F0 (1 + calcium)``.
    true_transform : ndarray, shape (4, 4)
        Homogeneous map from 2P voxel indices to LFM voxel indices.
    rotation_deg, shift_um : float, tuple
        The rigid motion from the 2P frame to the LFM frame.
    """

    two_photon: np.ndarray
    two_photon_voxel_um: tuple[float, float, float]
    volume_shape: tuple[int, int, int]
    lfm_voxel_um: tuple[float, float, float]
    frame_rate_hz: float
    true_centers_um: np.ndarray
    true_labels: np.ndarray
    true_footprints: np.ndarray
    true_spikes: np.ndarray
    true_calcium: np.ndarray
    true_fluorescence: np.ndarray
    true_transform: np.ndarray
    rotation_deg: float
    shift_um: tuple[float, float, float]
    light_fields: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))
    background_volume: np.ndarray | None = None

    @property
    def n_neurons(self) -> int:
        return int(len(self.true_centers_um))


def axis_positions_um(n: int, voxel_um: float) -> np.ndarray:
    """Physical positions of the voxel centres of an axis centred on zero."""
    return (np.arange(n) - (n - 1) / 2.0) * voxel_um


def rotation_about_z(angle_deg: float) -> np.ndarray:
    """3x3 rotation in the (y, x) plane, axes ordered (z, y, x)."""
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def voxel_transform(
    rotation: np.ndarray,
    shift_um,
    source_shape,
    source_voxel_um,
    target_shape,
    target_voxel_um,
) -> np.ndarray:
    """Homogeneous 4x4 matrix from source voxel indices to target voxel indices.

    The physical map is ``p_target = rotation @ p_source + shift_um`` with both grids centred.
    """
    d_src = np.diag(np.asarray(source_voxel_um, float))
    d_tgt_inv = np.diag(1.0 / np.asarray(target_voxel_um, float))
    c_src = (np.asarray(source_shape, float) - 1) / 2.0
    c_tgt = (np.asarray(target_shape, float) - 1) / 2.0
    linear = d_tgt_inv @ rotation @ d_src
    offset = d_tgt_inv @ (np.asarray(shift_um, float) - rotation @ d_src @ c_src) + c_tgt
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    matrix[:3, 3] = offset
    return matrix


def _soft_ball(dist: np.ndarray, edge_um: float) -> np.ndarray:
    """1 inside, 0 outside, a smooth step of width ``edge_um`` at normalised distance 1."""
    return 1.0 / (1.0 + np.exp(np.clip((dist - 1.0) / edge_um, -50, 50)))


def _place_cells(rng, n, extent_um, radii_um, min_distance_um, max_tries=20000):
    centres = []
    tries = 0
    while len(centres) < n and tries < max_tries:
        tries += 1
        candidate = (rng.random(3) - 0.5) * 2 * extent_um
        if all(np.linalg.norm((candidate - c) / (radii_um / radii_um[2])) >= min_distance_um for c in centres):
            centres.append(candidate)
    if len(centres) < n:
        raise InputError(f"only {len(centres)} of {n} cells fit in the volume; ask for fewer neurons")
    return np.array(centres)


def calcium_from_spikes(spikes: np.ndarray, frame_rate_hz: float, decay_s: float, amplitude: float) -> np.ndarray:
    """dF/F of a calcium indicator: spikes convolved with a fast-rise, exponential-decay kernel."""
    t = np.arange(int(np.ceil(6 * decay_s * frame_rate_hz)) + 1) / frame_rate_hz
    rise_s = 0.05
    kernel = np.exp(-t / decay_s) - np.exp(-t / rise_s)
    kernel = amplitude * kernel / kernel.max()
    out = np.zeros(spikes.shape, np.float64)
    for k in range(spikes.shape[0]):
        out[k] = np.convolve(spikes[k], kernel)[: spikes.shape[1]]
    return out


def simulate_structure(
    volume_shape=(9, 48, 48),
    lfm_voxel_um=(4.0, 3.0, 3.0),
    n_neurons: int = 24,
    n_frames: int = 200,
    frame_rate_hz: float = 10.0,
    upsample=(2, 2, 2),
    cell_radius_um: tuple[float, float, float] | None = None,
    rotation_deg: float = 4.0,
    shift_um=(2.0, 4.5, -3.5),
    spike_rate_hz: float = 0.3,
    calcium_decay_s: float = 0.8,
    spike_amplitude: float = 0.8,
    two_photon_noise: float = 0.02,
    seed: int = 0,
) -> FusionSample:
    """Simulate the cells, their activity and the 2P stack (the light fields come later).

    Parameters
    ----------
    volume_shape : tuple of int
        LFM volume grid ``(z, y, x)``.
    lfm_voxel_um : tuple of float
        LFM volume voxel size in micrometres.
    n_neurons, n_frames : int
        Number of cells and of light-field frames.
    frame_rate_hz : float
        Light-field frame rate.
    upsample : tuple of int
        2P voxels per LFM voxel along each axis (the 2P stack is that much finer).
    cell_radius_um : tuple of float, optional
        Cell semi-axes ``(rz, ry, rx)``; default 1.6 LFM voxels laterally, at least one voxel
        axially.
    rotation_deg, shift_um : float, tuple
        Rigid motion of the 2P frame relative to the LFM frame.
    spike_rate_hz, calcium_decay_s, spike_amplitude : float
        Poisson spiking rate, indicator decay time and dF/F per spike.
    two_photon_noise : float
        Gaussian noise of the 2P stack, relative to a cell's brightness.
    seed : int
        Seed of the random generator (the whole sample is reproducible).

    Returns
    -------
    FusionSample
        With an empty ``light_fields``; see :func:`simulate_light_fields`.
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    volume_shape = tuple(int(s) for s in volume_shape)
    lfm_voxel_um = np.asarray(lfm_voxel_um, float)
    if cell_radius_um is None:
        r_xy = 1.6 * lfm_voxel_um[1]
        cell_radius_um = (max(r_xy, 1.0 * lfm_voxel_um[0]), r_xy, r_xy)
    radii = np.asarray(cell_radius_um, float)
    upsample = np.asarray(upsample, int)
    tp_voxel = lfm_voxel_um / upsample
    tp_shape = tuple(int(s) for s in np.asarray(volume_shape) * upsample)

    # Cells sit where both microscopes see them: inside the LFM volume, away from its border by
    # one radius plus the 2P frame's shift, so they stay inside the rotated 2P field too.
    half_extent = (np.asarray(volume_shape) - 1) / 2.0 * lfm_voxel_um
    margin = radii + np.abs(np.asarray(shift_um, float)) + np.array([0.0, 1.0, 1.0]) * lfm_voxel_um[1]
    margin[0] = min(margin[0], 0.35 * half_extent[0])  # thin volumes: cells may touch top/bottom
    extent = np.maximum(half_extent - margin, 0.5 * lfm_voxel_um)
    centres = _place_cells(rng, n_neurons, extent, radii, min_distance_um=2.3 * radii[2])
    order = np.lexsort((centres[:, 2], centres[:, 1], centres[:, 0]))
    centres = centres[order]

    rotation = rotation_about_z(rotation_deg)
    brightness = rng.uniform(0.6, 1.4, n_neurons)
    edge = 0.12

    # --- the 2P stack, rendered in its own frame ------------------------------------------
    zz, yy, xx = [axis_positions_um(n, d) for n, d in zip(tp_shape, tp_voxel)]
    grid = np.stack(np.meshgrid(zz, yy, xx, indexing="ij"), axis=-1)  # (z, y, x, 3) in 2P frame
    in_lfm = grid @ rotation.T + np.asarray(shift_um, float)  # the same points in the LFM frame
    structure = np.zeros(tp_shape, np.float64)
    labels = np.zeros(tp_shape, np.int32)
    best = np.zeros(tp_shape, np.float64)
    for k, c in enumerate(centres):
        d = np.sqrt((((in_lfm - c) / radii) ** 2).sum(-1))
        ball = _soft_ball(d, edge)
        # A dimmer nucleus, as in cytosolic indicators, gives the 2P image texture.
        ball = ball * (1.0 - 0.35 * _soft_ball(d / 0.5, edge))
        structure += brightness[k] * ball
        inside = (d < 1.0) & (ball > best)
        labels[inside] = k + 1
        best = np.where(inside, ball, best)
    two_photon_psf_um = np.array([1.2, 0.35, 0.35])
    structure = ndimage.gaussian_filter(structure, two_photon_psf_um / tp_voxel)
    structure += 0.05 + two_photon_noise * rng.standard_normal(tp_shape)

    # --- footprints on the LFM grid: supersampled occupancy ----------------------------------
    sup = 3
    sub = (np.arange(sup) - (sup - 1) / 2.0) / sup
    axes = [
        (axis_positions_um(n, d)[:, None] + sub[None, :] * d).ravel()
        for n, d in zip(volume_shape, lfm_voxel_um)
    ]
    fine = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    footprints = np.zeros((n_neurons, *volume_shape), np.float32)
    for k, c in enumerate(centres):
        d = np.sqrt((((fine - c) / radii) ** 2).sum(-1))
        occ = _soft_ball(d, edge)
        occ = occ.reshape(volume_shape[0], sup, volume_shape[1], sup, volume_shape[2], sup).mean(axis=(1, 3, 5))
        footprints[k] = occ

    # --- activity ----------------------------------------------------------------------------
    p_spike = spike_rate_hz / frame_rate_hz
    spikes = rng.poisson(p_spike, (n_neurons, n_frames)).astype(np.float64)
    for k in range(n_neurons):  # every cell fires at least twice, so its trace has a shape to recover
        while spikes[k].sum() < 2:
            spikes[k, rng.integers(0, n_frames)] += 1
    calcium = calcium_from_spikes(spikes, frame_rate_hz, calcium_decay_s, spike_amplitude)
    fluorescence = brightness[:, None] * (1.0 + calcium)

    transform = voxel_transform(rotation, shift_um, tp_shape, tp_voxel, volume_shape, lfm_voxel_um)
    return FusionSample(
        two_photon=structure.astype(np.float32),
        two_photon_voxel_um=tuple(float(v) for v in tp_voxel),
        volume_shape=volume_shape,
        lfm_voxel_um=tuple(float(v) for v in lfm_voxel_um),
        frame_rate_hz=float(frame_rate_hz),
        true_centers_um=centres,
        true_labels=labels,
        true_footprints=footprints,
        true_spikes=spikes,
        true_calcium=calcium,
        true_fluorescence=fluorescence,
        true_transform=transform,
        rotation_deg=float(rotation_deg),
        shift_um=tuple(float(v) for v in shift_um),
    )


def simulate_light_fields(
    sample: FusionSample,
    operator,
    photons: float = 200.0,
    read_noise: float = 2.0,
    background: float = 0.08,
    seed: int = 1,
) -> FusionSample:
    """Image the sample's activity through the light-field forward model, with camera noise.

    Each frame is ``y_t = Poisson(s * H x_t) + N(0, read_noise^2)`` with
    ``x_t = sum_k F_k(t) footprint_k + background`` and ``s`` chosen so that the brightest
    pixel of the mean clean light field receives ``photons`` photo-electrons.

    Parameters
    ----------
    sample : FusionSample
        From :func:`simulate_structure`; its ``light_fields`` are filled in (and returned).
    operator : object
        Light-field forward model with ``forward``/``adjoint`` on ``sample.volume_shape``.
    photons : float
        Peak expected photo-electrons per pixel of the mean light field.
    read_noise : float
        Gaussian camera read noise (electrons).
    background : float
        Uniform out-of-cell fluorescence (neuropil) in cell-brightness units.
    seed : int
        Seed of the noise.

    Returns
    -------
    FusionSample
    """
    from napari_mbdl.fusion.operators import as_numpy_operator

    op = as_numpy_operator(operator, volume_shape=sample.volume_shape)
    rng = np.random.default_rng(seed)
    # Linear model: the frames are combinations of one light field per cell (computed once).
    per_cell = op.forward(sample.true_footprints).reshape(sample.n_neurons, -1).astype(np.float64)
    background_volume = np.full(sample.volume_shape, background, np.float32)
    bg_lf = op.forward(background_volume).reshape(-1).astype(np.float64)
    clean = sample.true_fluorescence.T @ per_cell + bg_lf[None, :]
    scale = photons / max(float(clean.mean(axis=0).max()), 1e-12)
    noisy = rng.poisson(np.clip(clean * scale, 0, None)).astype(np.float64)
    noisy += read_noise * rng.standard_normal(noisy.shape)
    sample.light_fields = noisy.reshape(-1, *op.light_field_shape).astype(np.float32)
    sample.background_volume = background_volume
    return sample
