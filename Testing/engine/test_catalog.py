"""The shipped catalog: every card validates and describes networks that exist and fit its labels."""

from __future__ import annotations

import copy

import pytest

from MedSegAttentionLib.inference.pipelines import PIPELINE_MAPS
from MedSegAttentionLib.modelstore.cards import ModelCard, builtin_cards
from MedSegAttentionLib.errors import ModelError
from MedSegAttentionLib.models import network_class

CARDS = {card.id: card for card in builtin_cards()}


def test_catalog_has_the_five_paper_models() -> None:
    assert {"sipnet-prostate-mr", "conresnet-pancreas-ct", "anunet-liver-ct", "raunet-liver-tumour-ct", "rstn-pancreas-ct"} <= set(CARDS)


@pytest.mark.parametrize("model_id", sorted(CARDS))
def test_card_is_consistent_with_its_networks(model_id: str) -> None:
    card = CARDS[model_id]
    produced: set[str] = set()
    raw: set[str] = set()  # maps without a fixed range: the card must show them over their own range
    for role, config in card.networks.items():
        cls = network_class(config["name"])
        assert config.get("num_classes", 2) >= 2
        produced |= {f"{role}.{m}" for m in cls.map_names} | set(cls.map_names)
        raw |= {f"{role}.{m}" for m in cls.raw_maps} | set(cls.raw_maps)
    if card.inference["mode"] in ("sliding_window", "slicewise"):
        assert len(card.labels) == card.networks["main"].get("num_classes", 2) - 1
    produced.add("uncertainty")  # made by test-time mirroring (engine), for any network
    produced |= set(PIPELINE_MAPS.get(card.inference["mode"], ()))  # made by the pipeline (RA-UNet-I's probability)
    for entry in card.maps:
        assert entry.get("source", entry["name"]) in produced, entry
        assert (entry["kind"] == "uncertainty") == (entry.get("source", entry["name"]) == "uncertainty"), entry
        assert (entry.get("range") == "data") == (entry.get("source", entry["name"]) in raw), entry
    for label in card.labels:
        assert label["terminology"]["type"]["scheme"] == "SCT"


def test_invalid_cards_are_rejected_with_the_path_of_the_problem() -> None:
    data = copy.deepcopy(dict(CARDS["sipnet-prostate-mr"].data))
    data["labels"][0]["color"] = [2, 0, 0]
    with pytest.raises(ModelError, match="labels/0/color"):
        ModelCard.from_dict(data)
    data = copy.deepcopy(dict(CARDS["sipnet-prostate-mr"].data))
    data["weights"] = {"file": "x.pt", "sha256": "0" * 64}
    with pytest.raises(ModelError, match="weights"):
        ModelCard.from_dict(data)
