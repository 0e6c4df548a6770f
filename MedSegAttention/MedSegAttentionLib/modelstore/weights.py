"""Weights files: safetensors only, with a SHA-256 checked before anything is loaded.

One file holds every network of a model card; tensor names are prefixed with the network's role
(``main.``, ``localizer.``, ...). Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import ModelError


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def save_weights(
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]],
    path: str | os.PathLike[str],
    dtype: torch.dtype | None = None,
) -> str:
    """Save ``{role: state_dict}`` to one safetensors file; returns its SHA-256."""
    flat: dict[str, torch.Tensor] = {}
    for role, state in state_dicts.items():
        for key, tensor in state.items():
            value = tensor.detach().cpu()
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            flat[f"{role}.{key}"] = value.contiguous()
    save_file(flat, str(path), metadata={"format": "pt", "producer": "MedSegAttention"})
    return sha256_file(path)


def load_weights(path: str | os.PathLike[str], expected_sha256: str) -> dict[str, dict[str, torch.Tensor]]:
    """Verify the SHA-256, then load ``{role: state_dict}``; refuse anything that does not match."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ModelError(
            f"weights file {path.name} does not match its model card (SHA-256 {actual[:12]}..., expected "
            f"{expected_sha256[:12]}...): it is corrupt or was modified; reinstall it with 'medseg install-weights'"
        )
    try:
        flat = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"weights file {path.name} is not a valid safetensors file: {exc}") from None
    roles: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        role, _, name = key.partition(".")
        roles.setdefault(role, {})[name] = tensor
    return roles
