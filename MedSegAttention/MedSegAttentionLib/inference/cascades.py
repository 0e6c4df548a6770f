"""The paper pipelines that chain networks: the RA-UNet cascade and RSTN's coarse-to-fine iteration."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from ..models import SegmentationNetwork
from .postprocessing import bounding_box, keep_largest_component
from .runcontext import RunContext
from .sizes import resize_in_plane, size_yx, stage_patch_zyx
from .sliding_window import Prediction, sliding_window_inference, slicewise_inference


def _prefixed(role: str, maps: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{role}.{name}": value for name, value in maps.items()}


def run_raunet_cascade(
    volume: torch.Tensor,
    networks: Mapping[str, SegmentationNetwork],
    inference: Mapping[str, Any],
    ctx: RunContext,
    with_maps: bool,
) -> Prediction:
    """RA-UNet test time (Jin et al. 2020, doi:10.3389/fbioe.2020.605132, Sec. III-E to III-G).

    1. RA-UNet-I runs on every axial slice, resized to ``localizer_size`` in-plane (paper 256 x 256);
       its probabilities are interpolated back, the largest 3D component of the liver mask gives the
       liver box (grown by ``box_margin`` voxels).
    2. RA-UNet-II (``liver``) runs on the box resized in-plane to ``liver_box_size`` (paper 224 x 224,
       the axial length kept) in ``liver_patch_size`` windows (paper 224 x 224 x 32); the merged
       probabilities are interpolated back to the box and the largest component is the liver
       (``liver_largest_component``, default on as the paper).
    3. RA-UNet-II (``tumour``) runs on the box at the card's grid, without interpolation, in
       ``tumour_patch_size`` windows (paper 128 x 128 x 32); ``tumour_gate: hard`` (the paper:
       "we filtered out those voxels which were not in the liver region") keeps tumour only inside
       that liver. ``soft`` (the project's earlier composition) gives P(tumour) = P(liver) P(tumour),
       P(liver only) = P(liver) (1 - P(tumour)) instead.
    Sizes left out of the card run the stage at the card's grid with ``patch_size``. Maps of each
    stage are named ``<role>.<map>``, on the card's grid, zero outside the box; ``localizer.probability``
    is RA-UNet-I's foreground probability (before the largest component), on the whole grid. A card without a
    ``tumour`` network (an organ with no lesion stage, e.g. the left atrium) stops after step 2: the
    largest component of RA-UNet-II's mask is the organ, and the output has two classes.
    """
    overlap, blend = float(inference.get("overlap", 0.5)), str(inference.get("blend", "gaussian"))
    margin = int(inference.get("box_margin", 4))
    gate = str(inference.get("tumour_gate", "hard"))
    if gate not in ("hard", "soft"):
        raise ValueError(f"inference.tumour_gate must be 'hard' or 'soft', got {gate!r}")
    spatial = tuple(volume.shape[1:])
    maps: dict[str, torch.Tensor] = {}

    small = resize_in_plane(volume, size_yx(inference, "localizer_size"))
    coarse, coarse_maps = slicewise_inference(small, networks["localizer"], ctx.span(0.0, 0.3), with_maps=with_maps)
    coarse = resize_in_plane(coarse, spatial[1:])
    maps.update(_prefixed("localizer", {k: resize_in_plane(v, spatial[1:]) for k, v in coarse_maps.items()}))
    if with_maps:  # RA-UNet-I's own evidence: where it localises the organ (its largest component is the box)
        maps["localizer.probability"] = coarse[1:].sum(0, keepdim=True).clamp(0, 1)  # see pipelines.PIPELINE_MAPS
    liver_mask = keep_largest_component((coarse.argmax(0) > 0).cpu().numpy().astype(np.uint8))
    box = bounding_box(liver_mask, margin)
    roles = [role for role in ("liver", "tumour") if role in networks]
    probabilities = torch.zeros((len(roles) + 1,) + spatial, device=coarse.device)
    probabilities[0] = 1.0
    if box is None:
        ctx.warn("RA-UNet localiser found no organ (RA-UNet-I's mask is empty); the segmentation is empty")
        ctx.report(1.0, "no organ found")
        return probabilities, {**maps, **_empty_stage_maps(networks, roles, spatial, coarse.device, with_maps)}

    cropped = volume[(slice(None),) + box]
    box_yx = tuple(cropped.shape[2:])
    resized = resize_in_plane(cropped, size_yx(inference, "liver_box_size"))
    liver, liver_maps = sliding_window_inference(resized, networks["liver"], stage_patch_zyx(inference, "liver_patch_size"),
                                                 ctx.span(0.3, 0.65), overlap, blend, with_maps)
    liver = resize_in_plane(liver, box_yx)
    liver_maps = {k: resize_in_plane(v, box_yx) for k, v in liver_maps.items()}
    stage_maps = {"liver": liver_maps}
    if "tumour" in networks:
        tumour, stage_maps["tumour"] = sliding_window_inference(
            cropped, networks["tumour"], stage_patch_zyx(inference, "tumour_patch_size"), ctx.span(0.65, 1.0),
            overlap, blend, with_maps)
        stage = _with_tumour(liver[1], tumour[1:].sum(0) if tumour.shape[0] > 2 else tumour[1], inference, gate)
    else:
        inside = _organ_mask(liver[1], inference)
        stage = torch.stack([~inside, inside]).float()
        ctx.report(1.0, "organ segmented")
    probabilities[(slice(None),) + box] = stage
    for role, role_maps in stage_maps.items():
        for name, value in role_maps.items():
            full = torch.zeros((value.shape[0],) + spatial, device=value.device)
            full[(slice(None),) + box] = value
            maps[f"{role}.{name}"] = full
    return probabilities, maps


def _organ_mask(p_organ: torch.Tensor, inference: Mapping[str, Any]) -> torch.Tensor:
    """RA-UNet-II's organ mask: p >= 0.5, its largest component unless ``liver_largest_component`` is off."""
    mask = (p_organ >= 0.5).cpu().numpy().astype(np.uint8)
    if inference.get("liver_largest_component", True):
        mask = keep_largest_component(mask)
    return torch.from_numpy(mask.astype(bool)).to(p_organ.device)


def _with_tumour(p_liver: torch.Tensor, p_tumour: torch.Tensor, inference: Mapping[str, Any], gate: str) -> torch.Tensor:
    """(background, liver, tumour) in the box: tumour kept only inside the liver (``hard``) or composed
    as probabilities (``soft``), see :func:`run_raunet_cascade`."""
    if gate == "hard":
        inside = _organ_mask(p_liver, inference)
        is_tumour = inside & (p_tumour >= 0.5)
        return torch.stack([~inside, inside & ~is_tumour, is_tumour]).float()
    return torch.stack([1 - p_liver, p_liver * (1 - p_tumour), p_liver * p_tumour])


def _empty_stage_maps(
    networks: Mapping[str, SegmentationNetwork], roles: list[str], spatial: tuple[int, ...], device: torch.device,
    with_maps: bool,
) -> dict[str, torch.Tensor]:
    if not with_maps:
        return {}
    return {f"{role}.{name}": torch.zeros((1,) + spatial, device=device) for role in roles for name in networks[role].map_names}


#: view name -> permutation of a (C, D, H, W) volume that puts that view's slicing axis first
VIEWS = {"axial": (0, 1, 2, 3), "coronal": (0, 2, 1, 3), "sagittal": (0, 3, 1, 2)}


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(perm.index(i) for i in range(len(perm)))


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    total = float(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


#: the paper's terminating thresholds on the inter-round Dice (Yu et al. 2018, "Convergence"): 0.95 as
#: Zhou et al. 2016; 0.99 gave the best model (80 of 82 cases converged, mean 5.22 rounds)
RSTN_STOP_DICE = (0.90, 0.95, 0.99)
RSTN_MAX_ROUNDS = 10  # the paper's T


def run_rstn(
    volume: torch.Tensor,
    networks: Mapping[str, SegmentationNetwork],
    inference: Mapping[str, Any],
    ctx: RunContext,
    with_maps: bool,
) -> Prediction:
    """RSTN test time (Yu et al. 2018, arXiv:1709.04518, "Training and Testing").

    Round 0: the coarse network of each view runs over all slices of its view and the three views'
    probabilities are averaged: the initial segmentation Z(0). Rounds t = 1..``max_rounds`` (paper
    T = 10): each view's :meth:`RSTN.refine` takes the fused foreground probability of round t-1 as
    saliency source and crop mask, and the views' fine probabilities are averaged into Z(t). The
    iteration stops when the Dice between the masks of Z(t-1) and Z(t) reaches ``stop_dice`` (the
    paper's t: 0.90, 0.95 or 0.99, its best model 0.99). In every pass each slice's probability is
    the mean of the up to three windows (three-slice inputs) that predict it (``slice_average``, the
    paper's test procedure; ``false`` keeps the window centred on the slice). Views without a network
    in the card are skipped. Maps: ``coarse_probability`` (the foreground probability of Z(0)) and
    ``saliency`` (last round, mean over views and channels of the raw weights the module applies).
    """
    context = int(inference.get("slice_context", 1))
    max_rounds = int(inference.get("max_rounds", RSTN_MAX_ROUNDS))
    stop_dice = float(inference.get("stop_dice", RSTN_STOP_DICE[-1]))
    slice_average = bool(inference.get("slice_average", True))
    views = [v for v in VIEWS if v in networks]

    def fused_pass(span: RunContext, guide: torch.Tensor | None, stage: str = "full") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        probs_sum: torch.Tensor | None = None
        maps_sum: dict[str, torch.Tensor] = {}
        for i, view in enumerate(views):
            perm = VIEWS[view]
            view_guide = guide.permute(*[p - 1 for p in perm[1:]]) if guide is not None else None
            probs, maps = slicewise_inference(
                volume.permute(*perm), networks[view], span.span(i / len(views), (i + 1) / len(views)),
                context=context, with_maps=with_maps, guide=view_guide, stage=stage, slice_average=slice_average,
            )
            probs = probs.permute(*_inverse(perm))
            probs_sum = probs if probs_sum is None else probs_sum + probs
            for name, value in maps.items():
                value = value.mean(0, keepdim=True).permute(*_inverse(perm))
                maps_sum[name] = maps_sum[name] + value if name in maps_sum else value
        assert probs_sum is not None
        return probs_sum / len(views), {k: v / len(views) for k, v in maps_sum.items()}

    probabilities, maps = fused_pass(ctx.span(0.0, 0.2), None, stage="coarse")
    out_maps = {"coarse_probability": (1.0 - probabilities[0])[None]} if with_maps else {}  # Z(0)'s foreground
    mask = probabilities[0] < 0.5
    for round_index in range(1, max_rounds + 1):
        span = ctx.span(0.2 + 0.8 * (round_index - 1) / max_rounds, 0.2 + 0.8 * round_index / max_rounds)
        probabilities, maps = fused_pass(span, 1.0 - probabilities[0])
        if with_maps:
            out_maps["saliency"] = maps["saliency"]
        new_mask = probabilities[0] < 0.5
        agreement = _dice(mask, new_mask)
        mask = new_mask
        ctx.report(1.0 if agreement >= stop_dice else 0.0, f"round {round_index}: inter-round Dice {agreement:.3f}")
        if agreement >= stop_dice:
            break
    else:
        ctx.warn(f"RSTN did not converge: inter-round Dice stayed below {stop_dice} after {max_rounds} rounds")
    return probabilities, out_maps
