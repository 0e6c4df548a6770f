"""The child-process protocol (docs/result-format.md), defined once: machine lines and exit codes.

A child (``medseg segment``, ``medseg levels``, ``medseg devices``) prints one line per event on
stdout, ``medseg-<kind> <json object>``; :func:`format_line` writes them, :func:`parse_line` reads
them. Exit codes come from :mod:`.errors` (each error class carries its own); :data:`EXIT_CODES`
says what each means to a person. Imports nothing heavy: the Slicer GUI process uses it.
"""

from __future__ import annotations

import enum
import json
import signal
from dataclasses import dataclass, field
from typing import Any

from .errors import Cancelled, InputError, ModelError, OutOfMemory

__all__ = ["EXIT_BUG", "EXIT_CODES", "EXIT_OK", "PREFIX", "ExitStatus", "ProtocolEvent", "emit", "format_line",
           "interpret_exit_code", "parse_line"]

PREFIX = "medseg-"
EXIT_OK, EXIT_BUG = 0, 1


class ExitStatus(enum.Enum):
    SUCCESS = "success"
    INTERNAL_ERROR = "internal error"
    BAD_INPUT = "bad input"
    MODEL_PROBLEM = "model problem"
    OUT_OF_MEMORY = "out of memory"
    CANCELLED = "cancelled"
    CRASHED = "crashed"


EXIT_CODES: dict[int, tuple[ExitStatus, str]] = {
    EXIT_OK: (ExitStatus.SUCCESS, "Segmentation finished."),
    EXIT_BUG: (ExitStatus.INTERNAL_ERROR, "Unexpected internal error (a bug: please report it with the log)."),
    InputError.exit_code: (ExitStatus.BAD_INPUT, "The input volume cannot be segmented with this model."),
    ModelError.exit_code: (ExitStatus.MODEL_PROBLEM,
                           "Model problem: unknown model, weights not installed or not matching their checksum."),
    OutOfMemory.exit_code: (ExitStatus.OUT_OF_MEMORY,
                            "Out of memory on every device tried; try the CPU or a smaller pruning level."),
    Cancelled.exit_code: (ExitStatus.CANCELLED, "Cancelled; nothing was written."),
}


def interpret_exit_code(code: int, cancel_requested: bool = False) -> tuple[ExitStatus, str]:
    """What an exit code means; killed-by-signal counts as cancel if a cancel was asked for."""
    if code in EXIT_CODES:
        return EXIT_CODES[code]
    if cancel_requested:
        return ExitStatus.CANCELLED, "Cancelled; nothing was written."
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return ExitStatus.CRASHED, f"The segmentation process was killed ({name}); it may have run out of memory."
    return ExitStatus.CRASHED, f"The segmentation process stopped with unexpected exit code {code}."


def format_line(kind: str, payload: dict[str, Any]) -> str:
    """``medseg-<kind> {json}`` (one line, no newline)."""
    return f"{PREFIX}{kind} {json.dumps(payload)}"


def emit(kind: str, **payload: Any) -> None:
    """Print one protocol line on stdout, flushed (the reader is another process)."""
    print(format_line(kind, payload), flush=True)


@dataclass(frozen=True)
class ProtocolEvent:
    """One thing that happened: ``kind`` is progress, warning, result, error, info, log, finished or another kind."""

    kind: str
    message: str = ""
    fraction: float | None = None
    data: dict[str, Any] = field(default_factory=dict)
    stream: str = "stdout"
    exit_code: int | None = None
    status: ExitStatus | None = None


def parse_line(line: str, stream: str = "stdout") -> ProtocolEvent:
    """Turn one output line into an event; anything not a well-formed protocol line is a ``log`` event."""
    text = line.rstrip("\r\n")
    if stream == "stdout" and text.startswith(PREFIX) and " " in text:
        kind, _, payload = text[len(PREFIX):].partition(" ")
        try:
            data = json.loads(payload)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and kind:
            fraction = None
            if kind == "progress":
                try:
                    fraction = min(1.0, max(0.0, float(data.get("fraction", 0.0))))
                except (TypeError, ValueError):
                    fraction = None
            return ProtocolEvent(kind=kind, message=str(data.get("message", "")), fraction=fraction, data=data, stream=stream)
    return ProtocolEvent(kind="log", message=text, stream=stream)
