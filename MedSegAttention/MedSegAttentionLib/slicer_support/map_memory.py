"""How much memory a run's evidence maps take, told before the run (the panel's "Compute evidence maps").

Every map is loaded at the input's resolution (one scalar volume per map). The module asks for maps
with values in [0, 1] as whole percent in one byte per voxel; raw maps (RSTN's saliency weights) stay
float32, four bytes (:mod:`~MedSegAttentionLib.inference.map_storage`). ANU-Net's four gates on a
512 x 512 x 600 CT are about 0.6 GB (2.5 GB as float32). The panel shows this beside the checkbox so a
user with a large scan can leave maps off.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..inference.map_storage import PERCENT, bytes_per_voxel


def evidence_map_bytes(dimensions: Sequence[int], map_ranges: Sequence[Any], storage: str = PERCENT) -> int:
    """Bytes of maps with the card ``range`` entries ``map_ranges``, stored as ``storage``, on a grid
    of ``dimensions`` voxels."""
    voxels = 1
    for size in dimensions:
        voxels *= int(size)
    return voxels * sum(bytes_per_voxel(value_range, storage) for value_range in map_ranges)


def _human(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def map_ranges(model: dict[str, Any] | None, tta: bool) -> list[Any]:
    """The card ``range`` of each map a run of ``model`` (an entry of ``medseg models --json``) writes:
    the card's maps, the uncertainty map only with test-time mirroring."""
    names = (model or {}).get("map_names") or []
    ranges = (model or {}).get("map_ranges") or [None] * len(names)
    return [value_range for name, value_range in zip(names, ranges) if name != "uncertainty" or tta]


def describe_map_memory(dimensions: Sequence[int] | None, model: dict[str, Any] | None, tta: bool) -> str:
    """The panel's line: "3 maps, about 1.2 GB for this volume (512 x 512 x 600)", or why there is none."""
    ranges = map_ranges(model, tta)
    count = len(ranges)
    if model is None:
        return ""
    if count == 0:
        return "This model offers no evidence maps."
    if not dimensions:
        return f"{count} map(s); select an input volume to see their size."
    shape = " x ".join(str(int(d)) for d in dimensions)
    return f"{count} map(s), about {_human(evidence_map_bytes(dimensions, ranges))} for this volume ({shape})"
