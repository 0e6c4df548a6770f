"""The shared network checks themselves: the gradient check's batch-norm exemption is exact."""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from torch import nn

from network_checks import biases_before_batch_norm


def test_only_biases_feeding_a_batch_norm_are_exempt() -> None:
    net = nn.Sequential(
        nn.Conv3d(1, 2, 3, padding=1),  # -> BN: exempt
        nn.BatchNorm3d(2),
        nn.Conv3d(2, 2, 1),  # -> ReLU: must get a gradient
        nn.ReLU(),
        Convolution(3, 2, 2, kernel_size=1, norm="BATCH", act="RELU"),  # conv -> ADN(N=BN): exempt
        Convolution(3, 2, 2, kernel_size=1, norm="INSTANCE", act="RELU"),  # instance norm: not exempt
    )
    assert biases_before_batch_norm(net) == {"0.bias", "4.conv.bias"}


def test_a_bias_before_batch_norm_really_gets_no_gradient() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(2, 1, 1), nn.BatchNorm3d(1), nn.Sigmoid()).train()
    with torch.no_grad():  # unit-size weights: round-off stays at float32 epsilon
        net[0].weight.copy_(torch.tensor([1.0, -0.5]).view(1, 2, 1, 1, 1))
    net(torch.randn(2, 2, 4, 4, 4)).square().sum().backward()
    assert net[0].bias.grad is not None and float(net[0].bias.grad.abs().max()) < 1e-5
    assert float(net[0].weight.grad.abs().max()) > 1e-3  # the weight does learn
