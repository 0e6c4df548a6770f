"""Build any network from a plain config dict (``{"name": ..., **hyper_parameters}``).

Model cards store exactly this dict, so a card fully describes the network it ships weights for.
Built-in networks are imported lazily: listing names costs nothing, building one imports its module.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Iterable, Mapping

from .base import SegmentationNetwork, count_parameters

#: registry name -> "module:Class" (relative to this package)
NETWORKS: dict[str, str] = {
    "sipnet": ".sipnet:SIPNet",
    "conresnet": ".conresnet:ConResNet",
    "anunet": ".anunet:ANUNet",
    "raunet_2d": ".raunet:RAUNet2D",
    "raunet_3d": ".raunet:RAUNet3D",
    "rstn": ".rstn:RSTN",
}


def network_names() -> list[str]:
    """Names accepted by :func:`build_network`."""
    return sorted(NETWORKS)


def network_class(name: str) -> type[SegmentationNetwork]:
    """The class registered under ``name``; a clear error lists the valid names."""
    try:
        target = NETWORKS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; known networks: {', '.join(network_names())}") from None
    module_name, class_name = target.split(":")
    module = importlib.import_module(module_name, package=__package__)
    return getattr(module, class_name)


def build_network(config: Mapping[str, Any]) -> SegmentationNetwork:
    """Instantiate the network a config dict describes (the inverse of ``network.config``)."""
    if "name" not in config:
        raise ValueError(f"network config needs a 'name' (one of {', '.join(network_names())}); got {dict(config)}")
    params = {k: v for k, v in config.items() if k != "name"}
    cls = network_class(str(config["name"]))
    accepted = inspect.signature(cls.__init__).parameters
    takes_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = sorted(set(params) - set(accepted) - {"self"})
    if unknown and not takes_var_kw:
        valid = sorted(set(accepted) - {"self"})
        raise ValueError(f"{config['name']}: unknown hyper-parameter(s) {unknown}; valid: {valid}")
    return cls(**params)


def count_config_parameters(configs: Iterable[Mapping[str, Any]]) -> int:
    """Parameters of the networks the configs describe (a card's ``networks``), built on the meta device:
    no memory, no weights needed."""
    import torch

    with torch.device("meta"):
        return sum(count_parameters(build_network(config)) for config in configs)
