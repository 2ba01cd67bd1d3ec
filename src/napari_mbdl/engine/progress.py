"""Progress events, cancel tokens and the driver that runs a steps generator."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from napari_mbdl.errors import RunCancelled

T = TypeVar("T")


@dataclass
class Progress:
    """One progress event, yielded by every steps generator.

    Attributes
    ----------
    stage : str
        What is running, e.g. ``"denoise"`` or ``"sum spectrum"``.
    done, total : int
        Units of work done and in all (the engine counts output elements).
    message : str
        Short human text, e.g. ``"chunk 3/40"``.
    preview : object, optional
        An intermediate result a widget may show (e.g. the current separation).
    """

    stage: str
    done: int
    total: int
    message: str = ""
    preview: Any = None

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


class CancelToken:
    """Thread-safe flag checked by the engine between tiles."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise RunCancelled("cancelled by the user")


def run_steps(steps: Generator[Progress, None, T], on_progress: Callable[[Progress], None] | None = None) -> T:
    """Drive a steps generator to completion and return its result.

    Parameters
    ----------
    steps : generator
        Yields :class:`Progress` events and returns the result.
    on_progress : callable, optional
        Called with every event.
    """
    while True:
        try:
            event = next(steps)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(event)
