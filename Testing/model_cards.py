"""Temporary, installable random-weight models for engine, CLI and Slicer tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from MedSegAttentionLib.modelstore.export import export_model
from MedSegAttentionLib.models import build_network
from MedSegAttentionLib.modelstore.store import ModelStore

PROSTATE = {
    "value": 1,
    "name": "prostate",
    "color": [0.9, 0.6, 0.5],
    "terminology": {
        "category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
        "type": {"scheme": "SCT", "code": "41216001", "meaning": "Prostate"},
    },
}

LIVER = {
    "value": 1, "name": "liver", "color": [0.87, 0.47, 0.36],
    "terminology": {"category": PROSTATE["terminology"]["category"], "type": {"scheme": "SCT", "code": "10200004", "meaning": "Liver"}},
}
TUMOUR = {
    "value": 2, "name": "liver tumour", "color": [0.55, 0.9, 0.35],
    "terminology": {"category": {"scheme": "SCT", "code": "49755003", "meaning": "Morphologically Altered Structure"},
                    "type": {"scheme": "SCT", "code": "108369006", "meaning": "Neoplasm"}},
}
TINY_RAUNET_2D = {"name": "raunet_2d", "base_channels": 8, "mask_depths": [0, 1]}
TINY_RAUNET_3D = {"name": "raunet_3d", "base_channels": 4, "mask_depths": [0, 1]}
TINY_RSTN = {"name": "rstn", "base_channels": 4, "margin": 4}
TINY_ANUNET = {"name": "anunet", "spatial_dims": 2, "features": [4, 8, 8, 16, 16]}
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


def tiny_ct_card(model_id: str, networks: dict[str, dict[str, Any]], labels: list[dict[str, Any]], maps: list[dict[str, Any]], **inference: Any) -> dict[str, Any]:
    """A CT card (HU window) for the cascades and 2D models, built from tiny network configs."""
    card = tiny_card(model_id)
    card.update(
        modality="CT",
        labels=copy.deepcopy(labels),
        preprocessing={"target_spacing": [1.5, 1.5, 2.0], "intensity": {"method": "ct_window", "window": [-100, 240]}},
        inference={"batch_size": 4, **inference},
        maps=maps,
        networks={role: {"config": dict(config)} for role, config in networks.items()},
    )
    return card


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
