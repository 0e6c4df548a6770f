"""Inference pipelines, one per card ``inference.mode``; each maps a preprocessed volume to
probabilities and evidence maps on the model grid.

* ``sliding_window``: 3D patches with overlap blending (SIP-Net, ConResNet, RA-UNet-II, 3D ANU-Net).
* ``slicewise``: a 2D network over axial slices (ANU-Net 2D, RA-UNet-I).
* ``raunet_cascade`` and ``rstn_coarse_to_fine``: the paper pipelines, in :mod:`.cascades`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

from ..models import SegmentationNetwork
from .runcontext import RunContext
from .sizes import patch_size_zyx, resize_in_plane, size_yx
from .sliding_window import Prediction, sliding_window_inference, slicewise_inference
from .window_plan import plan_window

Pipeline = Callable[[torch.Tensor, Mapping[str, SegmentationNetwork], Mapping[str, Any], RunContext, bool], Prediction]


def run_sliding_window(
    volume: torch.Tensor, networks: Mapping[str, SegmentationNetwork], inference: Mapping[str, Any], ctx: RunContext, with_maps: bool
) -> Prediction:
    """3D windows: the card's, or windows spanning the volume where the card allows it (:mod:`.window_plan`)."""
    net = networks["main"]
    return sliding_window_inference(
        volume,
        net,
        plan_window(volume.shape[1:], patch_size_zyx(inference), inference, net.divisors()),
        ctx,
        overlap=float(inference.get("overlap", 0.5)),
        blend=str(inference.get("blend", "gaussian")),
        with_maps=with_maps,
    )


def run_slicewise(
    volume: torch.Tensor, networks: Mapping[str, SegmentationNetwork], inference: Mapping[str, Any], ctx: RunContext, with_maps: bool
) -> Prediction:
    """2D network over axial slices; with ``slice_size`` (x, y) each slice is resized to it and the
    outputs back (ANU-Net's 256 x 256 slices, Li et al. 2020 Sec. 4.1)."""
    size = size_yx(inference, "slice_size")
    probs, maps = slicewise_inference(
        resize_in_plane(volume, size), networks["main"], ctx, context=int(inference.get("slice_context", 0)), with_maps=with_maps
    )
    if size is None:
        return probs, maps
    frame = tuple(volume.shape[2:])
    return resize_in_plane(probs, frame), {name: resize_in_plane(value, frame) for name, value in maps.items()}


#: maps a pipeline makes itself (not a network's own), by inference mode; a card may offer them
PIPELINE_MAPS: dict[str, tuple[str, ...]] = {"raunet_cascade": ("localizer.probability",)}


def pipeline_for(mode: str) -> Pipeline:
    if mode == "sliding_window":
        return run_sliding_window
    if mode == "slicewise":
        return run_slicewise
    from . import cascades

    if mode == "raunet_cascade":
        return cascades.run_raunet_cascade
    if mode == "rstn_coarse_to_fine":
        return cascades.run_rstn
    raise ValueError(f"unknown inference mode {mode!r}")
