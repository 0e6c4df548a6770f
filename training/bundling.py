"""Bundle an exported model into the package so a fresh install runs it with no download.

``python -m training bundle --model-dir runs/<recipe>/fold_<k>/export`` copies the exported weights
into ``MedSegAttentionLib/modelstore/bundled/``, writes the export's card into ``MedSegAttentionLib/modelstore/catalog/``
with ``weights.bundled: true`` (same SHA-256: the store verifies the bundled file like any other),
and stores the model's output on a seeded synthetic input (:func:`reference_input`, kept once for all
models in :data:`REFERENCE_INPUT`) next to the tests, so a test can prove the shipped weights still
reproduce what was bundled. Bundled weights are kept small (half precision, all bundled models
together at most :data:`MAX_BUNDLED_BYTES`); a reference keeps only the foreground probabilities in
half precision (:func:`save_reference`, :func:`load_reference`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from MedSegAttentionLib.modelstore.cards import ModelCard
from MedSegAttentionLib.models import SegmentationNetwork
from MedSegAttentionLib.modelstore.paths import bundled_weights_dir
from MedSegAttentionLib.modelstore.store import ModelStore

__all__ = ["MAX_BUNDLED_BYTES", "REFERENCE_DIR", "REFERENCE_INPUT", "bundle_model", "bundled_bytes", "engine_evaluation",
           "level_evaluations", "load_reference", "reference_input", "reference_probabilities", "save_reference",
           "stored_reference_input"]

#: The limit for all weights shipped in the repository together (half precision), with their reference outputs.
MAX_BUNDLED_BYTES = 25 * 1000 * 1000
#: Where the reference outputs of bundled models live (read by Testing/engine/test_bundled_model.py).
REFERENCE_DIR = Path(__file__).resolve().parent.parent / "Testing" / "data" / "bundled"
#: The one input all reference outputs are computed on (file name inside a reference folder).
REFERENCE_INPUT = "reference-input.safetensors"


def reference_input(spatial_zyx: tuple[int, int, int] = (48, 64, 64), seed: int = 20261123) -> torch.Tensor:
    """A seeded, z-scored synthetic volume (1 x 1 x Z x Y x X): a bright ellipsoid (a blood pool) in a
    darker, smoothly varying background with noise, a few lines of NumPy so anyone can regenerate it."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in spatial_zyx], indexing="ij")
    blob = ((z / 0.45) ** 2 + ((y - 0.1) / 0.35) ** 2 + ((x + 0.05) / 0.4) ** 2) <= 1.0
    image = 0.3 + 0.2 * np.sin(2.0 * x + y) + 0.6 * blob + 0.1 * rng.standard_normal(spatial_zyx)
    image = (image - image.mean()) / image.std()
    return torch.from_numpy(image.astype(np.float32))[None, None]


@torch.inference_mode()
def reference_probabilities(networks: Mapping[str, SegmentationNetwork], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Softmax probabilities (K, Z, Y, X) of every network on the (1, 1, Z, Y, X) volume ``x`` (float32,
    CPU, eval mode), keyed by role; a 2D network sees the axial slices as a batch."""
    out = {}
    for role, net in networks.items():
        net = net.to("cpu", torch.float32).eval()
        if net.spatial_dims == 2:
            slices = x[0].transpose(0, 1).repeat(1, net.in_channels, 1, 1)  # (Z, C, Y, X)
            out[role] = torch.softmax(net(slices).logits.float(), dim=1).transpose(0, 1).contiguous()
        else:
            out[role] = torch.softmax(net(x).logits.float(), dim=1)[0].contiguous()
    return out


def stored_reference_input(reference_dir: str | Path) -> torch.Tensor:
    """The reference input kept in ``reference_dir`` (written from :func:`reference_input` the first time),
    so that references stay comparable even if NumPy's random streams change."""
    path = Path(reference_dir) / REFERENCE_INPUT
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"input": reference_input()}, str(path))
    return load_file(str(path))["input"]


