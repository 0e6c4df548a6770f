"""A card's sizes on arrays: patch sizes given as (x, y, z) like spacing, in-plane sizes as (x, y), arrays
(C, z, y, x); and the in-plane resize the 2D stages use (ANU-Net's and RA-UNet's slices, RA-UNet's liver box)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F

__all__ = ["patch_size_zyx", "resize_in_plane", "size_yx", "stage_patch_zyx"]


def patch_size_zyx(inference: Mapping[str, Any]) -> tuple[int, int, int]:
    """The card gives the patch as (x, y, z) voxels like spacing; arrays are (z, y, x)."""
    x, y, z = inference.get("patch_size", [96, 96, 96])
    return int(z), int(y), int(x)


def resize_in_plane(volume: torch.Tensor, size_yx: tuple[int, int] | None) -> torch.Tensor:
    """(C, D, H, W) -> (C, D, *size_yx) by bilinear interpolation of each slice (D kept); None: unchanged."""
    if size_yx is None or tuple(volume.shape[2:]) == tuple(size_yx):
        return volume
    return F.interpolate(volume.transpose(0, 1), size=size_yx, mode="bilinear", align_corners=False).transpose(0, 1)


def size_yx(inference: Mapping[str, Any], key: str) -> tuple[int, int] | None:
    """A card's in-plane size given as (x, y), as (y, x); None when the card does not set it."""
    value = inference.get(key)
    return None if value is None else (int(value[1]), int(value[0]))


def stage_patch_zyx(inference: Mapping[str, Any], key: str) -> tuple[int, int, int]:
    """A cascade stage's own windows (card ``key``, e.g. ``liver_patch_size``), else the card's ``patch_size``."""
    return patch_size_zyx({"patch_size": inference[key]} if inference.get(key) else inference)
