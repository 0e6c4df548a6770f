"""Patch-based 3D inference and slice-wise 2D inference with blending of probabilities and maps.

Windows are placed evenly (the first at 0, the last flush with the end, neighbours overlapping by at
least ``overlap``), predicted in batches, and blended with a Gaussian (sigma = patch/8, as nnU-Net and
MONAI do) or a constant importance. Probabilities (softmax) and the evidence maps are accumulated on
the compute device with the same weights, so a map is stitched exactly like the segmentation.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..models import SegmentationNetwork
from .runcontext import RunContext, channels_last_format

Prediction = tuple[torch.Tensor, dict[str, torch.Tensor]]


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices along one axis: evenly spread, first at 0, last at ``size - patch``."""
    if size <= patch:
        return [0]
    step = max(1, int(patch * (1.0 - overlap)))
    count = math.ceil((size - patch) / step) + 1
    return sorted({int(round(v)) for v in np.linspace(0, size - patch, count)})


def importance_map(patch: Sequence[int], blend: str, device: torch.device) -> torch.Tensor:
    """Blending weight of a window: Gaussian (sigma = patch / 8) or constant; never zero."""
    if blend == "constant":
        return torch.ones(tuple(patch), device=device)
    if blend != "gaussian":
        raise ValueError(f"unknown blend mode {blend!r}; use 'gaussian' or 'constant'")
    axes = []
    for n in patch:
        coords = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2.0
        axes.append(torch.exp(-0.5 * (coords / (n / 8.0)) ** 2))
    weight = axes[0]
    for axis in axes[1:]:
        weight = weight[..., None] * axis
    weight = weight / weight.max()
    return weight.clamp_min(float(weight[weight > 0].min()))


def _filled(batch: torch.Tensor, ctx: RunContext) -> torch.Tensor:
    """The batch repeated up to ``ctx.batch_size`` items when the context asks for one batch shape (a
    compiled network would compile again for a shorter last batch); callers read the first items only."""
    missing = ctx.batch_size - batch.shape[0]
    if not ctx.fixed_batch or missing <= 0:
        return batch
    return torch.cat([batch, batch[-1:].expand(missing, *batch.shape[1:])])


def _predict(
    net: SegmentationNetwork, batch: torch.Tensor, ctx: RunContext, with_maps: bool, guide: torch.Tensor | None = None,
    stage: str = "full", all_slices: bool = False,
) -> Prediction:
    """Softmax probabilities (B, K, ...) and maps of one batch; with ``all_slices`` (RSTN's test-time
    stages: a guide or ``stage="coarse"``) the probabilities of every slice it predicts, (B, S, K, H, W)."""
    if guide is None and stage == "full" and ctx.runner is not None and ctx.runner.accepts(net):
        if ctx.runner.needs_preparation(net, with_maps):  # seconds without progress otherwise: say why
            ctx.report(0.0, "OpenVINO: preparing the network (once per model, then cached)")
        out = ctx.runner.forward(net, batch, with_maps)  # None: this network went back to PyTorch
        if out is not None:
            return torch.softmax(out.logits.float(), dim=1), {k: v.float() for k, v in out.maps.items()}
    if ctx.use_channels_last(batch.ndim - 2):
        batch = batch.contiguous(memory_format=channels_last_format(batch.ndim - 2))
    with torch.autocast(device_type=ctx.device.type, dtype=ctx.amp_dtype, enabled=ctx.use_amp):
        if guide is not None:
            out = net.refine(batch, guide, return_maps=with_maps, all_slices=all_slices)  # type: ignore[operator]
        elif stage == "coarse":
            out = net.coarse_pass(batch, return_maps=with_maps, all_slices=all_slices)  # type: ignore[operator]
        else:
            out = net(batch, return_maps=with_maps)
    logits = out.logits.float()
    if all_slices:
        logits = logits.unflatten(1, (int(net.output_slices), -1))  # type: ignore[attr-defined]
    return torch.softmax(logits, dim=2 if all_slices else 1), {k: v.float() for k, v in out.maps.items()}


