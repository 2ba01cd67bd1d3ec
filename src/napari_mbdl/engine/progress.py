"""Progress events, cancel tokens and the driver that runs a steps generator."""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
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


class CallState:
    """How far the engine's current call of a block function has got (one per call, one thread).

    The engine runs each call in a compute thread and reads ``fraction`` and ``message`` to yield
    progress while the call is still running; ``cancel`` is the run's token.
    """

    def __init__(self, cancel: CancelToken) -> None:
        self.cancel = cancel
        self.abandoned = False
        self.fraction = 0.0
        self.message = ""
        self._spans: list[tuple[float, float]] = [(0.0, 1.0)]

    def report(self, fraction: float | None, message: str | None) -> None:
        if fraction is not None:
            offset, width = self._spans[-1]
            # spans only move forward: a rounding step back would make the bar flicker
            self.fraction = max(self.fraction, offset + width * min(max(float(fraction), 0.0), 1.0))
        if message is not None:
            self.message = message


_current = threading.local()


@contextmanager
def in_call(state: CallState) -> Iterator[CallState]:
    """Make ``state`` the one that :func:`checkpoint` reports to, in this thread."""
    previous = getattr(_current, "state", None)
    _current.state = state
    try:
        yield state
    finally:
        _current.state = previous


def checkpoint(fraction: float | None = None, message: str | None = None) -> None:
    """Let a long block function be cancelled part-way and say how far it has got.

    Block functions (and the networks they run) call this between expensive steps.  Inside an
    engine call it raises :class:`~napari_mbdl.errors.RunCancelled` once the run is cancelled, and
    records ``fraction`` (0-1, of the innermost :func:`progress_span`) for the progress bar.
    Anywhere else (training, a bare network call) it does nothing and costs a few hundred
    nanoseconds.
    """
    state = getattr(_current, "state", None)
    if state is None:
        return
    if state.abandoned:
        raise RunCancelled("the run was stopped")
    state.cancel.raise_if_cancelled()
    state.report(fraction, message)


@contextmanager
def progress_span(start: float, stop: float) -> Iterator[None]:
    """Map the fractions reported inside to ``[start, stop]`` of the enclosing span.

    So nested loops compose: an outer loop over 8 views opens ``progress_span(k / 8, (k + 1) / 8)``
    and the network inside reports its own 0-1.
    """
    state = getattr(_current, "state", None)
    if state is None:
        yield
        return
    offset, width = state._spans[-1]
    state._spans.append((offset + width * start, width * (stop - start)))
    try:
        yield
    finally:
        state._spans.pop()
    state.report(stop, None)  # the span is done, in the enclosing span's terms


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
