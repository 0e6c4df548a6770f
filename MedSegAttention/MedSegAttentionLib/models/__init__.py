"""The five networks behind one contract (see :mod:`.base`) and a config-dict registry."""

from .base import SegmentationNetwork, SegmentationOutput, count_parameters
from .registry import NETWORKS, build_network, count_config_parameters, network_class, network_names

__all__ = [
    "NETWORKS",
    "SegmentationNetwork",
    "SegmentationOutput",
    "build_network",
    "count_config_parameters",
    "count_parameters",
    "network_class",
    "network_names",
]
