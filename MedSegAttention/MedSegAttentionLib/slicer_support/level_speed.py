"""Size and speed of each pruning level of a prunable model (ANU-Net L1-L4), measured here and now.

ANU-Net (Li et al. 2020, Sec. 3.5 and Table 6) can be pruned at test time to the sub-network L1, L2
or L3, trading accuracy for speed. The Slicer module shows, next to each level, its parameter count
and the time per slice measured on the user's own device, so the choice is informed. Speed does not
depend on the weights, so the card's network is built with random weights (nothing to install) and
run through the real engine (:class:`MedSegAttentionLib.inference.engine.Predictor`, with the backend a
segmentation would use) on a synthetic volume, after a warm-up run of the same predictor.

Run as a child process (the GUI never imports torch)::

    medseg levels --model anunet-liver-ct --device auto

It prints ``medseg-levels {json}`` after each level (the table so far, parameters first, then the
speeds one by one), ``medseg-progress`` lines, and ``medseg-error`` with exit code 2/3 on bad input
(:mod:`MedSegAttentionLib.protocol`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from ..inference.engine import LEVELS, Predictor
from ..errors import InputError
from ..models import build_network

DEFAULT_SPACING = (0.8, 0.8, 2.5)  # x, y, z mm: a typical abdominal CT slice


def synthetic_volume(slices: int, size: int, spacing: Sequence[float]) -> sitk.Image:
    """A CT-like int16 volume (noise around soft tissue) of ``slices`` axial ``size`` x ``size`` slices."""
    rng = np.random.default_rng(0)
    array = rng.normal(40.0, 30.0, (slices, size, size)).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    return image


def parameter_counts(network: torch.nn.Module, levels: Sequence[str]) -> dict[str, int]:
    """Parameters of each pruned sub-network (Table 6 counts L1-L3 with their single head)."""
    return {level: int(sum(p.numel() for p in network.pruned(LEVELS.index(level) + 1).parameters()))
            for level in levels}


def measure(card: Any, device: str, slices: int, size: int, emit=print, store: Any = None) -> dict[str, Any]:  # noqa: ANN001
    """The level table: parameters for every level, then milliseconds per slice one level at a time.
    With the model ``store`` the backend is the one a segmentation uses (OpenVINO caches its conversion there)."""
    levels = list(card.inference.get("levels") or [])
    if not levels:
        raise InputError(f"model {card.id} has no pruning levels; only prunable models (ANU-Net) do")
    spacing = card.preprocessing.target_spacing or DEFAULT_SPACING
    warmup, timed = synthetic_volume(2, size, spacing), synthetic_volume(slices, size, spacing)
    torch.manual_seed(0)
    networks = {role: build_network(config) for role, config in card.networks.items()}
    counts = parameter_counts(networks["main"], levels)
    table: dict[str, Any] = {"model": card.id, "device": None, "backend": None, "slice_size": [size, size], "slices": slices,
                             "levels": [{"level": level, "parameters": counts[level], "ms_per_slice": None}
                                        for level in levels]}
    emit("levels", **table)
    for index, row in enumerate(table["levels"]):
        emit("progress", fraction=index / len(levels), message=f"timing {row['level']}")
        predictor = Predictor(card, store, device, networks=networks, level=row["level"])
        predictor.predict(warmup, maps=False)  # warm-up: the backend prepares (OpenVINO converts the pruned network)
        result = predictor.predict(timed, maps=False)
        table["device"], table["backend"] = result.device, result.backend
        row["ms_per_slice"] = round(1000.0 * result.timings["inference"] / slices, 1)
        emit("levels", **table)
    emit("progress", fraction=1.0, message="done")
    return table
