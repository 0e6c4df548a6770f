"""Reading ``result.json`` (docs/result-format.md) into checked dataclasses; no VTK, no Slicer."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPPORTED_FORMAT_VERSIONS = (1,)
#: model cards (and so result.json) write snake_case terminology keys; Slicer's terminology entry
#: names them in camelCase (vtkSlicerTerminologyEntry: category, type, typeModifier, anatomicRegion, ...)
TERMINOLOGY_KEYS = {"type_modifier": "typeModifier", "anatomic_region": "anatomicRegion",
                    "anatomic_region_modifier": "anatomicRegionModifier"}


class ResultFormatError(ValueError):
    """The result folder does not follow docs/result-format.md."""


@dataclass(frozen=True)
class CodedConcept:
    """A DICOM coded concept: scheme designator, code value, code meaning."""

    scheme: str
    code: str
    meaning: str


@dataclass(frozen=True)
class LabelInfo:
    """One label of the segmentation: value in the label map, name, RGB colour, terminology."""

    value: int
    name: str
    color: tuple[float, float, float] | None
    terminology: dict[str, CodedConcept] = field(default_factory=dict)


@dataclass(frozen=True)
class MapInfo:
    """One evidence map: short name, file (absolute), title, kind, the range its colours span
    (``range`` in result.json; [0, 1] when absent, as results written before it had one) and the unit
    of its stored values (``"percent"`` for a [0, 1] map stored as whole percent; None: the map's own)."""

    name: str
    path: Path
    title: str
    kind: str
    value_range: tuple[float, float] = (0.0, 1.0)
    unit: str | None = None


@dataclass(frozen=True)
class ResultDescription:
    """A parsed result folder."""

    folder: Path
    model_id: str
    model_title: str
    level: str | None
    segmentation_path: Path
    labels: tuple[LabelInfo, ...]
    maps: tuple[MapInfo, ...]
    device: str
    warnings: tuple[str, ...]
    raw: dict[str, Any]


def _concept(entry: Any, where: str) -> CodedConcept:
    if not isinstance(entry, dict):
        raise ResultFormatError(f"{where} must be an object with scheme, code and meaning")
    try:
        return CodedConcept(str(entry["scheme"]), str(entry["code"]), str(entry["meaning"]))
    except KeyError as exc:
        raise ResultFormatError(f"{where} lacks {exc.args[0]!r}") from None


def _color(value: Any, where: str) -> tuple[float, float, float] | None:
    if value is None:
        return None
    if not (isinstance(value, (list, tuple)) and len(value) == 3):
        raise ResultFormatError(f"{where} must be three RGB floats in [0, 1]")
    rgb = tuple(float(c) for c in value)
    if any(not 0.0 <= c <= 1.0 for c in rgb):
        raise ResultFormatError(f"{where} {list(rgb)} is outside [0, 1]")
    return rgb  # type: ignore[return-value]


def _value_range(raw: Any, where: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in raw)
    except (TypeError, ValueError):
        raise ResultFormatError(f"{where} must be two numbers [low, high], got {raw!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ResultFormatError(f"{where} must be finite with low < high, got {raw!r}")
    return lo, hi


def _unit(raw: Any, where: str) -> str | None:
    if raw not in (None, "percent"):
        raise ResultFormatError(f"{where} must be \"percent\" or absent, got {raw!r}")
    return raw


def _inside(folder: Path, relative: str, where: str) -> Path:
    path = (folder / relative).resolve()
    if os.path.commonpath([path, folder.resolve()]) != str(folder.resolve()):
        raise ResultFormatError(f"{where} {relative!r} points outside the result folder")
    if not path.is_file():
        raise ResultFormatError(f"{where} {relative!r} is missing from {folder}")
    return path


def _label(entry: Any, index: int) -> LabelInfo:
    where = f"labels[{index}]"
    if not isinstance(entry, dict) or "value" not in entry or "name" not in entry:
        raise ResultFormatError(f"{where} needs 'value' and 'name'")
    value = int(entry["value"])
    if value <= 0:
        raise ResultFormatError(f"{where} has value {value}; 0 is background and values are positive")
    terminology = {
        TERMINOLOGY_KEYS.get(key, key): _concept(concept, f"{where}.terminology.{key}")
        for key, concept in (entry.get("terminology") or {}).items()
    }
    return LabelInfo(value, str(entry["name"]), _color(entry.get("color"), f"{where}.color"), terminology)


def read_result(folder: str | os.PathLike[str]) -> ResultDescription:
    """Parse and check ``folder/result.json``; every file it names must exist inside the folder."""
    folder = Path(folder)
    meta_path = folder / "result.json"
    if not meta_path.is_file():
        raise ResultFormatError(f"no result.json in {folder}")
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultFormatError(f"cannot read {meta_path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ResultFormatError(f"{meta_path} must hold a JSON object")
    version = raw.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise ResultFormatError(
            f"result format version {version!r} is not supported (this module reads {SUPPORTED_FORMAT_VERSIONS}); "
            "update the extension"
        )
    model = raw.get("model") or {}
    labels = tuple(_label(entry, i) for i, entry in enumerate(raw.get("labels") or []))
    values = [label.value for label in labels]
    if len(set(values)) != len(values):
        raise ResultFormatError(f"duplicate label values in labels: {values}")
    maps = []
    for i, entry in enumerate(raw.get("maps") or []):
        if not isinstance(entry, dict) or "name" not in entry or "file" not in entry:
            raise ResultFormatError(f"maps[{i}] needs 'name' and 'file'")
        maps.append(
            MapInfo(
                name=str(entry["name"]),
                path=_inside(folder, str(entry["file"]), f"maps[{i}].file"),
                title=str(entry.get("title") or entry["name"]),
                kind=str(entry.get("kind") or "map"),
                value_range=_value_range(entry.get("range", [0.0, 1.0]), f"maps[{i}].range"),
                unit=_unit(entry.get("unit"), f"maps[{i}].unit"),
            )
        )
    return ResultDescription(
        folder=folder,
        model_id=str(model.get("id", "")),
        model_title=str(model.get("title") or model.get("id") or "model"),
        level=model.get("level"),
        segmentation_path=_inside(folder, str(raw.get("segmentation", "segmentation.nrrd")), "segmentation"),
        labels=labels,
        maps=tuple(maps),
        device=str(raw.get("device", "")),
        warnings=tuple(str(w) for w in raw.get("warnings") or []),
        raw=raw,
    )
