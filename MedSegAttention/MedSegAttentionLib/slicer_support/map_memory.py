"""How much memory a run's evidence maps take, told before the run (the panel's "Compute evidence maps").

Every map is written and loaded at the input's resolution as float32 (one scalar volume per map), so
its size is the input's voxel count x 4 bytes; ANU-Net's four gates on a 512 x 512 x 600 CT are about
2.5 GB. The panel shows this beside the checkbox so a user with a large scan can leave maps off.
"""

from __future__ import annotations

from typing import Any, Sequence

BYTES_PER_VOXEL = 4  # float32 heat-map volumes


def evidence_map_bytes(dimensions: Sequence[int], map_count: int) -> int:
    """Bytes of ``map_count`` float32 maps on a grid of ``dimensions`` voxels."""
    voxels = 1
    for size in dimensions:
        voxels *= int(size)
    return voxels * BYTES_PER_VOXEL * int(map_count)


def _human(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def map_count(model: dict[str, Any] | None, tta: bool) -> int:
    """Maps a run of ``model`` (an entry of ``medseg models --json``) writes: the card's maps, the
    uncertainty map only with test-time mirroring."""
    maps = (model or {}).get("map_names") or []
    return sum(1 for name in maps if name != "uncertainty" or tta)


def describe_map_memory(dimensions: Sequence[int] | None, model: dict[str, Any] | None, tta: bool) -> str:
    """The panel's line: "3 maps, about 1.2 GB for this volume (512 x 512 x 600)", or why there is none."""
    count = map_count(model, tta)
    if model is None:
        return ""
    if count == 0:
        return "This model offers no evidence maps."
    if not dimensions:
        return f"{count} map(s); select an input volume to see their size."
    shape = " x ".join(str(int(d)) for d in dimensions)
    return f"{count} map(s), about {_human(evidence_map_bytes(dimensions, count))} for this volume ({shape})"
