"""Progress reporting and cooperative cancel, passed down through every long step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import Cancelled

ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], bool]


@dataclass
class RunContext:
    """Device and run options plus the progress/cancel hooks of one segmentation run.

    ``progress(fraction, message)`` receives a fraction of the whole run that never decreases;
    :meth:`span` gives a sub-context that maps its own 0..1 onto a slice of the parent's range.
    ``cancel()`` returning true makes the next :meth:`check_cancel` raise :class:`Cancelled`.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 4
    amp: bool = True
    precision: str = "auto"
    channels_last: bool = True
    fixed_batch: bool = False  # pad the last batch to ``batch_size`` (a compiled network keeps one shape)
    progress: ProgressCallback | None = None
    cancel: CancelCheck | None = None
    warnings: list[str] = field(default_factory=list)
    runner: Any = None  # an OpenVINORunner when the forward passes run on OpenVINO (openvino_backend)
    _start: float = 0.0
    _end: float = 1.0
    _last: list[float] = field(default_factory=lambda: [0.0])

    def report(self, fraction: float, message: str) -> None:
        self.check_cancel()
        value = self._start + (self._end - self._start) * min(max(fraction, 0.0), 1.0)
        value = max(value, self._last[0])
        self._last[0] = value
        if self.progress is not None:
            self.progress(value, message)

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled("cancelled by the user; nothing was written")

    def span(self, start: float, end: float) -> "RunContext":
        """A child context whose 0..1 covers [start, end] of this context's range."""
        width = self._end - self._start
        child = RunContext(
            device=self.device,
            batch_size=self.batch_size,
            amp=self.amp,
            precision=self.precision,
            channels_last=self.channels_last,
            fixed_batch=self.fixed_batch,
            progress=self.progress,
            cancel=self.cancel,
            warnings=self.warnings,
            runner=self.runner,
        )
        child._start, child._end, child._last = self._start + width * start, self._start + width * end, self._last
        return child

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    @property
    def use_amp(self) -> bool:
        """Mixed precision runs on CUDA only; CPU and MPS stay in float32 (:func:`mixed_precision`)."""
        return mixed_precision(self.device, self.precision if self.amp else "none")[0]

    @property
    def amp_dtype(self) -> torch.dtype:
        """bf16 where the GPU supports it (same range as fp32, no overflow), else fp16."""
        enabled, dtype = mixed_precision(self.device, (self.precision or "auto") if self.amp else "none")
        return dtype if enabled else torch.float16

    def use_channels_last(self, spatial_dims: int) -> bool:
        """Whether batches of a ``spatial_dims`` network go channels-last (:func:`channels_last_faster`)."""
        return self.channels_last and channels_last_faster(self.device, spatial_dims)


def mixed_precision(device: torch.device, setting: str | None = "auto") -> tuple[bool, torch.dtype]:
    """The one mixed-precision policy of inference and training: (autocast on?, its dtype).

    ``setting``: none/float32 (off), auto (bf16 where the GPU has it, else fp16), bf16 or fp16.
    Only CUDA runs mixed precision (measured: bf16 autocast is 1.7x slower on a 2-core CPU without
    AMX); a GPU without bf16 falls back to fp16 (training adds a GradScaler).
    """
    if setting not in (None, False, "none", "float32", "auto", "bf16", "fp16"):
        raise ValueError(f"mixed precision must be none, auto, bf16 or fp16, got {setting!r}")
    if device.type != "cuda" or setting in (None, False, "none", "float32"):
        return False, torch.float32
    if setting == "fp16" or not torch.cuda.is_bf16_supported():
        return True, torch.float16
    return True, torch.bfloat16


def channels_last_faster(device: torch.device, spatial_dims: int) -> bool:
    """Where channels-last (NHWC / NDHWC) is the faster memory layout, by measurement
    (docs/benchmarks.md): on the CPU for 2D and 3D networks (oneDNN; 3D windows 10-45 % faster on 2
    cores); on CUDA for 2D networks only (ANU-Net slices bf16 1.3x faster on an H200) while 3D
    windows are slower there (ConResNet bf16 116 ms against 74 ms per batch); never on MPS."""
    if device.type == "cpu":
        return True
    return device.type == "cuda" and spatial_dims == 2


def channels_last_format(spatial_dims: int) -> torch.memory_format:
    """The channels-last memory format of a 2D (NHWC) or 3D (NDHWC) network and its batches."""
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
