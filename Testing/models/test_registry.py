"""The registry and the base-class contract (padding rule, config capture, input checks)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from MedSegAttentionLib.models import SegmentationNetwork, SegmentationOutput, build_network, network_names


class _TinyNet(SegmentationNetwork):
    name = "tiny"
    spatial_dims = 3
    map_names = ("gate",)

    def __init__(self, in_channels: int = 1, num_classes: int = 2, divisor: int = 4) -> None:
        super().__init__()
        self.in_channels, self.num_classes, self.size_divisor = in_channels, num_classes, divisor
        self.conv = nn.Conv3d(in_channels, num_classes, 3, padding=1)
        self.pool = nn.AvgPool3d(divisor)

    def forward_padded(self, x: torch.Tensor, return_maps: bool) -> SegmentationOutput:
        assert all(s % self.size_divisor == 0 for s in x.shape[2:])
        logits = self.conv(x)
        gate = torch.sigmoid(self.pool(logits[:, :1]))
        return SegmentationOutput(logits, (logits * 2,), {"gate": gate})


def test_config_is_captured_with_defaults() -> None:
    net = _TinyNet(num_classes=3)
    assert net.config == {"name": "tiny", "in_channels": 1, "num_classes": 3, "divisor": 4}


def test_sizes_not_divisible_are_padded_and_cropped_back() -> None:
    net = _TinyNet().eval()
    out = net(torch.randn(1, 1, 5, 7, 9), return_maps=True)
    assert out.logits.shape == (1, 2, 5, 7, 9)
    assert out.maps["gate"].shape == (1, 1, 5, 7, 9)
    # the unpadded interior equals a direct convolution (replicate padding only touches the border)
    x = torch.randn(1, 1, 8, 8, 8)
    torch.testing.assert_close(net(x).logits, net.conv(x))


def test_wrong_dimensionality_and_channels_are_rejected() -> None:
    net = _TinyNet()
    with pytest.raises(ValueError, match="3D network.*5-D tensor"):
        net(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="1 input channel"):
        net(torch.randn(1, 2, 8, 8, 8))


def test_deep_supervision_only_in_training() -> None:
    net = _TinyNet()
    assert len(net.train()(torch.randn(1, 1, 8, 8, 8)).deep_supervision) == 1
    assert net.eval()(torch.randn(1, 1, 8, 8, 8)).deep_supervision == ()


def test_build_network_errors_are_specific() -> None:
    with pytest.raises(ValueError, match="unknown network 'nope'"):
        build_network({"name": "nope"})
    with pytest.raises(ValueError, match="needs a 'name'"):
        build_network({"in_channels": 1})
    assert {"sipnet", "conresnet", "anunet", "raunet_2d", "raunet_3d", "rstn"} <= set(network_names())


def test_min_divisor_multiple_pads_small_inputs_further() -> None:
    net = _TinyNet().eval()
    net.min_divisor_multiple = 2
    assert net.padding_for((3, 9, 8)) == [0, 0, 0, 3, 0, 5]  # x: 8 ok; y: 9 -> 12; z: 3 -> 8
    assert net(torch.randn(1, 1, 3, 9, 8)).logits.shape == (1, 2, 3, 9, 8)


def test_rstn_accepts_slices_smaller_than_its_bottleneck() -> None:
    net = build_network({"name": "rstn", "base_channels": 4}).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 10, 12), return_maps=True)
    assert out.logits.shape == (2, 2, 10, 12) and out.maps["saliency"].shape[2:] == (10, 12)


@pytest.mark.parametrize("name", network_names())
def test_every_registered_network_round_trips_through_json_at_its_defaults(name: str) -> None:
    """What a model card stores: ``{"name": ...}`` alone builds the paper configuration, and its full
    ``config`` survives JSON and rebuilds the same architecture (meta tensors: no weights allocated)."""
    with torch.device("meta"):
        net = build_network({"name": name})
        config = json.loads(json.dumps(net.config))
        rebuilt = build_network(config)
    assert config["name"] == name and rebuilt.config == net.config
    assert [(n, p.shape) for n, p in rebuilt.named_parameters()] == [(n, p.shape) for n, p in net.named_parameters()]
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        build_network({**config, "not_a_setting": 1})
