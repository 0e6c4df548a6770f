"""Sliding-window sizes planned per volume: windows that span whole axes when the card allows it.

Overlapping windows repeat work: at overlap 0.5 a 3D volume a little larger than the window is
covered by 4-8 windows, each voxel computed several times (144 windows for a prostate T2 at the
full-size SIP-Net's 16 x 96 x 96). A fully convolutional network gives nearly the same answer on a
window that spans the volume, at a fraction of the cost (nnU-Net predicts whole volumes when they fit,
for the same reason). How close "nearly" is depends on the network, so a card opts in with
``inference.max_window_voxels`` (the largest window memory allows) after the accuracy was measured
(docs/benchmarks.md); any run can try it with ``--inference max_window_voxels=N``. Without it the
card's windows stay fixed.

The plan spans the whole volume along some axes and keeps the card's window along the others, the
choice that computes the fewest voxels (windows x window size) within ``max_window_voxels``: one
window over everything when it fits, else e.g. whole slices in a few slabs. A spanning axis is
rounded up to a multiple of :data:`SHAPE_STEP` (and never below the card's window), so scans of
similar size share window shapes: a backend that checks or compiles per input shape (OpenVINO) does
so once for many scans.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Mapping, Sequence

from .sliding_window import window_starts

__all__ = ["SHAPE_STEP", "computed_voxels", "plan_window"]

SHAPE_STEP = 16  # voxels; window sizes are multiples of this (and of the network's size divisor)


def computed_voxels(spatial: Sequence[int], window: Sequence[int], overlap: float) -> int:
    """Voxels the network computes over a volume: windows (as the sliding window places them on the
    volume padded to at least one window) times voxels per window."""
    count = math.prod(len(window_starts(max(s, w), w, overlap)) for s, w in zip(spatial, window))
    return count * math.prod(window)


def plan_window(spatial: Sequence[int], card_window: Sequence[int], inference: Mapping[str, Any],
                divisors: Sequence[int] | None = None) -> tuple[int, ...]:
    """The window for a volume of ``spatial`` voxels (z, y, x): each axis either the card's window or
    the whole axis (rounded up to a common multiple of :data:`SHAPE_STEP` and the network's divisor on that
    axis, ``net.divisors()``, at
    least the card's), the combination that computes the fewest voxels with at most the card's
    ``max_window_voxels`` per window (ties: the smaller window); the card's window without that key."""
    card_window = tuple(int(p) for p in card_window)
    limit = inference.get("max_window_voxels")
    if not limit:
        return card_window
    overlap = float(inference.get("overlap", 0.5))
    steps = [math.lcm(SHAPE_STEP, int(d)) for d in (divisors or (1,) * len(card_window))]
    whole = tuple(max(p, math.ceil(s / q) * q) for s, p, q in zip(spatial, card_window, steps))
    options = {tuple(w if span else p for span, w, p in zip(spans, whole, card_window))
               for spans in itertools.product((False, True), repeat=len(card_window))}
    fitting = [w for w in options if math.prod(w) <= int(limit)] or [card_window]
    return min(fitting, key=lambda w: (computed_voxels(spatial, w, overlap), math.prod(w), w))
