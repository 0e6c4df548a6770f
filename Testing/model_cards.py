"""Temporary, installable random-weight models for engine, CLI and Slicer tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from MedSegAttentionLib.export import export_model
from MedSegAttentionLib.models import build_network
from MedSegAttentionLib.store import ModelStore

PROSTATE = {
    "value": 1,
    "name": "prostate",
    "color": [0.9, 0.6, 0.5],
    "terminology": {
        "category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
        "type": {"scheme": "SCT", "code": "41216001", "meaning": "Prostate"},
    },
}

TINY_SIPNET = {"name": "sipnet", "init_filters": 8, "growth_rate": 4, "down_layers": [1, 1, 1], "up_layers": [1, 1, 1]}


def tiny_card(model_id: str = "tiny-sipnet-mr", network: dict[str, Any] | None = None, **inference: Any) -> dict[str, Any]:
    """A valid card for a tiny random SIP-Net (MR, one label, three attention maps)."""
    return {
        "schema_version": 1,
        "id": model_id,
        "title": "Tiny SIP-Net for tests",
        "paper": {"title": "SIP-Net", "authors": "Zhu et al.", "venue": "test", "year": 2020},
        "modality": "MR",
        "input_channels": 1,
        "labels": [copy.deepcopy(PROSTATE)],
        "preprocessing": {"target_spacing": [1.0, 1.0, 1.5], "intensity": {"method": "zscore", "nonzero": False}},
        "inference": {"mode": "sliding_window", "patch_size": [16, 16, 16], "overlap": 0.25, "batch_size": 2, **inference},
        "maps": [
            {"name": f"attention_{i}", "title": f"SIP-Net attention mask {i}", "kind": "attention"} for i in (1, 2, 3)
        ],
        "networks": {"main": {"config": dict(network or TINY_SIPNET)}},
        "weights": None,
    }


def install_random_model(store_root: Path, card: dict[str, Any] | None = None, seed: int = 0) -> tuple[ModelStore, str, Path]:
    """Export random weights for ``card`` and install them; returns the store, model id and weights file."""
    import torch

    card = card or tiny_card()
    torch.manual_seed(seed)
    networks = {role: build_network(entry["config"]) for role, entry in card["networks"].items()}
    card_path, weights_path = export_model(card, networks, store_root.parent / f"export-{card['id']}")
    store = ModelStore(store_root)
    store.install_card(card_path, weights_path)
    return store, card["id"], weights_path