@torch.inference_mode()
def sliding_window_inference(
    volume: torch.Tensor,
    net: SegmentationNetwork,
    patch_size: Sequence[int],
    ctx: RunContext,
    overlap: float = 0.5,
    blend: str = "gaussian",
    with_maps: bool = False,
) -> Prediction:
    """Predict a (C, D, H, W) volume with a 3D network; returns probabilities (K, D, H, W) and maps.

    A volume smaller than the patch along an axis is replicate-padded to the patch and cropped back.
    Results are float32 on the compute device.
    """
    spatial = tuple(volume.shape[1:])
    patch = tuple(int(p) for p in patch_size)
    pads: list[int] = []
    for s, p in zip(reversed(spatial), reversed(patch)):
        pads += [0, max(0, p - s)]
    padded = F.pad(volume[None], pads, mode="replicate")[0] if any(pads) else volume
    padded = padded.to(ctx.device, non_blocking=True)
    full = tuple(padded.shape[1:])
    starts = [window_starts(s, p, overlap) for s, p in zip(full, patch)]
    corners = [(z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]]
    weight = importance_map(patch, blend, ctx.device)

    probs_sum: torch.Tensor | None = None
    maps_sum: dict[str, torch.Tensor] = {}
    weight_sum = torch.zeros(full, device=ctx.device)
    for first in range(0, len(corners), ctx.batch_size):
        ctx.report(first / len(corners), f"sliding window {first + 1}/{len(corners)}")
        chunk = corners[first : first + ctx.batch_size]
        slices = [tuple(slice(c, c + p) for c, p in zip(corner, patch)) for corner in chunk]
        batch = torch.stack([padded[(slice(None),) + sl] for sl in slices])
        probabilities, maps = _predict(net, _filled(batch, ctx), ctx, with_maps)
        if probs_sum is None:
            probs_sum = torch.zeros((probabilities.shape[1],) + full, device=ctx.device)
        for i, sl in enumerate(slices):
            probs_sum[(slice(None),) + sl] += probabilities[i] * weight
            weight_sum[sl] += weight
            for name, value in maps.items():
                if name not in maps_sum:
                    maps_sum[name] = torch.zeros((value.shape[1],) + full, device=ctx.device)
                maps_sum[name][(slice(None),) + sl] += value[i] * weight
    ctx.report(1.0, "sliding window done")
    assert probs_sum is not None
    crop = (slice(None),) + tuple(slice(0, s) for s in spatial)
    weight_sum = weight_sum[crop[1:]]
    return probs_sum[crop] / weight_sum, {k: (v[crop] / weight_sum).clamp_(0, 1) for k, v in maps_sum.items()}


def slice_stack(volume: torch.Tensor, indices: Sequence[int], context: int) -> torch.Tensor:
    """(B, C * (2 * context + 1), H, W): each slice with ``context`` neighbours on each side (clamped)."""
    depth = volume.shape[1]
    stacks = []
    for z in indices:
        neighbours = [min(max(z + d, 0), depth - 1) for d in range(-context, context + 1)]
        stacks.append(volume[:, neighbours].reshape(-1, *volume.shape[2:]))
    return torch.stack(stacks)


