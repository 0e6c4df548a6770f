"""Validation on whole volumes with the engine's own inference (sliding windows or slice by slice).

Each validation case is predicted exactly as a stage runs inside the card's pipeline: 3D networks
with :func:`MedSegAttentionLib.inference.sliding_window.sliding_window_inference` (the card's patch size,
overlap and blending) on the stage's region (the whole volume, or RA-UNet's liver box), 2D networks
with :func:`~MedSegAttentionLib.inference.sliding_window.slicewise_inference` over the role's view with the
recipe's slice context. Metrics (Dice, IoU, VOE, RVD, HD95, ASSD) are per foreground class on the
model grid with its spacing; the mean foreground Dice picks the best checkpoint.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from MedSegAttentionLib.inference.pipelines import pipeline_for
from MedSegAttentionLib.inference.runcontext import RunContext

from .preprocessed import Volume

from .sampling import prepare_volume
from .metrics import case_metrics

__all__ = ["predict_volume", "validate"]


def predict_volume(net: torch.nn.Module, image: np.ndarray, recipe: Mapping[str, Any], card: Mapping[str, Any],
                   device: torch.device, batch_size: int = 2) -> np.ndarray:
    """Class-index prediction (*spatial) of a prepared (C, *spatial) array, by the engine's own pipeline
    for one network: slice by slice (2D stages, the recipe's slice context) or the card's windows (3D)."""
    ctx = RunContext(device=device, batch_size=batch_size, amp=False)
    volume = torch.from_numpy(np.ascontiguousarray(image))
    sampling, inference = recipe["sampling"], dict(card.get("inference", {}))
    if sampling["mode"] == "slice":
        mode, inference = "slicewise", {"slice_context": int(sampling.get("slice_context") or 0)}
    else:
        mode = "sliding_window"
        role_patch = inference.get(f"{recipe.get('role')}_patch_size")  # a cascade stage's own windows (RA-UNet)
        if role_patch:
            inference["patch_size"] = role_patch
        elif "patch_size" not in inference:
            inference["patch_size"] = sampling["patch_size"]
    probs, _ = pipeline_for(mode)(volume, {"main": net}, inference, ctx, False)
    return probs.argmax(0).cpu().numpy()


def validate(net: torch.nn.Module, volumes: Sequence[Volume], recipe: Mapping[str, Any], card: Mapping[str, Any],
             device: torch.device, num_classes: int) -> list[dict[str, Any]]:
    """Per-case rows ``{"case", "class", dice, iou, voe, rvd, hd95, assd}`` for this rank's ``volumes``."""
    was_training = net.training
    net.eval()
    rows: list[dict[str, Any]] = []
    try:
        for volume in volumes:
            image, label, spacing = prepare_volume(volume, recipe)
            pred = predict_volume(net, image, recipe, card, device, int(recipe["validation"].get("batch_size", 2)))
            per_class = case_metrics(pred, label, spacing, classes=list(range(1, num_classes)))
            for cls, values in per_class.items():
                rows.append({"case": volume.case_id, "class": int(cls), **values})
    finally:
        net.train(was_training)
    return rows


def mean_dice(rows: Sequence[Mapping[str, Any]]) -> float:
    """Mean of the per-case mean foreground Dice (NaN-free: Dice is always defined)."""
    by_case: dict[str, list[float]] = {}
    for row in rows:
        by_case.setdefault(row["case"], []).append(float(row["dice"]))
    return float(np.mean([np.mean(v) for v in by_case.values()])) if by_case else math.nan


def summary_means(rows: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Mean of each metric over cases and classes (NaNs skipped; None where nothing is defined)."""
    out: dict[str, float | None] = {}
    for metric in ("dice", "iou", "voe", "rvd", "hd95", "assd"):
        values = [float(r[metric]) for r in rows if not math.isnan(float(r[metric]))]
        out[metric] = float(np.mean(values)) if values else None
    return out
