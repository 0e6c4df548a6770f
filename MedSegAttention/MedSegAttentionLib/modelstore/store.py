"""The model store: where installed cards and weights live, and how they get there.

Location: the ``root`` argument, else ``$MEDSEG_MODEL_DIR``, else the user's cache directory
(``~/.cache/medsegattention/models``, ``%LOCALAPPDATA%`` on Windows, ``~/Library/Caches`` on macOS).
Layout: ``cards/<id>.json`` for models installed with their own card (trained here or brought by the
user), ``weights/<file>.safetensors`` for weights. A card whose ``weights.bundled`` is true finds its
weights in the package (``MedSegAttentionLib/modelstore/bundled``) unless a file of that name is installed in the
store. A catalog card without weights is listed as "not installed" with the command that installs or
trains it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open

from .cards import ModelCard, builtin_cards
from ..errors import ModelError
from ..models import SegmentationNetwork, build_network
from .paths import bundled_weights_dir, default_store_root
from .weights import load_weights, sha256_file

ByteProgress = Callable[[int, int], None]


def check_weights_fit(card: ModelCard, weights_file: Path) -> None:
    """Refuse a file that is not safetensors or whose tensors do not fit the card's networks (names, shapes).

    Reads only the safetensors header; the networks are built on the meta device (no memory, no compute).
    """
    try:
        with safe_open(str(weights_file), framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for a bad header
        raise ModelError(f"refusing {weights_file.name}: not a safetensors weights file ({str(exc).splitlines()[0]})") from None
    for role, config in card.networks.items():
        try:
            with torch.device("meta"):
                expected = {f"{role}.{k}": tuple(v.shape) for k, v in build_network(config).state_dict().items()}
        except (ValueError, TypeError) as exc:
            raise ModelError(f"model card {card.id}: network {role!r}: {exc}") from None
        found = {k: v for k, v in shapes.items() if k.startswith(f"{role}.")}
        if found != expected:
            missing = sorted(set(expected) - set(found))[:3]
            wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])[:3]
            raise ModelError(f"refusing {weights_file.name}: its tensors do not fit network {role!r} of {card.id} "
                             f"(missing {missing or 'none'}, wrong shape {wrong or 'none'}, "
                             f"unexpected {sorted(set(found) - set(expected))[:3] or 'none'})")


@dataclass(frozen=True)
class CatalogEntry:
    card: ModelCard
    installed: bool
    origin: str  # "builtin" or "user"

    @property
    def how_to_install(self) -> str:
        if self.installed:
            return ""
        train = f"python -m training fit --recipe {self.card.id} --data DATASET"
        if self.card.weights:
            return f"medseg install-weights --model {self.card.id} WEIGHTS.safetensors  (or train it: {train})"
        return f"train it: {train}, then medseg install-weights --card EXPORTED_CARD.json EXPORTED.safetensors"


class ModelStore:
    """Installed model cards and weights, with verified installation and loading."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root).expanduser() if root else default_store_root()

    @property
    def cards_dir(self) -> Path:
        return self.root / "cards"

    @property
    def weights_dir(self) -> Path:
        return self.root / "weights"

    # ------------------------------------------------------------------ catalog
    def user_cards(self) -> list[ModelCard]:
        if not self.cards_dir.is_dir():
            return []
        return [ModelCard.load(p) for p in sorted(self.cards_dir.glob("*.json"))]

    def catalog(self) -> list[CatalogEntry]:
        """Built-in cards, overridden by user-installed cards of the same id."""
        entries: dict[str, CatalogEntry] = {}
        for card in builtin_cards():
            entries[card.id] = CatalogEntry(card, self.is_installed(card), "builtin")
        for card in self.user_cards():
            entries[card.id] = CatalogEntry(card, self.is_installed(card), "user")
        return list(entries.values())

    def card(self, model_id: str) -> ModelCard:
        for entry in self.catalog():
            if entry.card.id == model_id:
                return entry.card
        known = ", ".join(e.card.id for e in self.catalog())
        raise ModelError(f"unknown model {model_id!r}; known models: {known}")

    def weights_path(self, card: ModelCard) -> Path | None:
        """The store's file for the card's weights, else the package's bundled copy (if the card has one)."""
        weights = card.weights
        if not weights:
            return None
        installed = self.weights_dir / weights["file"]
        if installed.is_file() or not weights.get("bundled"):
            return installed
        return bundled_weights_dir() / weights["file"]

    def is_bundled(self, card: ModelCard) -> bool:
        """True when the card runs on the weights shipped in the package (none installed over them)."""
        path = self.weights_path(card)
        return bool(path and path.is_file() and path.parent == bundled_weights_dir())

    def is_installed(self, card: ModelCard) -> bool:
        path = self.weights_path(card)
        return bool(path and path.is_file())

    # ------------------------------------------------------------------ install
    def install_card(self, card_path: str | os.PathLike[str], weights_file: str | os.PathLike[str]) -> ModelCard:
        """Install a model that comes with its own card (e.g. exported by ``training``)."""
        card = ModelCard.load(card_path)
        self._install_verified(card, Path(weights_file))
        self.cards_dir.mkdir(parents=True, exist_ok=True)
        (self.cards_dir / f"{card.id}.json").write_text(card.to_json(), encoding="utf-8")
        return card

    def install_weights(self, model_id: str, weights_file: str | os.PathLike[str]) -> ModelCard:
        """Install a weights file for a known card; its SHA-256 must match the card."""
        card = self.card(model_id)
        self._install_verified(card, Path(weights_file))
        return card

    def download_weights(self, model_id: str, url: str | None = None, progress: ByteProgress | None = None) -> ModelCard:
        """Download the weights the user asked for (the card's URL or ``url``), verify, install."""
        card = self.card(model_id)
        weights = card.weights
        if not weights:
            raise ModelError(f"model {model_id} has no published weights; train it or install a card with weights")
        source = url or weights.get("url")
        if not source:
            raise ModelError(f"model {model_id} has no download URL; pass one with --url or install from a file")
        if not source.startswith(("https://", "http://", "file://")):
            raise ModelError(f"refusing to download from {source!r}: only http(s) and file URLs are accepted")
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / weights["file"]
            try:
                with urllib.request.urlopen(source, timeout=60) as response, open(target, "wb") as out:  # noqa: S310
                    total = int(response.headers.get("Content-Length") or 0)
                    done = 0
                    while block := response.read(1 << 20):
                        out.write(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
            except OSError as exc:
                raise ModelError(f"download of {source} failed: {exc}") from None
            self._install_verified(card, target)
        return card

    def _install_verified(self, card: ModelCard, weights_file: Path) -> None:
        weights = card.weights
        if not weights:
            raise ModelError(f"model card {card.id} lists no weights (file and SHA-256); cannot verify {weights_file.name}")
        if not weights_file.is_file():
            raise ModelError(f"weights file not found: {weights_file}")
        self._check_weights_name(card)
        actual = sha256_file(weights_file)
        if actual != weights["sha256"]:
            raise ModelError(
                f"refusing {weights_file.name}: its SHA-256 {actual[:12]}... does not match the card of "
                f"{card.id} ({weights['sha256'][:12]}...); the file is corrupt, tampered or for another model"
            )
        check_weights_fit(card, weights_file)
        self.weights_dir.mkdir(parents=True, exist_ok=True)
        target = self.weights_dir / weights["file"]
        if weights_file.resolve() != target.resolve():
            partial = target.with_suffix(".partial")
            shutil.copyfile(weights_file, partial)
            os.replace(partial, target)

    def _check_weights_name(self, card: ModelCard) -> None:
        """The card's weights file name is a plain ``.safetensors`` name no other model uses."""
        name = str(card.weights["file"])  # type: ignore[index]
        if Path(name).name != name or not name.endswith(".safetensors"):
            raise ModelError(f"model card {card.id}: weights.file must be a plain .safetensors file name, got {name!r}")
        known = {c.id: c for c in builtin_cards()}
        known.update({c.id: c for c in self.user_cards()})
        owners = sorted(other.id for other in known.values()
                        if other.id != card.id and other.weights and other.weights.get("file") == name)
        if owners:
            raise ModelError(f"model card {card.id} names the weights file {name}, which belongs to {', '.join(owners)}; "
                             "installing it would replace that model's weights. Give the card its own file name")

    # ------------------------------------------------------------------ load
    def load_networks(self, card: ModelCard, device: torch.device | str = "cpu") -> dict[str, SegmentationNetwork]:
        """Build every network of the card and load its verified weights (eval mode, on ``device``)."""
        path = self.weights_path(card)
        if path is None or not path.is_file():
            entry = CatalogEntry(card, False, "builtin")
            raise ModelError(f"model {card.id} is not installed. Install it: {entry.how_to_install}")
        states = load_weights(path, card.weights["sha256"])  # type: ignore[index]
        networks: dict[str, SegmentationNetwork] = {}
        for role, config in card.networks.items():
            try:
                net = build_network(config)
            except (ValueError, TypeError) as exc:
                raise ModelError(f"model card {card.id}: network {role!r}: {exc}") from None
            if role not in states:
                raise ModelError(f"weights of {card.id} hold no tensors for network {role!r} (found {sorted(states)})")
            state = {k: v.float() if v.is_floating_point() else v for k, v in states[role].items()}
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise ModelError(f"weights of {card.id} do not fit network {role!r}: {str(exc).splitlines()[0]}") from None
            networks[role] = net.to(device).eval()
        return networks
