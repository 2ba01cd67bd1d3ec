"""Matching FRI pulses to element line families: automatic element detection and calibration check."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_mbdl.engine.errors import InputError
from napari_mbdl.xrf.fri import Pulse, find_pulses
from napari_mbdl.xrf.lines import LineFamily, all_symbols, families_in_range, symbol_to_z, z_to_symbol
from napari_mbdl.xrf.spectral import DetectorResponse, EnergyCalibration, continuum, family_template

# A line this strong within its family can anchor an element to a pulse.
ANCHOR_RELATIVE = 0.12
# Never proposed automatically (they can still be asked for): elements without stable isotopes that
# do not occur in artworks, and noble gases other than argon (whose K lines come from the air path).
IMPLAUSIBLE = ("Tc", "Pm", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Pa", "Kr", "Xe")
DEFAULT_TUBE_KV = 50.0


@dataclass
class Identification:
    """Result of element detection on a (sum) spectrum.

    Attributes
    ----------
    elements : list of str
        Detected (or requested) elements, by decreasing counts.
    families : dict
        Element -> its line families in the energy range (fit columns).
    counts : dict
        Element -> fitted counts of its lines in the spectrum.
    significance : dict
        Element -> fitted counts / standard error.
    pulses : list of Pulse
        All pulses found by the FRI estimator.
    labels : dict
        Pulse index -> label of the line family that explains it (``"Fe K"``); unexplained pulses
        (escape / sum / scatter peaks, unknown lines) are absent.
    calibration : EnergyCalibration
        Calibration refined from the matched pulses.
    """

    elements: list[str]
    families: dict[str, tuple[LineFamily, ...]]
    counts: dict[str, float]
    significance: dict[str, float]
    pulses: list[Pulse]
    labels: dict[int, str] = field(default_factory=dict)
    calibration: EnergyCalibration | None = None


def _element_columns(symbol, energies, detector, tube_kv, cache, min_energy=0.8):
    if symbol not in cache:
        families = families_in_range(symbol, max(float(energies[0]), min_energy), float(energies[-1]), tube_kv)
        columns = np.stack([family_template(f, energies, detector) for f in families], 1) if families else None
        cache[symbol] = (families, columns)
    return cache[symbol]


def _weighted_nnls(columns, net, weights):
    from scipy.optimize import nnls

    weighted = columns * weights[:, None]
    coefficients, _ = nnls(weighted, net * weights, maxiter=100 * columns.shape[1])
    residual = weighted @ coefficients - net * weights
    return coefficients, float(residual @ residual)


def identify_elements(
    spectrum,
    calibration: EnergyCalibration,
    detector: DetectorResponse | None = None,
    tube_kv: float | None = None,
    elements="auto",
    add=(),
    exclude=(),
    threshold: float = 5.0,
    systematic: float = 0.02,
    min_energy: float = 0.8,
    refine_calibration: bool = True,
) -> Identification:
    """Detect the elements of a spectrum by matching FRI pulses to xraylib line families.

    Pulses are visited from the largest; each still unexplained pulse is given to the element,
    among those with a strong line within half a FWHM of it (and a pulse at every stronger line of
    that family), whose line families (all of them, across the whole spectrum) best fit the
    spectrum together with the elements already chosen.  A pulse that the fit then reproduces
    counts as explained.  A stepwise pass then swaps elements for rivals anchored on the same
    pulses when the whole-spectrum fit improves, and elements whose fitted counts are not
    significant are dropped.  The positions of well-identified pulses refine the energy
    calibration (offset and gain), and the detection runs again with it.

    Parameters
    ----------
    spectrum : array_like
        Counts per channel, usually the sum spectrum of the cube.
    calibration : EnergyCalibration
        Channel-to-energy map.
    detector : DetectorResponse, optional
        Peak width model.
    tube_kv : float, optional
        Excitation (tube) voltage; default 50 kV (typical MA-XRF scanners), or the top of the
        energy axis when that is higher.  It sets the relative intensities of the lines.
    elements : "auto" or sequence of str
        ``"auto"`` detects; a list (or ``"Fe,Cu"``) fixes the elements (no detection).
    add, exclude : sequence of str
        Elements to add to / keep out of the automatic detection.
    threshold : float
        Significance needed by pulses and elements (standard errors).
    systematic : float
        Relative model error added to the Poisson variance of the spectrum.
    min_energy : float
        Channels below this energy (keV) are ignored.
    refine_calibration : bool
        Correct offset and gain from the matched pulses.

    Returns
    -------
    Identification
    """
    arguments = dict(detector=detector, tube_kv=tube_kv, elements=elements, add=add, exclude=exclude,
                     threshold=threshold, systematic=systematic, min_energy=min_energy)
    result = _identify_once(spectrum, calibration, **arguments)
    if refine_calibration:
        n = np.asarray(spectrum).size
        for _ in range(3):  # a few passes: the matching improves as the calibration does
            refined = refine_calibration_from_pulses(result, detector or DetectorResponse())
            if refined is None:
                break
            moved = np.max(np.abs(refined.energies(n) - result.calibration.energies(n)))
            result = _identify_once(spectrum, refined, **arguments)
            if moved < 0.002:
                break
    return result


def refine_calibration_from_pulses(result: Identification, detector: DetectorResponse, min_significance: float = 20.0):
    """Offset/gain correction from strong pulses that one line family explains; None if too few.

    Each such pulse is paired with the intensity-weighted centroid of its family's lines within
    half a FWHM; a weighted straight line maps measured to true energies.
    """
    measured, true, weight = [], [], []
    for index, label in result.labels.items():
        pulse = result.pulses[index]
        if pulse.significance < min_significance:
            continue
        symbol, family_name = label.split()
        family = next(f for f in result.families[symbol] if f.family == family_name)
        near = [line for line in family.lines if abs(line.energy - pulse.energy) <= 0.5 * detector.fwhm(pulse.energy)]
        if not near or sum(line.relative for line in near) < 0.2:
            continue
        measured.append(pulse.energy)
        true.append(sum(line.energy * line.relative for line in near) / sum(line.relative for line in near))
        weight.append(np.sqrt(pulse.area))
    if not measured:
        return None
    measured, true, weight = map(np.asarray, (measured, true, weight))
    calibration = result.calibration
    if measured.size >= 3 and np.ptp(measured) >= 3.0:
        slope, intercept = np.polyfit(measured, true, 1, w=weight)
    else:
        slope, intercept = 1.0, float(np.average(true - measured, weights=weight))
    if abs(slope - 1) < 1e-5 and abs(intercept) < 1e-4:
        return None
    # E_true = intercept + slope * (offset + gain * channel)
    return EnergyCalibration(offset=float(intercept + slope * calibration.offset), gain=float(slope * calibration.gain))


def _identify_once(
    spectrum,
    calibration: EnergyCalibration,
    detector: DetectorResponse | None = None,
    tube_kv: float | None = None,
    elements="auto",
    add=(),
    exclude=(),
    threshold: float = 5.0,
    systematic: float = 0.02,
    min_energy: float = 0.8,
) -> Identification:
    """One detection pass with a fixed calibration (see :func:`identify_elements`)."""
    detector = detector or DetectorResponse()
    spectrum = np.asarray(spectrum, dtype=np.float64)
    energies = calibration.energies(spectrum.size)
    tube_kv = float(tube_kv or max(DEFAULT_TUBE_KV, min(energies[-1], 100.0)))
    excluded = {z_to_symbol(symbol_to_z(s)) for s in exclude}
    forced = [z_to_symbol(symbol_to_z(s)) for s in add]
    if elements != "auto":
        if isinstance(elements, str):
            elements = [part for part in elements.replace(" ", "").split(",") if part]
        forced = [z_to_symbol(symbol_to_z(s)) for s in elements] + forced
    for symbol in forced:
        if not families_in_range(symbol, max(float(energies[0]), min_energy), float(energies[-1]), tube_kv):
            raise InputError(
                f"no {symbol} lines lie in the cube's energy range "
                f"{max(energies[0], min_energy):.2f}-{energies[-1]:.2f} keV at {tube_kv:g} kV excitation"
            )

    sigma_channels = detector.sigma(energies) / calibration.gain
    background = continuum(spectrum, sigma_channels)
    net = spectrum - background
    weights = 1.0 / np.sqrt(np.clip(spectrum, 1.0, None) + (systematic * np.clip(spectrum, 0, None)) ** 2)
    weights = np.where(energies < min_energy, 0.0, weights)
    pulses = find_pulses(spectrum, energies, detector, background, threshold, systematic, min_energy=min_energy)

    cache: dict = {}
    selected: list[str] = []
    for symbol in forced:
        if symbol not in selected:
            selected.append(symbol)
    if elements == "auto":
        selected = _greedy_selection(pulses, selected, forced, excluded, net, weights, energies, detector, tube_kv, cache)
    return _finish(spectrum, net, weights, energies, detector, tube_kv, calibration, pulses, selected,
                   forced, threshold, cache)


def _window_sum(values, energies, centre, half):
    inside = np.abs(energies - centre) <= half
    return float(values[inside].sum())


def _greedy_selection(pulses, selected, forced, excluded, net, weights, energies, detector, tube_kv, cache):
    candidates = [s for s in all_symbols() if s not in excluded and s not in IMPLAUSIBLE]
    anchors = {}
    for symbol in candidates:
        families, columns = _element_columns(symbol, energies, detector, tube_kv, cache)
        if columns is None:
            continue
        anchors[symbol] = [
            (line, family) for family in families for line in family.lines if line.relative >= ANCHOR_RELATIVE
        ]
    pulse_energies = np.array([p.energy for p in pulses])
    gain = energies[1] - energies[0]

    def near_pulse(energy):
        tolerance = 0.5 * detector.fwhm(energy) + 1.5 * gain
        return pulse_energies.size > 0 and np.min(np.abs(pulse_energies - energy)) <= tolerance

    def can_anchor(line, family, energy):
        """A line anchors its element at a pulse only if every stronger line of its family has a pulse too."""
        tolerance = 0.5 * detector.fwhm(energy) + 1.5 * gain
        if abs(line.energy - energy) > tolerance:
            return False
        return all(near_pulse(other.energy) for other in family.lines if other.relative > line.relative)

    def model_of(symbols):
        if not symbols:
            return np.zeros_like(net), np.inf
        columns = np.concatenate([_element_columns(s, energies, detector, tube_kv, cache)[1] for s in symbols], 1)
        coefficients, chi2 = _weighted_nnls(columns, net, weights)
        return columns @ coefficients, chi2

    model, _ = model_of(selected)
    unexplained = set(range(len(pulses)))

    def update_explained(model):
        residual = net - model
        for i in list(unexplained):
            p = pulses[i]
            half = detector.fwhm(p.energy) * 0.6
            observed = _window_sum(net, energies, p.energy, half)
            left = _window_sum(residual, energies, p.energy, half)
            if observed <= 0 or left < 0.3 * observed:
                unexplained.discard(i)

    update_explained(model)
    for i in sorted(range(len(pulses)), key=lambda k: -pulses[k].area):
        if i not in unexplained:
            continue
        p = pulses[i]
        options = [
            s for s, lines in anchors.items()
            if s not in selected and any(can_anchor(line, family, p.energy) for line, family in lines)
        ]
        best = None
        for symbol in options:
            trial_model, chi2 = model_of(selected + [symbol])
            gained = _window_sum(trial_model - model, energies, p.energy, 0.6 * detector.fwhm(p.energy))
            observed = _window_sum(net, energies, p.energy, 0.6 * detector.fwhm(p.energy))
            if observed > 0 and gained >= 0.3 * observed and (best is None or chi2 < best[1]):
                best = (symbol, chi2, trial_model)
        if best is None:
            continue
        selected.append(best[0])
        model = best[2]
        update_explained(model)
    return _swap_refinement(selected, forced, pulses, anchors, can_anchor, model_of)


def _swap_refinement(selected, forced, pulses, anchors, can_anchor, model_of, rounds=3):
    """Stepwise clean-up of the greedy choice: swap an element for a rival anchored on the same pulses
    (e.g. Re L for Zn K, As K for Pb L) whenever the whole-spectrum fit improves."""
    selected = list(selected)
    for _ in range(rounds):
        changed = False
        _, current = model_of(selected)
        for symbol in list(selected):
            if symbol in forced:
                continue
            own = [p for p in pulses if any(can_anchor(line, family, p.energy) for line, family in anchors.get(symbol, []))]
            rivals = {
                rival for rival, lines in anchors.items()
                if rival not in selected
                and any(can_anchor(line, family, p.energy) for p in own for line, family in lines)
            }
            best = (current, None)
            for rival in rivals:
                trial = [rival if s == symbol else s for s in selected]
                _, chi2 = model_of(trial)
                if chi2 < best[0] * 0.999:
                    best = (chi2, rival)
            if best[1] is not None:
                selected = [best[1] if s == symbol else s for s in selected]
                current = best[0]
                changed = True
        if not changed:
            break
    return selected


def _finish(spectrum, net, weights, energies, detector, tube_kv, calibration, pulses, selected, forced,
            threshold, cache):
    """Final joint fit: element counts, significances, pulse labels; drop insignificant detections."""
    while True:
        counts, significance = {}, {}
        if selected:
            blocks = [_element_columns(s, energies, detector, tube_kv, cache) for s in selected]
            columns = np.concatenate([b[1] for b in blocks], 1)
            coefficients, _ = _weighted_nnls(columns, net, weights)
            weighted = columns * weights[:, None]
            covariance = np.linalg.pinv(weighted.T @ weighted)
            start = 0
            for symbol, (families, cols) in zip(selected, blocks):
                part = slice(start, start + cols.shape[1])
                start += cols.shape[1]
                counts[symbol] = float(coefficients[part].sum())
                error = float(np.sqrt(max(covariance[part, part].sum(), 1e-12)))
                significance[symbol] = counts[symbol] / error
        weak = [s for s in selected if s not in forced and significance.get(s, 0) < threshold]
        if not weak:
            break
        selected = [s for s in selected if s not in weak]
    order = sorted(selected, key=lambda s: -counts.get(s, 0))
    labels = {}
    for i, p in enumerate(pulses):
        best = None
        for symbol in order:
            for family in cache[symbol][0]:
                for line in family.lines:
                    distance = abs(line.energy - p.energy)
                    if distance <= 0.5 * detector.fwhm(p.energy) and (best is None or line.relative * counts[symbol] > best[0]):
                        best = (line.relative * counts[symbol], family.label)
        if best is not None:
            labels[i] = best[1]
    return Identification(
        elements=order,
        families={s: cache[s][0] for s in order},
        counts=counts,
        significance=significance,
        pulses=pulses,
        labels=labels,
        calibration=calibration,
    )
