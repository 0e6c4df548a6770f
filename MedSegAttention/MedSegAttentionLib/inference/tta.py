"""Test-time mirroring: average the predictions of the mirrored inputs; their disagreement is uncertainty.

As nnU-Net's test-time augmentation (Isensee et al., Nature Methods 2021, doi:10.1038/s41592-020-01008-z):
the volume is mirrored along every subset of the card's ``inference.mirror_axes`` (2^k members, the
unmirrored one included), each member runs the card's own pipeline, and its probabilities and
evidence maps are mirrored back and averaged. The per-voxel standard deviation of the members'
class probabilities, doubled so that an even split of members reads 1, becomes the ``uncertainty``
map (0 = every mirrored prediction agrees; values in [0, 1]); for several classes the largest over
classes is kept.
"""

from __future__ import annotations

from itertools import combinations
from typing import Callable, Mapping, Sequence

import torch

from .runcontext import RunContext

__all__ = ["UNCERTAINTY_MAP", "mirror_members", "predict_mirrored"]

#: the name of the map test-time mirroring adds (a card offers it in ``maps`` with ``"kind": "uncertainty"``)
UNCERTAINTY_MAP = "uncertainty"

Pipeline = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]


def mirror_members(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of the spatial ``axes`` (0 = z, 1 = y, 2 = x), the empty one (no mirroring) first."""
    axes = sorted({int(a) for a in axes})
    if any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"mirror axes must be spatial axes 0 (z), 1 (y), 2 (x); got {axes}")
    return [subset for k in range(len(axes) + 1) for subset in combinations(axes, k)]


def _mirror(tensor: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """Mirror the last three (z, y, x) dimensions listed in ``axes``; works for (z, y, x) and (C, z, y, x)."""
    return tensor.flip([a - 3 for a in axes]) if axes else tensor


def predict_mirrored(
    pipeline: Pipeline,
    volume: torch.Tensor,
    networks: Mapping[str, torch.nn.Module],
    inference: Mapping[str, object],
    ctx: RunContext,
    with_maps: bool,
    axes: Sequence[int],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean (K, z, y, x) probabilities and mean maps over the mirrored members, plus ``uncertainty``."""
    members = mirror_members(axes)
    total: torch.Tensor | None = None
    squares: torch.Tensor | None = None
    map_sums: dict[str, torch.Tensor] = {}
    for index, axes_of_member in enumerate(members):
        ctx.check_cancel()
        member_ctx = ctx.span(index / len(members), (index + 1) / len(members))
        probs, maps = pipeline(_mirror(volume, axes_of_member), networks, inference, member_ctx, with_maps)
        probs = _mirror(probs.float(), axes_of_member)
        total = probs.clone() if total is None else total.add_(probs)
        squares = probs.square() if squares is None else squares.add_(probs.square())
        for name, value in maps.items():
            value = _mirror(value.float(), axes_of_member)
            map_sums[name] = value.clone() if name not in map_sums else map_sums[name].add_(value)
    assert total is not None and squares is not None
    n = float(len(members))
    mean = total / n
    spread = (squares / n - mean.square()).clamp_min(0.0).sqrt()
    out_maps = {name: value / n for name, value in map_sums.items()}
    if with_maps:
        out_maps[UNCERTAINTY_MAP] = (2.0 * spread).amax(0, keepdim=True).clamp(0.0, 1.0)
    return mean, out_maps
