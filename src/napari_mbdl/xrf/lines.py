"""Element X-ray line library built from xraylib (fundamental parameters, not a hand-typed table).

Relative line intensities come from xraylib's fluorescence-line production cross sections
(``CS_FluorLine_Kissel_Cascade``: sub-shell ionisation, Coster-Kronig transitions and radiative rates
included), averaged over a Kramers bremsstrahlung excitation spectrum of an X-ray tube.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

FAMILIES = ("K", "L", "M")
# IUPAC line macros of xraylib: KL3, L3M5, M5N7, ...
_IUPAC_LINE = re.compile(r"^(K|L[1-3]|M[1-5])([L-Q][1-7])_LINE$")
# Elements whose lines a laboratory MA-XRF scanner can see (Na .. U).
Z_MIN, Z_MAX = 11, 92


@dataclass(frozen=True)
class Line:
    """One emission line: IUPAC name (e.g. ``"L3M5"``), energy in keV, intensity relative to its family."""

    name: str
    energy: float
    relative: float


@dataclass(frozen=True)
class LineFamily:
    """The K, L or M lines of one element, with the family's production weight.

    ``weight`` is the summed production cross section (cm^2/g, Kramers-averaged); it gives the
    expected ratio between the families of an element (e.g. Pb L vs Pb M).
    """

    element: str
    family: str
    lines: tuple[Line, ...]
    weight: float

    @property
    def label(self) -> str:
        return f"{self.element} {self.family}"

    @property
    def main_energy(self) -> float:
        return max(self.lines, key=lambda line: line.relative).energy


def _line_macros() -> list[tuple[str, int]]:
    import xraylib

    return [(name[:-5], getattr(xraylib, name)) for name in dir(xraylib) if _IUPAC_LINE.match(name)]


def symbol_to_z(symbol: str) -> int:
    """Atomic number of an element symbol (``"Fe"`` -> 26); raises InputError (a ValueError) otherwise."""
    import xraylib

    text = str(symbol).strip()
    try:
        z = xraylib.SymbolToAtomicNumber(text[:1].upper() + text[1:].lower())
    except ValueError:
        z = 0
    if not Z_MIN <= z <= Z_MAX:
        from napari_mbdl.engine.errors import InputError  # a ValueError people can read

        raise InputError(f"{symbol!r} is not an element symbol between Na and U")
    return z


def z_to_symbol(z: int) -> str:
    import xraylib

    return xraylib.AtomicNumberToSymbol(int(z))


def kramers_weights(tube_kv: float, n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Excitation energies (keV) and weights of a Kramers bremsstrahlung spectrum ``(E0 - E) / E``."""
    energies = np.linspace(1.0, tube_kv, n + 2)[1:-1]
    weights = (tube_kv - energies) / energies
    return energies, weights / weights.sum()


@functools.lru_cache(maxsize=4096)
def element_families(symbol: str, tube_kv: float = 50.0, min_relative: float = 1e-3) -> tuple[LineFamily, ...]:
    """K, L and M line families of an element as excited by an X-ray tube at ``tube_kv``.

    Parameters
    ----------
    symbol : str
        Element symbol, e.g. ``"Pb"``.
    tube_kv : float
        Tube voltage (keV); families whose edge lies above it are not excited and are left out.
    min_relative : float
        Lines weaker than this fraction of their family are dropped.

    Returns
    -------
    tuple of LineFamily
        Excited families, each with lines sorted by energy and relative intensities summing to 1.
    """
    import xraylib

    z = symbol_to_z(symbol)
    name = z_to_symbol(z)
    excitation, weights = kramers_weights(tube_kv)
    per_family: dict[str, list[tuple[str, float, float]]] = {family: [] for family in FAMILIES}
    for macro_name, macro in _line_macros():
        try:
            energy = xraylib.LineEnergy(z, macro)
        except ValueError:
            continue
        if energy <= 0.05:
            continue
        production = 0.0
        for e0, w in zip(excitation, weights):
            try:
                production += w * xraylib.CS_FluorLine_Kissel_Cascade(z, macro, float(e0))
            except ValueError:
                pass
        if production > 0:
            per_family[macro_name[0]].append((macro_name, float(energy), float(production)))
    families = []
    for family, entries in per_family.items():
        total = sum(p for _, _, p in entries)
        if total <= 0:
            continue
        lines = tuple(
            Line(n, e, p / total) for n, e, p in sorted(entries, key=lambda t: t[1]) if p / total >= min_relative
        )
        norm = sum(line.relative for line in lines)
        lines = tuple(Line(line.name, line.energy, line.relative / norm) for line in lines)
        families.append(LineFamily(name, family, lines, total))
    return tuple(families)


def families_in_range(
    symbol: str, e_min: float, e_max: float, tube_kv: float = 50.0, min_fraction: float = 0.5
) -> tuple[LineFamily, ...]:
    """Families whose lines carrying at least ``min_fraction`` of the family intensity lie in [e_min, e_max]."""
    kept = []
    for family in element_families(symbol, float(tube_kv)):
        inside = sum(line.relative for line in family.lines if e_min <= line.energy <= e_max)
        if inside >= min_fraction:
            lines = tuple(line for line in family.lines if e_min <= line.energy <= e_max)
            norm = sum(line.relative for line in lines)
            kept.append(
                LineFamily(
                    family.element,
                    family.family,
                    tuple(Line(line.name, line.energy, line.relative / norm) for line in lines),
                    family.weight * inside,
                )
            )
    return tuple(kept)


def all_symbols() -> list[str]:
    return [z_to_symbol(z) for z in range(Z_MIN, Z_MAX + 1)]


_SIEGBAHN = {"ka": ("K", "KL3"), "kb": ("K", "KM3"), "la": ("L", "L3M5"), "lb": ("L", "L2M4"), "ma": ("M", "M5N7")}


def main_line_energy(name: str) -> float:
    """Energy (keV) of a named line: ``"Fe"`` (K-alpha below 30 keV, else L-alpha), ``"Pb-La"``, ``"Cu Kb"``, ``"Zn-KL3"``."""
    import xraylib

    text = name.replace("-", " ").replace("_", " ").split()
    if not text:
        raise ValueError("empty line name")
    z = symbol_to_z(text[0])
    if len(text) == 1:
        for macro in ("KL3", "L3M5", "M5N7"):
            energy = xraylib.LineEnergy(z, getattr(xraylib, f"{macro}_LINE"))
            if 1.0 < energy < 30.0:
                return float(energy)
        raise ValueError(f"no line of {text[0]} between 1 and 30 keV")
    line = text[1].lower()
    macro = _SIEGBAHN[line][1] if line in _SIEGBAHN else text[1].upper()
    try:
        return float(xraylib.LineEnergy(z, getattr(xraylib, f"{macro}_LINE")))
    except (AttributeError, ValueError):
        raise ValueError(f"unknown line {name!r}") from None