def save_reference(path: str | Path, probabilities: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Store (K, Z, Y, X) probabilities per role compactly: classes 1..K-1 in half precision (the
    background is one minus their sum), a quarter of what float32 with every class takes."""
    save_file({f"probabilities.{role}": p[1:].to(torch.float16).contiguous() for role, p in probabilities.items()},
              str(path), metadata=dict(metadata))


def load_reference(path: str | Path) -> dict[str, torch.Tensor]:
    """The (K, Z, Y, X) float32 probabilities per role of a :func:`save_reference` file."""
    stored = load_file(str(path))
    out = {}
    for key, foreground in stored.items():
        foreground = foreground.float()
        out[key.removeprefix("probabilities.")] = torch.cat([1.0 - foreground.sum(0, keepdim=True), foreground])
    return out


def _as_shipped_summaries(export_dir: str | Path, default_level: str | None) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(level, summary) of each ``python -m training evaluate`` summary next to an export that ran the
    cases as stored and without mirroring; a summary without a level ran the card's ``default_level``."""
    for path in sorted(Path(export_dir).glob("evaluation_fold_*/summary.json")):
        summary = json.loads(path.read_text(encoding="utf-8"))
        if summary.get("variant", "original") == "original" and not summary.get("tta"):
            yield summary.get("level") or default_level, summary


def _class_mean(summary: Mapping[str, Any], metric: str) -> float:
    """A metric's mean over the summary's classes."""
    return float(np.mean([metrics[metric]["mean"] for metrics in summary["classes"].values()]))


def level_evaluations(export_dir: str | Path, default_level: str | None = None) -> dict[str, dict[str, float | int]]:
    """``{level: {"mean_dice", "cases"}}`` from the ``python -m training evaluate [--level L]`` summaries next
    to an export (original cases, as the card runs them; a summary without a level is the card's
    ``default_level``); empty when the card has no levels or nothing was evaluated per level."""
    levels: dict[str, dict[str, float | int]] = {}
    for level, summary in _as_shipped_summaries(export_dir, default_level):
        if level:
            levels[str(level)] = {"mean_dice": _class_mean(summary, "dice"), "cases": int(summary["cases"])}
    return dict(sorted(levels.items()))


def engine_evaluation(export_dir: str | Path, default_level: str | None = None) -> dict[str, Any] | None:
    """The ``python -m training evaluate`` figures of the card as it ships (original cases, no mirroring,
    the card's default level): ``{"mean_dice", "hd95_mm", "cases", "seconds_per_case", "fold"}``, the
    accuracy a user meets through the engine (largest component, the scan's own grid), or None."""
    for level, summary in _as_shipped_summaries(export_dir, default_level):
        if level == default_level:
            return {"mean_dice": round(_class_mean(summary, "dice"), 4), "hd95_mm": round(_class_mean(summary, "hd95"), 2),
                    "cases": int(summary["cases"]), "fold": summary.get("fold"),
                    "seconds_per_case": round(float(summary["seconds_per_case"]["median"]), 2)}
    return None


def bundled_bytes(package_dir: str | Path | None = None) -> int:
    """Size of every weights file shipped in the package."""
    folder = (Path(package_dir) if package_dir else bundled_weights_dir().parent) / "bundled"
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) if folder.is_dir() else 0


def _reference_bytes(reference_dir: Path) -> int:
    """Size of the reference outputs (and their shared input) kept for the bundled models' tests."""
    return sum(p.stat().st_size for p in reference_dir.glob("*.safetensors")) if reference_dir.is_dir() else 0


def _write_bundled_card(card: ModelCard, card_path: Path, package: Path) -> Path:
    """The catalog card of a bundled model: the export's card marked bundled (no download URL), with the
    engine's measured accuracy (and ANU-Net's per-level figures) from the export's evaluations."""
    data, export_dir = json.loads(card.to_json()), card_path.parent
    levels = level_evaluations(export_dir, card.inference.get("default_level"))
    if levels:  # the Slicer level chooser shows them beside the measured speed
        validation = data["weights"].setdefault("provenance", {}).setdefault("validation", {}).setdefault("main", {})
        validation["levels"] = levels
    measured = engine_evaluation(export_dir, card.inference.get("default_level"))
    if measured:  # what 'medseg models' and the Slicer model list show as the model's accuracy
        data["weights"].setdefault("provenance", {}).setdefault("validation", {})["engine"] = measured
    data["weights"]["bundled"] = True
    data["weights"]["url"] = None
    card_target = package / "catalog" / f"{card.id}.json"
    card_target.parent.mkdir(parents=True, exist_ok=True)
    card_target.write_text(ModelCard.from_dict(data, source=str(card_path)).to_json(), encoding="utf-8")
    return card_target


def bundle_model(card_path: str | Path, weights_path: str | Path, package_dir: str | Path | None = None,
                 reference_dir: str | Path | None = None) -> tuple[Path, Path, Path]:
    """Copy a verified export into the package and write its catalog card and reference output.

    Returns (catalog card, bundled weights, reference file). Refuses weights stored in full precision
    (export with ``--dtype float16``), and a model whose weights and reference output would take the
    repository's bundled weights and references together over :data:`MAX_BUNDLED_BYTES`; then nothing is
    written but the shared reference input, if the reference folder had none yet."""
    weights_path = Path(weights_path)
    size = weights_path.stat().st_size
    package = Path(package_dir) if package_dir else bundled_weights_dir().parent
    references = Path(reference_dir or REFERENCE_DIR)
    scratch = ModelStore(references / ".bundle-store")
    try:
        card = scratch.install_card(card_path, weights_path)  # verifies the SHA-256 against the card
        if card.weights.get("dtype") == "float32":  # type: ignore[union-attr]
            raise ValueError("bundled weights must be half precision: export with --dtype float16")
        networks = scratch.load_networks(card, "cpu")
        new_reference = scratch.root / f"{card.id}.safetensors"
        save_reference(new_reference, reference_probabilities(networks, stored_reference_input(references)),
                       {"model": card.id, "weights_sha256": card.weights["sha256"]})  # type: ignore[index]
        target_weights = package / "bundled" / card.weights["file"]  # type: ignore[index]
        reference = references / f"{card.id}.safetensors"
        others = (bundled_bytes(package) + _reference_bytes(references)  # less the files this bundle replaces
                  - sum(p.stat().st_size for p in (target_weights, reference) if p.is_file()))
        new = size + new_reference.stat().st_size
        if others + new > MAX_BUNDLED_BYTES:
            raise ValueError(f"{weights_path.name} and its reference output are {new / 1e6:.1f} MB and the other "
                             f"bundled models with theirs {others / 1e6:.1f} MB; all bundled weights and references "
                             f"together must stay under {MAX_BUNDLED_BYTES / 1e6:.0f} MB "
                             "(export a smaller model or in float16)")
        target_weights.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights_path, target_weights)
        card_target = _write_bundled_card(card, Path(card_path), package)
        shutil.move(new_reference, reference)  # last: a refused or failed bundle leaves the tests' references as they were
    finally:
        shutil.rmtree(scratch.root, ignore_errors=True)
    return card_target, target_weights, reference
