"""Seeded synthetic phantoms for fast tests: a bright ellipsoid (or ellipse) in noise, with its label."""

from __future__ import annotations

import numpy as np
import torch


def ellipsoid_phantom(
    shape: tuple[int, ...],
    seed: int = 0,
    noise: float = 0.3,
    num_classes: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Image (float32, zero-mean-ish) and label (int64) of a random ellipsoid in Gaussian noise.

    With ``num_classes == 3`` an inner ellipsoid of half the radii is labelled 2 and is brighter.
    Works for 2D and 3D shapes.
    """
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    centre = [rng.uniform(0.35, 0.65) * s for s in shape]
    radii = [rng.uniform(0.18, 0.3) * s for s in shape]
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
    label = (r2 <= 1.0).astype(np.int64)
    image = label.astype(np.float32)
    if num_classes >= 3:
        inner = r2 <= 0.25
        label[inner] = 2
        image[inner] = 2.0
    image = image + rng.normal(0.0, noise, size=shape).astype(np.float32)
    return image, label


def phantom_batch(
    batch: int, shape: tuple[int, ...], in_channels: int = 1, num_classes: int = 2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A (B, C, *shape) float batch and (B, *shape) long labels; extra channels are noisy copies."""
    images, labels = [], []
    rng = np.random.default_rng(seed + 1000)
    for b in range(batch):
        image, label = ellipsoid_phantom(shape, seed=seed + b, num_classes=num_classes)
        channels = [image] + [image + rng.normal(0, 0.1, size=shape).astype(np.float32) for _ in range(in_channels - 1)]
        images.append(np.stack(channels))
        labels.append(label)
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels))
