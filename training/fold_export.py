"""Export a trained fold: every role's best checkpoint as safetensors plus a model card.

Uses :func:`MedSegAttentionLib.modelstore.export.export_model`, so the card (config from the networks
themselves, preprocessing and labels from the recipe's card, SHA-256 of the weights, provenance with
the validation metrics) is exactly what ``medseg install-weights --card`` accepts. A cascade card
(RA-UNet's localizer/liver/tumour, RSTN's three views) is exported once all its roles are trained.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
from pathlib import Path
from typing import Any

import torch

from MedSegAttentionLib.modelstore.export import export_model
from MedSegAttentionLib.models import build_network

from .checkpoint import load_checkpoint
from .recipes import Recipe

__all__ = ["export_fold", "json_safe", "missing_roles"]


def json_safe(value: Any) -> Any:
    """JSON-safe: NaN/inf become None, tuples lists."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def missing_roles(recipe: Recipe, fold_dir: Path) -> list[str]:
    """Roles of the card without a ``best.pt`` in ``fold_dir/<role>/``."""
    return [role for role in recipe.roles if not (fold_dir / role / "best.pt").is_file()]


def export_fold(recipe: Recipe, fold_dir: str | Path, out_dir: str | Path | None = None, dtype: str = "float32",
                extra: dict[str, Any] | None = None) -> tuple[Path, Path] | None:
    """Export the best weights of every role under ``fold_dir``; None (and nothing written) while a
    role is still untrained. Returns (card path, weights path)."""
    fold_dir = Path(fold_dir)
    if missing_roles(recipe, fold_dir):
        return None
    networks, validation = {}, {}
    for role in recipe.roles:
        state = load_checkpoint(fold_dir / role / "best.pt")
        net = build_network(state["config"])
        net.load_state_dict(state["model"])
        networks[role] = net.eval()
        validation[role] = {"step": int(state["step"]), "mean_dice": state.get("mean_dice"),
                            "metrics": state.get("metrics", {}), "cases": state.get("n_cases")}
    provenance = {
        "trained_with": "python -m training fit",
        "recipe": recipe.name,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "label_mapping": recipe["data"].get("label_mapping"),
        **({"recipe_changes": list(recipe.overrides)} if recipe.overrides else {}),  # --set and --max-steps: a warm start, a schedule
        "validation": validation,
        **(extra or {}),
    }
    target = Path(out_dir) if out_dir is not None else fold_dir / "export"
    return export_model(recipe.card, networks, target, dtype=dtype, provenance=json_safe(provenance))
