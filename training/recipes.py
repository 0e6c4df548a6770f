"""Training recipes: one YAML file per catalog model (``training/recipes/<name>.yaml``).

A recipe names the catalog card the trained model is exported under (``card``, optionally changed
with ``card_overrides``), the network hyper-parameters (merged over the card's config for the role),
how training samples are drawn (``sampling``, ``augment``), the paper's loss, optimiser and schedule,
and the run settings (``train``). Preprocessing is never part of a recipe: it is the card's
``preprocessing`` block, the one definition inference uses too.

Cascades (RA-UNet's three networks, RSTN's three views) have one recipe with a ``stages`` mapping:
``stages.<role>`` holds overrides for the network of that role; ``--stage <role>`` selects it.
A network or inference setting set to ``null`` in ``card_overrides`` is dropped from the card (RA-UNet
on an organ without a tumour stage: ``networks: {tumour: null}``).

Settings that inference reads from the card are taken from the card, never restated: the slice
context of 2D networks (``inference.slice_context``; RA-UNet's localiser runs without) and the margin
of RA-UNet's liver box (``inference.box_margin``). A recipe that sets ``sampling.slice_context`` to
another value than the card is refused; change the card (``card_overrides``) instead.

Recipes are given by name (a shipped YAML) or by path; ``--set a.b=value`` overrides any value (the
value is read as YAML, so ``--set train.max_steps=10`` gives an int and ``--set network.blocks=[1,1]``
a list), also over what a stage sets (``--set train.max_steps=10`` shortens every stage).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from MedSegAttentionLib.modelstore.cards import ModelCard, builtin_cards

__all__ = ["DEFAULTS", "Recipe", "apply_overrides", "card_slice_context", "deep_merge", "load_recipe", "recipe_names"]

#: Values every recipe starts from (a shipped recipe states what its paper needs on top).
DEFAULTS: dict[str, Any] = {
    "card": None,
    "card_overrides": {},
    "role": "main",
    "network": {},
    "stages": {},
    "data": {"label_mapping": None, "folds": 5, "split_seed": 12345, "cache": True},
    "sampling": {
        "mode": "patch",  # patch (3D windows) | slice (2D slices, axial or the role's view)
        "patch_size": [64, 64, 32],  # x, y, z voxels like the card's inference.patch_size (z unused for slice)
        "batch_size": 2,
        "crop": "pos_neg",  # pos_neg: centred on foreground/background with odds pos:neg | uniform
        "pos": 1.0,
        "neg": 1.0,
        "slice_context": None,  # neighbours each side; None = the card's (see Recipe.for_stage)
        "view": "axial",
        "crop_to_label": None,  # {"labels": [raw values], "margin": voxels (default: card's box_margin)}
        "resize_in_plane": None,  # (x, y): every axial slice resized to this (RA-UNet, Jin et al. Sec. III-E/F)
    },
    "augment": {
        "flip": 0.0,  # probability per axis
        "flip_axes": None,  # array axes (0 = z); None = all spatial axes
        "rotate": {"prob": 0.0, "degrees": 0.0},  # in-plane (axial)
        "scale": {"prob": 0.0, "range": 0.0},  # zoom in [1 - range, 1 + range]
        "intensity": {"prob": 0.0, "scale": 0.0, "shift": 0.0},
        # 3D, see training.augmentation: rotation about every axis + scaling, zero-filled larger field
        # of view (voxels x, y, z per side), one-axis low resolution, MR bias field, gamma, noise
        "affine": {"prob": 0.0, "degrees": 0.0, "scale": 0.0, "crop_margin": 1.5},
        "fov_pad": {"prob": 0.0, "voxels": [0, 0, 0]},
        "low_resolution": {"prob": 0.0, "max_factor": 2.0},
        "bias_field": {"prob": 0.0, "coeff": 0.3},
        "gamma": {"prob": 0.0, "range": [0.7, 1.5]},
        "noise": {"prob": 0.0, "std": 0.1},
    },
    "loss": {"name": "dice_ce"},
    "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0},
    "scheduler": {"name": "constant"},
    "rstn": {"ground_truth_crop_steps": None},
    "train": {
        "max_steps": 1000,
        "stop_after": None,
        "steps_per_epoch": 250,
        "val_every": 250,
        "checkpoint_every": 250,
        "amp": "bf16",  # none | bf16 | fp16 (CUDA only; CPU runs in float32)
        "grad_clip": 12.0,
        "seed": 1234,
        "num_workers": 0,
        "find_unused_parameters": False,
        "log_every": 10,
        "init_from": None,  # warm start: an exported .safetensors file with this role's weights
    },
    "validation": {"batch_size": 2, "max_cases": None},
    "export": {"dtype": "float32"},
}


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update`` recursively (dicts merge, everything else is replaced)."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``"a.b.c=value"`` strings (value parsed as YAML) to a nested dict."""
    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} must look like section.key=value")
        value = yaml.safe_load(raw) if raw.strip() else None
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return out


