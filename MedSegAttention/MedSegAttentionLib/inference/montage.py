"""A PNG a person can look at: axial slices with the segmentation outline and an evidence heat map."""

from __future__ import annotations

import os

import numpy as np
import SimpleITK as sitk


def _slices_to_show(label: np.ndarray, count: int) -> list[int]:
    occupied = np.flatnonzero(label.reshape(label.shape[0], -1).any(axis=1))
    lo, hi = (occupied[0], occupied[-1]) if occupied.size else (0, label.shape[0] - 1)
    return sorted({int(round(v)) for v in np.linspace(lo, hi, count)})


def save_montage(
    image: sitk.Image, label: sitk.Image, heat_map: sitk.Image | None, path: str | os.PathLike[str], count: int = 6,
    heat_title: str = "", heat_range: tuple[float, float] = (0.0, 1.0),
) -> None:
    """Write ``count`` axial slices across the segmented extent: grey image, outline, heat map, and
    the heat map's colour bar over ``heat_range`` captioned with ``heat_title`` (what its values
    mean); the lowest 5 % of the range is left transparent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grey = sitk.GetArrayFromImage(image).astype(np.float32)
    if grey.ndim == 4:
        grey = grey[..., 0]
    labels = sitk.GetArrayFromImage(label)
    heat = sitk.GetArrayFromImage(heat_map) if heat_map is not None else None
    lo, hi = np.percentile(grey, [1, 99])
    spacing = image.GetSpacing()
    slices = _slices_to_show(labels, count)
    fig, axes = plt.subplots(1, len(slices), figsize=(3 * len(slices), 3.9 if heat is not None else 3.2), squeeze=False)
    shown = None
    for ax, z in zip(axes[0], slices):
        ax.imshow(grey[z], cmap="gray", vmin=lo, vmax=hi, aspect=spacing[1] / spacing[0])
        if heat is not None:
            low, high = heat_range
            shown = ax.imshow(np.ma.masked_less(heat[z], low + 0.05 * (high - low)), cmap="inferno", vmin=low, vmax=high,
                              alpha=0.5, aspect=spacing[1] / spacing[0])
        for value in np.unique(labels[z]):
            if value:
                ax.contour(labels[z] == value, levels=[0.5], colors=[plt.cm.tab10(int(value) % 10)], linewidths=1.0)
        ax.set_title(f"slice {z}", fontsize=9)
        ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.27 if shown is not None else 0.02, wspace=0.04)
    if shown is not None:
        bar = fig.colorbar(shown, cax=fig.add_axes((0.2, 0.13, 0.6, 0.04)), orientation="horizontal")
        bar.set_label(heat_title or f"evidence map ({heat_range[0]:g} to {heat_range[1]:g})", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    fig.savefig(str(path), dpi=90)
    plt.close(fig)
