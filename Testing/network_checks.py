"""Checks every network must pass; each model's test module calls them with its own small config."""

from __future__ import annotations

import json
from typing import Callable

import torch
import torch.nn.functional as F
from monai.networks.blocks import ADN
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from MedSegAttentionLib.models import SegmentationNetwork, build_network
from phantoms import phantom_batch


def check_output_contract(net: SegmentationNetwork, spatial: tuple[int, ...], batch: int = 1) -> None:
    """Shapes of logits, deep supervision and maps; maps in [0, 1]; the size rule; no map work unless
    asked; the config round-trips through JSON to a network that computes the same thing."""
    x = torch.randn(batch, net.in_channels, *spatial)
    net.eval()
    with torch.no_grad():
        out = net(x)
        assert out.logits.shape == (batch, net.num_classes, *spatial)
        assert out.deep_supervision == () and out.maps == {}
        # size rule (base class): replicate-pad the high end to the divisor, crop every output back
        padded = F.pad(x, net.padding_for(spatial), mode="replicate")
        assert all(s % d == 0 for s, d in zip(padded.shape[2:], net.divisors())), tuple(padded.shape)
        torch.testing.assert_close(net(padded).logits[(..., *(slice(0, s) for s in spatial))], out.logits)
        # the normal path builds no maps at all (not just drops them afterwards)
        assert net.forward_padded(padded, return_maps=False).maps == {}
        out_maps = net(x, return_maps=True)
    assert set(out_maps.maps) == set(net.map_names), (sorted(out_maps.maps), net.map_names)
    for name, m in out_maps.maps.items():
        assert m.shape[0] == batch and tuple(m.shape[2:]) == spatial, (name, tuple(m.shape))
        assert torch.isfinite(m).all(), name
        if name not in net.raw_maps:
            assert m.min() >= 0.0 and m.max() <= 1.0, (name, float(m.min()), float(m.max()))
    torch.testing.assert_close(out_maps.logits, out.logits)  # maps must not change the prediction
    net.train()
    out_train = net(x)
    for ds in out_train.deep_supervision:
        assert ds.shape == out_train.logits.shape
    check_config_round_trip(net, x)


def check_config_round_trip(net: SegmentationNetwork, x: torch.Tensor) -> None:
    """``config`` survives JSON (what a model card stores) and rebuilds a network that, given the same
    weights, computes the same logits: no architecture-relevant setting is missing from it."""
    config = json.loads(json.dumps(net.config))
    rebuilt = build_network(config)
    assert type(rebuilt) is type(net) and rebuilt.config == net.config
    rebuilt.load_state_dict(net.state_dict())
    net.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x).logits, net(x).logits)


def layer_output_shapes(net: nn.Module, x: torch.Tensor, **forward_kwargs: object) -> dict[str, list[tuple[int, ...]]]:
    """Output shape of every named sub-module that runs, one entry per call, in call order, from one
    forward pass in the network's current mode (pass meta tensors to check a paper-size architecture
    table without computing anything; a module absent from the result did not run)."""
    shapes: dict[str, list[tuple[int, ...]]] = {}
    hooks = []
    for name, module in net.named_modules():
        if name:

            def record(module: nn.Module, inputs: object, output: object, name: str = name) -> None:
                first = output[0] if isinstance(output, (tuple, list)) else output
                shapes.setdefault(name, []).append(tuple(first.shape))

            hooks.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            net(x, **forward_kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def biases_before_batch_norm(net: nn.Module) -> set[str]:
    """Convolution biases followed directly by a batch norm.

    In training mode batch norm subtracts the batch mean, so such a bias has an analytically zero
    gradient (numerically zero or round-off). The papers' code keeps these biases (the published
    parameter counts include them), so they stay; the gradient check only asks that they are in the graph.
    """
    names: set[str] = set()
    for prefix, module in net.named_modules():
        children = list(module.named_children())
        for (conv_name, conv), (_, follower) in zip(children, children[1:]):
            if isinstance(follower, ADN):  # MONAI Convolution: conv then ADN (norm first by default)
                follower = getattr(follower, "N", None)
            if isinstance(conv, nn.modules.conv._ConvNd) and conv.bias is not None and isinstance(follower, _BatchNorm):
                names.add(f"{prefix}.{conv_name}.bias" if prefix else f"{conv_name}.bias")
    return names


def check_every_parameter_gets_gradient(net: SegmentationNetwork, spatial: tuple[int, ...]) -> None:
    """Every parameter is in the graph, and all but biases cancelled by batch norm get a non-zero gradient."""
    x, y = phantom_batch(2, spatial, net.in_channels, net.num_classes)
    net.train()
    net.zero_grad()
    out = net(x)
    loss = sum(F.cross_entropy(t, y) for t in (out.logits, *out.deep_supervision))
    loss.backward()
    cancelled = biases_before_batch_norm(net)
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    detached = [n for n, p in trainable if p.grad is None]
    assert not detached, f"parameters outside the graph: {detached[:10]} ({len(detached)} in all)"
    dead = [n for n, p in trainable if n not in cancelled and not p.grad.abs().sum() > 0]
    assert not dead, f"parameters with zero gradient: {dead[:10]} ({len(dead)} in all)"


def check_eval_deterministic(net: SegmentationNetwork, spatial: tuple[int, ...]) -> None:
    x = torch.randn(1, net.in_channels, *spatial)
    net.eval()
    with torch.no_grad():
        a = net(x, return_maps=True)
        b = net(x, return_maps=True)
    assert torch.equal(a.logits, b.logits)
    for name in a.maps:
        assert torch.equal(a.maps[name], b.maps[name]), name


def check_learns(
    build: Callable[[], SegmentationNetwork],
    spatial: tuple[int, ...],
    steps: int = 40,
    lr: float = 3e-3,
    batch: int = 2,
    max_ratio: float = 0.2,
) -> tuple[float, float]:
    """Fit a tiny seeded phantom batch; the loss must fall below ``max_ratio`` of its start.

    ``build`` makes the network after the seed is set, so its initial weights (and dropout, RSTN's
    margin jitter) do not depend on which tests ran before.
    """
    torch.manual_seed(0)
    net = build()
    x, y = phantom_batch(batch, spatial, net.in_channels, net.num_classes)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    first = last = None
    for _ in range(steps):
        optimiser.zero_grad()
        out = net(x)
        loss = sum(F.cross_entropy(t, y) for t in (out.logits, *out.deep_supervision))
        loss.backward()
        optimiser.step()
        last = loss.item()
        first = last if first is None else first
    assert last < max_ratio * first, f"loss fell only from {first:.4f} to {last:.4f}"
    return first, last