def _recipe_dir() -> Path:
    return Path(__file__).resolve().parent / "recipes"


def recipe_names() -> list[str]:
    """Names of the shipped recipes (``training/recipes/*.yaml``)."""
    return sorted(p.stem for p in _recipe_dir().glob("*.yaml"))


@dataclass
class Recipe:
    """A resolved recipe: its name, the merged settings and the (overridden) base card."""

    name: str
    data: dict[str, Any]
    card: dict[str, Any]
    source: str
    overrides: tuple[str, ...] = ()  # the --set strings, applied again over each stage (they win)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def roles(self) -> list[str]:
        """Network roles of the card (``main``, or a cascade's stages/views)."""
        return list(self.card["networks"])

    def for_stage(self, stage: str | None) -> "Recipe":
        """The recipe of one stage (role): ``stages[stage]`` merged over the common settings, with the
        settings the card defines for inference filled in (see the module docstring)."""
        stages = self.data.get("stages") or {}
        if stage is None:
            if len(self.roles) > 1:
                raise ValueError(f"recipe {self.name} trains a cascade; choose --stage from {self.roles} or 'all'")
            stage = self.roles[0]
        if stage not in self.card["networks"]:
            raise ValueError(f"recipe {self.name}: unknown stage {stage!r}; the card's networks are {self.roles}")
        data = deep_merge({k: v for k, v in self.data.items() if k != "stages"}, stages.get(stage, {}))
        data = apply_overrides(data, [o for o in self.overrides if not o.strip().startswith("stages.")])
        data["role"] = stage
        _fill_from_card(data, self.card, f"recipe {self.name} [{stage}]")
        return Recipe(self.name, data, self.card, self.source)

    @property
    def staged(self) -> bool:
        """True once :meth:`for_stage` resolved this recipe to one network."""
        return "stages" not in self.data

    def network_config(self) -> dict[str, Any]:
        """The card's config for this recipe's role, updated by ``network``."""
        base = dict(self.card["networks"][self.data["role"]]["config"])
        return {**base, **(self.data.get("network") or {})}

    @property
    def num_classes(self) -> int:
        return int(self.network_config().get("num_classes", 2))


def card_slice_context(card: Mapping[str, Any]) -> int:
    """Neighbouring slices each side that the card's 2D inference stacks as channels (0 for RA-UNet's
    localiser, which the cascade runs slice by slice without context)."""
    inference = card.get("inference") or {}
    if inference.get("mode") in ("slicewise", "rstn_coarse_to_fine"):
        return int(inference.get("slice_context", 0))
    return 0


