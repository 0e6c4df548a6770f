"""Errors the engine raises on purpose, each with the exit code the command line reports.

Messages say what is wrong and what to do; see docs/result-format.md for the exit codes.
"""

from __future__ import annotations


class MedSegError(Exception):
    """Base class: an expected failure with a message meant for the user."""

    exit_code = 1


class InputError(MedSegError, ValueError):
    """The input image (or the command line) is unusable for the chosen model."""

    exit_code = 2


class ModelError(MedSegError):
    """Unknown model, weights not installed or tampered, invalid model card."""

    exit_code = 3


class OutOfMemory(MedSegError):
    """Out of memory on every device tried."""

    exit_code = 4


class Cancelled(MedSegError):
    """The user cancelled; nothing was written."""

    exit_code = 130
