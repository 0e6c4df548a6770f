"""Sliding-window sizes planned per volume: one window over the whole volume when the card allows it.

Overlapping windows repeat work: at overlap 0.5 a 3D volume a little larger than the window is
covered by 4-8 windows, each voxel computed several times. A fully convolutional network gives
nearly the same answer on one window that covers the volume, at a fraction of the cost (nnU-Net
predicts whole volumes when they fit, for the same reason). How close "nearly" is depends on the
network, so a card opts in with ``inference.max_window_voxels`` after the accuracy was measured
(docs/benchmarks.md); without it the card's windows stay fixed.

A planned window is the volume rounded up to multiples of :data:`SHAPE_STEP` (and never smaller than
the card's window on any axis), so scans of similar size share window shapes: a backend that checks
or compiles per input shape (OpenVINO) does so once for many scans.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

__all__ = ["SHAPE_STEP", "plan_window"]

SHAPE_STEP = 16  # voxels; window sizes are multiples of this (and of the network's size divisor)


def _divisors(divisor: int | Sequence[int], dims: int) -> tuple[int, ...]:
    return tuple(int(divisor) for _ in range(dims)) if isinstance(divisor, int) else tuple(int(d) for d in divisor)


def plan_window(spatial: Sequence[int], card_window: Sequence[int], inference: Mapping[str, Any],
                size_divisor: int | Sequence[int] = 1) -> tuple[int, ...]:
    """The window for a volume of ``spatial`` voxels (z, y, x): the whole volume, rounded up to a
    common multiple of :data:`SHAPE_STEP` and ``size_divisor`` and at least ``card_window``, when the
    card's ``max_window_voxels`` allows that many voxels; otherwise ``card_window`` unchanged."""
    card_window = tuple(int(p) for p in card_window)
    limit = inference.get("max_window_voxels")
    if not limit:
        return card_window
    steps = [math.lcm(SHAPE_STEP, d) for d in _divisors(size_divisor, len(card_window))]
    whole = tuple(max(p, math.ceil(s / q) * q) for s, p, q in zip(spatial, card_window, steps))
    return whole if math.prod(whole) <= int(limit) else card_window