def _fill_from_card(data: dict[str, Any], card: Mapping[str, Any], where: str) -> None:
    """Resolve the sampling settings that the card defines for inference (in place)."""
    sampling = data["sampling"]
    context = card_slice_context(card)
    if sampling.get("slice_context") is None:
        sampling["slice_context"] = context
    elif sampling["mode"] == "slice" and int(sampling["slice_context"]) != context:
        raise ValueError(
            f"{where}: sampling.slice_context {sampling['slice_context']} differs from the {context} slice(s) "
            "the card's inference uses; set card_overrides.inference.slice_context to change both"
        )
    crop = sampling.get("crop_to_label")
    if crop and crop.get("margin") is None:
        crop["margin"] = int((card.get("inference") or {}).get("box_margin", 0))
    key = RESIZED_STAGES.get(str(data.get("role")))
    size = (card.get("inference") or {}).get(key) if key else None
    if size is not None and sampling.get("resize_in_plane") is None:
        sampling["resize_in_plane"] = list(size)
    elif size is not None and list(sampling["resize_in_plane"]) != list(size):
        raise ValueError(f"{where}: sampling.resize_in_plane {sampling['resize_in_plane']} differs from the card's "
                         f"inference.{key} {list(size)}, which the cascade uses at inference")


#: stages whose input inference resizes in-plane, and the card setting that says to what: the RA-UNet
#: cascade's localiser and liver stages, a slice-wise network's slices (ANU-Net's 256 x 256)
RESIZED_STAGES = {"localizer": "localizer_size", "liver": "liver_box_size", "main": "slice_size"}


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a mapping of sections, got {type(data).__name__}")
    return data


def _base_card(spec: Any, where: str) -> dict[str, Any]:
    if isinstance(spec, Mapping):
        return copy.deepcopy(dict(spec))
    if isinstance(spec, str):
        if spec.endswith(".json") and Path(spec).is_file():
            return dict(ModelCard.load(spec).data)
        for card in builtin_cards():
            if card.id == spec:
                return copy.deepcopy(dict(card.data))
        known = ", ".join(c.id for c in builtin_cards())
        raise ValueError(f"{where}: card {spec!r} is not a catalog card ({known}) or a card file")
    raise ValueError(f"{where}: 'card' must name a catalog card (or be a card dict)")


def _card_with_overrides(card: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``card`` updated by ``overrides``; a ``networks`` or ``inference`` entry set to null is removed, and
    an intensity normalisation given replaces the card's whole (an MR z-score keeps no CT window)."""
    merged = deep_merge(card, overrides)
    intensity = (overrides.get("preprocessing") or {}).get("intensity")
    if intensity is not None:
        merged["preprocessing"]["intensity"] = copy.deepcopy(dict(intensity))
    for section in ("networks", "inference"):
        dropped = [k for k, v in (overrides.get(section) or {}).items() if v is None]
        for key in dropped:
            merged[section].pop(key, None)
    return merged


def load_recipe(name_or_path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> Recipe:
    """Load a shipped recipe by name, or any recipe YAML by path, and apply ``overrides``.

    The card (``card`` + ``card_overrides``) is validated against the model-card schema, so a
    recipe can never export a card that ``medseg`` would refuse.
    """
    overrides = tuple(overrides)
    path = Path(name_or_path)
    if not path.is_file():
        candidate = _recipe_dir() / f"{name_or_path}.yaml"
        if not candidate.is_file():
            raise ValueError(f"no recipe {str(name_or_path)!r}: not a file, and not one of {', '.join(recipe_names())}")
        path = candidate
    raw = _read_yaml(path)
    unknown = sorted(set(raw) - set(DEFAULTS) - {"name", "description"})
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; known: {sorted(DEFAULTS)}")
    data = apply_overrides(deep_merge(DEFAULTS, raw), overrides)
    name = str(data.pop("name", None) or path.stem)
    data.pop("description", None)
    card = _card_with_overrides(_base_card(data["card"], str(path)), data.get("card_overrides") or {})
    card["weights"] = None
    ModelCard.from_dict({**card}, source=f"recipe {name}")
    for stage in [data, *(data.get("stages") or {}).values()]:
        sampling = stage.get("sampling") or {}
        if sampling.get("mode", "patch") not in ("patch", "slice"):
            raise ValueError(f"{path}: sampling.mode must be 'patch' or 'slice', got {sampling['mode']!r}")
        if sampling.get("crop", "pos_neg") not in ("pos_neg", "uniform"):
            raise ValueError(f"{path}: sampling.crop must be 'pos_neg' or 'uniform', got {sampling['crop']!r}")
    return Recipe(name=name, data=data, card=card, source=str(path), overrides=tuple(overrides))
