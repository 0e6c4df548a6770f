"""What the Slicer module's helper processes report, turned into what its panel shows.

The GUI process never imports torch (CUDA stays out of Slicer's process), so it learns about the
GPU, the model list and the ANU-Net levels from short child processes; these functions read their
answers. Plain Python: no Qt, no Slicer, no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..choices import DEVICE_CHOICES

DEVICES = DEVICE_CHOICES  # the module's device choices, in combo-box order


def describe_devices(info: dict[str, Any] | None) -> tuple[str, list[str]]:
    """A summary line and the device combo texts (same order as :data:`DEVICES`) from ``medseg-devices``:
    each GPU choice names its card, or says that this computer does not have it."""
    if not info or not info.get("torch"):
        detail = f" ({info['error']})" if info and info.get("error") else ""
        return f"PyTorch is not installed yet; it is installed on first use{detail}.", list(DEVICES)
    gpus = [f"{gpu['name']}, {gpu['memory_gib']} GiB" for gpu in info.get("cuda") or []]
    labels = []
    for choice in DEVICES:
        index = 0 if choice == "cuda" else int(choice.partition(":")[2]) if choice.startswith("cuda:") else None
        if index is not None:
            labels.append(f"{choice} ({gpus[index] if index < len(gpus) else 'not available'})")
        elif choice == "mps":
            labels.append("mps (Apple GPU)" if info.get("mps") else "mps (not available)")
        elif choice == "auto":
            labels.append(f"auto ({gpus[0]})" if gpus else "auto (Apple GPU)" if info.get("mps") else "auto (CPU)")
        else:
            labels.append(choice)
    if gpus:
        more = f" (+{len(gpus) - 1} more)" if len(gpus) > 1 else ""
        return f"PyTorch {info['torch']}; GPU: {gpus[0]}{more}", labels
    if info.get("mps"):
        return f"PyTorch {info['torch']}; Apple GPU (MPS) found.", labels
    return f"PyTorch {info['torch']}; no CUDA GPU found, the CPU will be used.", labels


def parse_model_list(text: str) -> list[dict[str, Any]]:
    """The entries of ``medseg models --json`` (anything printed before the JSON array is ignored)."""
    start = text.find("[")
    if start < 0:
        return []
    try:
        entries = json.loads(text[start:])
    except json.JSONDecodeError as exc:
        raise ValueError(f"'medseg models --json' printed something that is not a model list: {exc}") from None
    return [entry for entry in entries if isinstance(entry, dict) and entry.get("id")]


def model_levels(model: dict[str, Any] | None) -> list[str]:
    """The pruning levels a model entry offers (ANU-Net: L1-L4); empty for the others."""
    return [str(level) for level in (model or {}).get("levels") or []]


def format_parameters(count: int) -> str:
    """Parameter count as the paper's Table 6 writes it: millions with two decimals."""
    return f"{count / 1e6:.2f} M"


def level_labels(levels: list[str], table: dict[str, Any] | None, dice: dict[str, Any] | None = None) -> list[str]:
    """Combo texts, e.g. ``L2 - 0.51 M parameters, 41 ms/slice, Dice 0.88``: the speed measured here, the
    accuracy the model card measured on unseen scans (``dice``: level -> mean Dice); bare names until known."""
    rows = {row["level"]: row for row in (table or {}).get("levels", [])}
    labels = []
    for level in levels:
        row, parts = rows.get(level), []
        if row is not None:
            parts.append(f"{format_parameters(int(row['parameters']))} parameters")
            if row.get("ms_per_slice") is not None:
                parts.append(f"{row['ms_per_slice']:.0f} ms/slice")
        if (dice or {}).get(level) is not None:
            parts.append(f"Dice {float(dice[level]):.3f}")
        labels.append(f"{level} - {', '.join(parts)}" if parts else level)
    return labels


def level_summary(table: dict[str, Any] | None) -> str:
    """One line under the level choice: where and how the speeds were measured."""
    if not table:
        return "Measuring each level's size and speed on this computer..."
    size = "x".join(str(n) for n in table.get("slice_size", []))
    pending = [row["level"] for row in table.get("levels", []) if row.get("ms_per_slice") is None]
    state = f"measuring {pending[0]}..." if pending else "measured"
    backend = f" with {table['backend']}" if table.get("backend") else ""
    return (f"Speed {state} on {table.get('device', '?')}{backend}, {size} slices "
            "(the time per slice does not depend on the weights).")


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the panel's model list: its text, whether it can run, why not, and a tooltip."""

    model_id: str
    label: str
    enabled: bool
    reason: str
    tooltip: str


def model_choice(entry: dict[str, Any]) -> ModelChoice:
    """How ``medseg models --json``'s entry is offered: runnable models plainly, the others greyed with a
    reason in plain language (install weights from file, or train it); the tooltip holds the card's facts."""
    title = str(entry.get("title") or entry["id"])
    ready = bool(entry.get("installed"))
    reason = "" if ready else (
        "No weights are installed for this model yet. Use 'Install from file...' in the Models section "
        "(a .safetensors file, or an exported model card with its weights)."
    )
    paper = entry.get("paper") or {}
    cite = paper.get("doi") and f"doi:{paper['doi']}" or paper.get("arxiv") and f"arXiv:{paper['arxiv']}" or ""
    validation = entry.get("validation") or {}
    facts = [
        title,
        f"Modality: {entry.get('modality', '?')}; finds: {', '.join(entry.get('labels') or []) or '?'}",
        entry.get("description") or "",
        f"Paper: {paper.get('title', '?')} ({paper.get('venue', '?')}, {paper.get('year', '?')}) {cite}".rstrip(),
        f"Parameters: {format_parameters(entry['parameters'])}" if entry.get("parameters") else "",
        (f"Accuracy: mean Dice {validation['mean_dice']:.3f} on {validation.get('cases')} unseen "
         f"{validation.get('data') or ''} cases" if validation.get("mean_dice") is not None else "Accuracy: not measured on real scans yet"),
        f"Evidence maps: {'; '.join(entry.get('maps') or []) or 'none'}",
        f"Licence: {entry.get('license') or 'not stated in the model card'}",
        "Ships with the extension." if entry.get("bundled") else "",
        reason,
    ]
    label = title + ("" if ready else " (no weights)")
    return ModelChoice(str(entry["id"]), label, ready, reason, "\n".join(f for f in facts if f))


def first_ready_index(models: list[dict[str, Any]], wanted: str = "") -> int:
    """The model to select: the one asked for if present, else the most accurate one that can run (the
    card's validation Dice; the first listed on a tie or without one), else the first; -1 if none."""
    ids = [m.get("id") for m in models]
    if wanted in ids:
        return ids.index(wanted)
    ready = [i for i, m in enumerate(models) if m.get("installed")]
    if not ready:
        return 0 if models else -1
    return max(ready, key=lambda i: (((models[i].get("validation") or {}).get("mean_dice") or -1.0), -i))
