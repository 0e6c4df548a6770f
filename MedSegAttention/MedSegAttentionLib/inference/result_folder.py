"""The result folder (docs/result-format.md) written from a :class:`~.engine.SegmentationResult`.

Written atomically: everything goes to a hidden staging folder beside the target, which then
replaces it in one rename. With ``overwrite`` an existing folder keeps whatever medseg did not write
there (a user's notes, other programs' files): only medseg's own files are replaced. The reader is
:mod:`.scene.result`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import SimpleITK as sitk

from ..errors import InputError
from .imageio import geometry, write_image
from .map_storage import stored_map

if TYPE_CHECKING:
    from .engine import SegmentationResult

__all__ = ["OWN_FILES", "write_result"]

#: files medseg writes at the top of a result folder (maps/ holds the maps named in result.json)
OWN_FILES = ("segmentation.nrrd", "result.json", "overlay.png")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _staging_folder(out_dir: Path) -> Path:
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    except OSError as exc:
        raise InputError(f"cannot create the output folder {out_dir}: {exc.strerror or exc}") from None
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; results are shared like the user's other files
    return staging


def write_result(result: "SegmentationResult", out_dir: str | os.PathLike[str], overwrite: bool = False,
                 montage: bool = False, image: sitk.Image | None = None, map_storage: str = "float32") -> Path:
    """Write the result folder (docs/result-format.md) atomically: all of it or nothing.

    ``montage``: also ``overlay.png`` of ``image`` (default: the input the result carries).
    ``map_storage``: ``"float32"`` maps as computed, or ``"percent"`` [0, 1] maps as uint8 whole percent
    (:mod:`.map_storage`)."""
    image = image if image is not None else result.image
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not overwrite:
        raise InputError(f"output folder {out_dir} already exists; pass --overwrite or choose another folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"cannot write results to {out_dir}: it is a file, not a folder")
    staging = _staging_folder(out_dir)
    try:
        _write_contents(result, staging, montage, image, map_storage)
        if out_dir.exists():
            _replace_own_files(staging, out_dir)
        else:
            os.replace(staging, out_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise InputError(f"cannot write results to {out_dir}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _write_contents(result: "SegmentationResult", staging: Path, montage: bool, image: sitk.Image | None,
                    map_storage: str) -> None:
    t0 = time.perf_counter()
    write_image(result.label, staging / "segmentation.nrrd")
    map_entries = []
    if result.maps:
        (staging / "maps").mkdir()
        os.chmod(staging / "maps", 0o777 & ~_umask())
    by_name = {m["name"]: m for m in result.card.maps}
    for name, map_image in result.maps.items():
        entry = by_name[name]
        stored = stored_map(map_image, result.map_ranges.get(name, (0.0, 1.0)), map_storage)
        write_image(stored.image, staging / "maps" / f"{name}.nrrd")
        map_entries.append({"name": name, "file": f"maps/{name}.nrrd", "title": entry["title"], "kind": entry["kind"],
                            "range": [float(v) for v in stored.value_range], **({"unit": stored.unit} if stored.unit else {})})
    if montage and image is not None:
        from .montage import save_montage

        first = next(iter(result.maps), None)
        save_montage(image, result.label, result.maps.get(first) if first else None, staging / "overlay.png",
                     heat_title=by_name[first]["title"] if first else "", heat_range=result.map_ranges.get(first, (0.0, 1.0)))
    result.timings["write"] = time.perf_counter() - t0
    document = {
        "format_version": 1,
        "model": {"id": result.card.id, "title": result.card.title, "level": result.level,
                  "inference": dict(result.card.data.get("inference", {}))},
        "input": {"path": result.input_path, **{k: geometry(result.label)[k] for k in ("size", "spacing")}},
        "segmentation": "segmentation.nrrd",
        "labels": result.card.labels,
        "maps": map_entries,
        "device": result.device,
        "backend": result.backend,
        "warnings": result.warnings,
        "timings": {k: round(v, 4) for k, v in result.timings.items()},
    }
    (staging / "result.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _previous_map_files(out_dir: Path) -> list[Path]:
    """The map files an earlier medseg run listed in the folder's result.json (none if unreadable)."""
    try:
        document = json.loads((out_dir / "result.json").read_text(encoding="utf-8"))
        files = [str(entry["file"]) for entry in document.get("maps", [])]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [out_dir / f for f in files if f.startswith("maps/") and "/" not in f[len("maps/"):]]


def _replace_own_files(staging: Path, out_dir: Path) -> None:
    """Swap medseg's files of an existing folder for the new ones; leave every other file alone."""
    for old in [out_dir / name for name in OWN_FILES] + _previous_map_files(out_dir):
        if old.is_file():
            old.unlink()
    maps = out_dir / "maps"
    if (staging / "maps").is_dir():
        maps.mkdir(exist_ok=True)
        for new in (staging / "maps").iterdir():
            os.replace(new, maps / new.name)
    if maps.is_dir() and not any(maps.iterdir()):
        maps.rmdir()
    for name in OWN_FILES:
        if (staging / name).is_file():
            os.replace(staging / name, out_dir / name)
    shutil.rmtree(staging, ignore_errors=True)
