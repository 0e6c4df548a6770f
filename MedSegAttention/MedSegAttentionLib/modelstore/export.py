"""Write a model for distribution: safetensors weights plus a model card carrying their SHA-256.

Used by ``training`` after a run and by tests that need installable random-weight models. The card
produced here is what ``medseg install-weights --card`` accepts unchanged.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from .cards import ModelCard
from ..models import SegmentationNetwork
from .weights import save_weights

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def export_model(
    card: Mapping[str, Any],
    networks: Mapping[str, SegmentationNetwork],
    out_dir: str | os.PathLike[str],
    dtype: str = "float32",
    provenance: Mapping[str, Any] | None = None,
    url: str | None = None,
) -> tuple[Path, Path]:
    """Save ``networks`` (by role) and a completed copy of ``card``; returns (card path, weights path).

    The card's ``networks`` section is rewritten from the networks' own configs, so card and weights
    can never disagree about the architecture.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = copy.deepcopy(dict(card))
    data["networks"] = {role: {"config": net.config} for role, net in networks.items()}
    weights_path = out_dir / f"{data['id']}.safetensors"
    digest = save_weights({role: net.state_dict() for role, net in networks.items()}, weights_path, DTYPES[dtype])
    data["weights"] = {
        "file": weights_path.name,
        "sha256": digest,
        "url": url,
        "size_bytes": weights_path.stat().st_size,
        "dtype": dtype,
        "provenance": dict(provenance or {}),
    }
    validated = ModelCard.from_dict(data, source=str(out_dir / f"{data['id']}.json"))
    card_path = out_dir / f"{data['id']}.json"
    card_path.write_text(validated.to_json(), encoding="utf-8")
    return card_path, weights_path
