"""Synthetic SimpleITK volumes with real geometry: anisotropic spacing and oblique directions."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from phantoms import ellipsoid_phantom


def oblique_direction(degrees: float = 20.0) -> tuple[float, ...]:
    """A rotation about an oblique axis, as a flattened 3x3 direction matrix."""
    axis = np.array([1.0, 2.0, 0.5])
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    return tuple(rotation.ravel())


def phantom_volume(
    size_zyx: tuple[int, int, int] = (12, 40, 36),
    spacing_xyz: tuple[float, float, float] = (0.8, 0.7, 3.0),
    modality: str = "MR",
    oblique: bool = True,
    seed: int = 0,
) -> tuple[sitk.Image, np.ndarray]:
    """An MR-like (positive) or CT-like (HU) ellipsoid phantom image and its label array (z, y, x)."""
    image, label = ellipsoid_phantom(size_zyx, seed=seed)
    if modality == "CT":
        array = (-1000.0 + 1050.0 * (image > -10)) + 40.0 * image  # air-ish background, soft tissue inside
        array = np.where(label > 0, 60.0 + 20.0 * image, -200.0 + 30.0 * image)
        array[:, :3, :] = -1000.0
        pixels = array.astype(np.int16)
    else:
        pixels = (200.0 + 100.0 * image).clip(0, None).astype(np.int16)
    volume = sitk.GetImageFromArray(pixels)
    volume.SetSpacing(spacing_xyz)
    volume.SetOrigin((-12.5, 30.25, 101.0))
    if oblique:
        volume.SetDirection(oblique_direction())
    return volume, label
