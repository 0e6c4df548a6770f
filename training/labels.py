"""Label mapping: merge, select or renumber the classes of a data set's label maps.

A mapping is ``old value -> new value``; values not listed become background by default, so a
mapping also selects any subset of classes (``{2: 1}`` keeps only class 2). Presets cover the
usual MSD / LiTS cases (prostate PZ + TZ -> gland, liver including tumour, tumour only).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["LABEL_MAPPINGS", "map_labels", "resolve_label_mapping"]

#: Named label mappings (old value -> new value; unlisted values become background).
LABEL_MAPPINGS: dict[str, dict[int, int]] = {
    "prostate_gland": {1: 1, 2: 1},  # MSD Task05: PZ (1) + TZ (2) -> whole gland
    "prostate_zones": {1: 1, 2: 2},
    "lits_liver": {1: 1, 2: 1},  # LiTS / MSD Task03: liver incl. tumour -> liver
    "lits_tumour": {2: 1},  # tumour only
    "lits_liver_tumour": {1: 1, 2: 2},
}


def resolve_label_mapping(spec: Mapping[Any, Any] | str) -> dict[int, int]:
    """A preset name from :data:`LABEL_MAPPINGS` or a dict (keys may be strings, as read from YAML/JSON)."""
    if isinstance(spec, str):
        try:
            return dict(LABEL_MAPPINGS[spec])
        except KeyError:
            raise ValueError(f"unknown label mapping {spec!r}; presets: {', '.join(sorted(LABEL_MAPPINGS))}") from None
    out = {int(k): int(v) for k, v in spec.items()}
    if any(k < 0 or v < 0 for k, v in out.items()):
        raise ValueError(f"label mapping values must be non-negative: {out}")
    return out


def map_labels(label: np.ndarray, mapping: Mapping[int, int] | str, unmapped: str = "zero") -> np.ndarray:
    """Apply ``old -> new`` to a label array with a lookup table.

    ``unmapped`` says what happens to values not in ``mapping``: ``"zero"`` (background; the default,
    so ``{2: 1}`` keeps only class 2), ``"keep"`` (unchanged) or ``"error"`` (raise ``ValueError``).
    """
    table = resolve_label_mapping(mapping)
    if unmapped not in ("zero", "keep", "error"):
        raise ValueError(f"unmapped must be 'zero', 'keep' or 'error', got {unmapped!r}")
    array = np.asarray(label)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"label array must be integer, got {array.dtype}")
    if array.size == 0:
        return array.copy()
    if array.min() < 0:
        raise ValueError("label arrays must not hold negative values")
    top = int(array.max())
    if unmapped == "error":
        present = set(np.unique(array).tolist())
        missing = sorted(present - set(table))
        if missing:
            raise ValueError(f"label values {missing} are not in the mapping {table}")
    lut = np.arange(top + 1, dtype=np.int64) if unmapped == "keep" else np.zeros(top + 1, dtype=np.int64)
    for old, new in table.items():
        if old <= top:
            lut[old] = new
    out_dtype = np.result_type(array.dtype, np.min_scalar_type(max(table.values(), default=0)))
    return lut[array].astype(out_dtype, copy=False)