@torch.inference_mode()
def slicewise_inference(
    volume: torch.Tensor,
    net: SegmentationNetwork,
    ctx: RunContext,
    context: int = 0,
    with_maps: bool = False,
    guide: torch.Tensor | None = None,
    stage: str = "full",
    slice_average: bool = False,
) -> Prediction:
    """Predict a (C, D, H, W) volume with a 2D network, axial slice by slice (axis D).

    ``context`` neighbouring slices on each side are stacked as extra channels (RSTN uses 1: three
    slices). With ``guide`` (D, H, W), a per-slice probability, the network's ``refine(x, guide)``
    step runs instead of its forward pass (RSTN's test-time rounds), given the guide of every slice it
    predicts (``output_slices`` around the centre); ``stage="coarse"`` runs its ``coarse_pass`` (RSTN's
    round 0). ``slice_average`` (RSTN test time, Yu et al. 2018): a network that predicts its
    ``output_slices`` input slices gives each slice the mean probability of the up to
    ``output_slices`` windows that cover it (windows reaching past the volume count only inside it);
    maps stay those of the window centred on the slice. Returns probabilities (K, D, H, W) and maps
    (C_m, D, H, W) on the compute device.
    """
    volume = volume.to(ctx.device, non_blocking=True)
    if guide is not None:
        guide = guide.to(ctx.device, non_blocking=True)
    depth = volume.shape[1]
    slices = int(getattr(net, "output_slices", 1))
    average = slice_average and slices > 1 and (guide is not None or stage == "coarse")
    covered = torch.zeros(depth, device=ctx.device)  # windows that covered each slice (slice_average)
    probs_out: torch.Tensor | None = None
    maps_out: dict[str, torch.Tensor] = {}
    for first in range(0, depth, ctx.batch_size):
        ctx.report(first / depth, f"slices {first + 1}-{min(depth, first + ctx.batch_size)}/{depth}")
        indices = list(range(first, min(depth, first + ctx.batch_size)))
        batch = slice_stack(volume, indices, context)
        side = None
        if guide is not None:  # the guide of every slice the network predicts (RSTN: the three input slices)
            side = slice_stack(guide[None], indices, slices // 2) if slices > 1 else guide[indices][:, None]
        probabilities, maps = _predict(net, _filled(batch, ctx), ctx, with_maps, None if side is None else _filled(side, ctx),
                                       stage, all_slices=average)
        probabilities, maps = probabilities[: len(indices)], {k: v[: len(indices)] for k, v in maps.items()}
        if probs_out is None:
            classes = probabilities.shape[2 if average else 1]
            probs_out = torch.zeros((classes, depth) + tuple(volume.shape[2:]), device=ctx.device)
        if average:
            _add_window_slices(probs_out, covered, probabilities, indices)
        else:
            probs_out[:, indices] = probabilities.transpose(0, 1)
        for name, value in maps.items():
            if name not in maps_out:
                maps_out[name] = torch.zeros((value.shape[1], depth) + tuple(volume.shape[2:]), device=ctx.device)
            maps_out[name][:, indices] = value.transpose(0, 1)
    ctx.report(1.0, "slices done")
    assert probs_out is not None
    if average:
        probs_out /= covered.view(1, depth, *([1] * (probs_out.ndim - 2)))
    return probs_out, maps_out


def _add_window_slices(total: torch.Tensor, covered: torch.Tensor, probabilities: torch.Tensor, centres: Sequence[int]) -> None:
    """Add each window's (S, K, H, W) slice probabilities to the slices they predict (centre - S//2 ..
    centre + S//2, those inside the volume) and count the windows per slice."""
    half, depth = probabilities.shape[1] // 2, total.shape[1]
    for item, centre in enumerate(centres):
        for offset in range(-half, half + 1):
            z = centre + offset
            if 0 <= z < depth:
                total[:, z] += probabilities[item, offset + half]
                covered[z] += 1


def choose_batch_size(
    net: SegmentationNetwork,
    window: Sequence[int],
    in_channels: int,
    ctx: RunContext,
    budget_gib: float = 8.0,
    reserved_bytes: int = 0,
    largest: int = 32,
) -> int:
    """Windows per batch that keep peak GPU memory within ``budget_gib`` (and the free memory).

    Measures the peak of one window's forward pass (with maps, the costlier case) and divides what
    is left of the budget after ``reserved_bytes`` (the accumulators) by it. CPU/MPS: unchanged.
    """
    if ctx.device.type != "cuda":
        return ctx.batch_size
    torch.cuda.synchronize(ctx.device)
    torch.cuda.reset_peak_memory_stats(ctx.device)
    before = torch.cuda.memory_allocated(ctx.device)
    probe = torch.zeros((1, in_channels, *window), device=ctx.device)
    with torch.inference_mode():
        _predict(net, probe, ctx, with_maps=True)
    per_window = max(torch.cuda.max_memory_allocated(ctx.device) - before, 1)
    free, _ = torch.cuda.mem_get_info(ctx.device)
    budget = min(budget_gib * 2**30 - before - reserved_bytes, 0.9 * free)
    return int(max(1, min(largest, budget // per_window)))
