"""Errors with messages meant for people: the widgets and the CLI show them as one line."""

from __future__ import annotations


class MBDLError(Exception):
    """Base class of every error napari-mbdl reports to a user without a traceback."""


class InputError(MBDLError, ValueError):
    """The input (array, layer, file, parameter) cannot be used; the message says why."""


class OutputExistsError(MBDLError, FileExistsError):
    """The output path already holds data and overwriting was not asked for (or is not safe)."""


class RunCancelled(MBDLError):
    """The user cancelled; finished chunks are kept so the same call resumes."""


class DeviceMemoryError(MBDLError, MemoryError):
    """Even the smallest tile does not fit in the device's memory."""
