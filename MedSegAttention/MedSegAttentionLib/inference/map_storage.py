"""How an evidence map is stored in the result folder: float32 as computed, or compactly as percent.

A map whose values live in [0, 1] (attention masks, probabilities, soft masks, uncertainty: every
map except raw ones such as RSTN's saliency weights) loses nothing a reader can see when it is stored
as whole percent in one byte: ``round(100 * value)`` as uint8, a quarter of float32's memory on disk
and in Slicer. The stored values are the percent themselves (0-100), not an arbitrary code, so
Slicer's colour legend and its data probe show true numbers with the unit ``%`` written beside them;
nothing needs to know a scale factor to read them right. Raw maps (``range: "data"``) stay float32:
their range is the scan's own, so no fixed unit fits them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

__all__ = ["MAP_STORAGES", "PERCENT", "StoredMap", "bytes_per_voxel", "stored_map"]

MAP_STORAGES = ("float32", "percent")
PERCENT = "percent"  # the ``unit`` result.json gives a map stored as whole percent
UNIT_RANGE = (0.0, 1.0)


@dataclass(frozen=True)
class StoredMap:
    """A map as written: the image, the range its colours span in stored units, and the unit
    (``"percent"``, or None for the map's own values)."""

    image: sitk.Image
    value_range: tuple[float, float]
    unit: str | None


def _percent_image(image: sitk.Image) -> sitk.Image:
    values = sitk.GetArrayViewFromImage(image)
    out = sitk.GetImageFromArray(np.clip(np.rint(values * 100.0), 0, 100).astype(np.uint8))
    out.CopyInformation(image)
    return out


def stored_map(image: sitk.Image, value_range: tuple[float, float], storage: str = "float32") -> StoredMap:
    """``image`` (values in ``value_range``) as ``storage`` asks: ``"percent"`` turns a [0, 1] map into
    uint8 whole percent over [0, 100]; a map with another range, and ``"float32"``, stay as they are."""
    if storage not in MAP_STORAGES:
        raise ValueError(f"unknown map storage {storage!r}; choose one of {', '.join(MAP_STORAGES)}")
    if storage == PERCENT and tuple(float(v) for v in value_range) == UNIT_RANGE:
        return StoredMap(_percent_image(image), (0.0, 100.0), PERCENT)
    return StoredMap(image, (float(value_range[0]), float(value_range[1])), None)


def bytes_per_voxel(map_range: object, storage: str = "float32") -> int:
    """Bytes one voxel of a map takes when stored as ``storage``; ``map_range`` is the card's ``range``
    entry (absent: [0, 1]; ``"data"``: the map's own values)."""
    unit_range = map_range is None or (map_range != "data" and tuple(float(v) for v in map_range) == UNIT_RANGE)  # type: ignore[union-attr]
    return 1 if storage == PERCENT and unit_range else 4
