"""Model cards: a JSON file per model, validated against ``schemas/model_card.schema.json``.

A card names the paper, the network(s) as config dicts (one per role: ``main``, or the stages of a
cascade), the labels with colours and terminology codes, the preprocessing, the inference mode and
its parameters, the evidence maps, and the weights file with its SHA-256 and provenance.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import jsonschema

from ..errors import ModelError
from ..inference.preprocessing import PreprocessingSpec


@lru_cache(maxsize=1)
def card_schema() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath("schemas/model_card.schema.json").read_text())


@dataclass(frozen=True)
class ModelCard:
    """A validated model card; ``data`` is the JSON document itself."""

    data: Mapping[str, Any]
    source: str = "<memory>"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<memory>") -> "ModelCard":
        try:
            jsonschema.validate(data, card_schema())
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
            raise ModelError(f"invalid model card {source}: at {where}: {exc.message}") from None
        return cls(data=data, source=source)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "ModelCard":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read model card {path}: {exc}") from None
        return cls.from_dict(data, source=str(path))

    def with_inference(self, changes: Mapping[str, Any]) -> "ModelCard":
        """This card with ``inference`` settings changed (validated again): a researcher's switch, e.g.
        ``blend: constant`` or ``largest_component: false`` to run a network as its paper does. The
        pipeline (``mode``) cannot change: it decides which networks the weights hold."""
        if "mode" in changes:
            raise ModelError("inference.mode cannot be changed: the weights belong to the card's pipeline")
        data = {**self.data, "inference": {**self.data.get("inference", {}), **changes}}
        return ModelCard.from_dict(data, source=f"{self.source} with inference {dict(changes)}")

    # convenient views -------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def title(self) -> str:
        return str(self.data["title"])

    @property
    def modality(self) -> str:
        return str(self.data["modality"])

    @property
    def description(self) -> str:
        return str(self.data.get("description", ""))

    @property
    def paper(self) -> dict[str, Any]:
        return dict(self.data["paper"])

    @property
    def license(self) -> str:
        """Terms of use of the model (its weights and the data they were trained on); "" when not stated."""
        return str(self.data.get("license", ""))

    @property
    def input_channels(self) -> int:
        return int(self.data["input_channels"])

    @property
    def labels(self) -> list[dict[str, Any]]:
        return [dict(label) for label in self.data["labels"]]

    @property
    def inference(self) -> dict[str, Any]:
        return dict(self.data["inference"])

    @property
    def networks(self) -> dict[str, dict[str, Any]]:
        return {role: dict(entry["config"]) for role, entry in self.data["networks"].items()}

    @property
    def maps(self) -> list[dict[str, Any]]:
        return [dict(m) for m in self.data.get("maps", [])]

    @property
    def weights(self) -> dict[str, Any] | None:
        weights = self.data.get("weights")
        return dict(weights) if weights else None

    @property
    def preprocessing(self) -> PreprocessingSpec:
        return PreprocessingSpec.from_card(self.data["preprocessing"])

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2) + "\n"


def builtin_cards() -> list[ModelCard]:
    """The catalog shipped with the package (``catalog/*.json``)."""
    folder = resources.files(__package__).joinpath("catalog")
    cards = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            cards.append(ModelCard.from_dict(json.loads(entry.read_text(encoding="utf-8")), source=f"catalog/{entry.name}"))
    return cards
