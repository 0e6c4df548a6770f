"""ANU-Net: contract, Table 6 parameter counts, exact pruning L1-L4, gradients, learning."""

from __future__ import annotations

import pytest
import torch

from MedSegAttentionLib.models import build_network, count_parameters
from MedSegAttentionLib.models.anunet import ANUNet
from network_checks import (
    check_eval_deterministic,
    check_every_parameter_gets_gradient,
    check_learns,
    check_output_contract,
    layer_output_shapes,
)

SMALL = (4, 8, 16, 32, 64)
TINY_3D = (2, 4, 8, 16, 32)
#: Table 6 of the paper, parameters in millions
TABLE6_M = {1: 0.1038, 2: 0.5134, 3: 2.1918, 4: 8.9506}


def _randomise_batchnorm(net: torch.nn.Module) -> None:
    """Non-trivial running statistics, so eval-mode comparisons exercise them."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.mark.parametrize(
    "dims, features, level, spatial",
    [
        (2, SMALL, 4, (33, 40)),
        (2, SMALL, 2, (13, 18)),
        (3, TINY_3D, 4, (18, 20, 17)),
        (3, TINY_3D, 1, (5, 7, 6)),
    ],
)
def test_output_contract(dims: int, features: tuple[int, ...], level: int, spatial: tuple[int, ...]) -> None:
    net = ANUNet(spatial_dims=dims, num_classes=3, features=features, level=level)
    assert net.size_divisor == 2**level
    check_output_contract(net, spatial, batch=2)
    assert len(net.map_names) == level * (level + 1) // 2
    net.train()
    out = net(torch.randn(2, 1, *spatial))
    assert len(out.deep_supervision) == level - 1


def test_parameter_counts_match_table6() -> None:
    full = build_network({"name": "anunet"})  # 2D, filters 32..512, L4 with its four heads
    counts = {4: count_parameters(full), **{k: count_parameters(full.pruned(k)) for k in (1, 2, 3)}}
    for level, millions in TABLE6_M.items():
        assert abs(counts[level] / 1e6 - millions) <= 0.02 * millions, (level, counts[level])
    assert counts == {1: 103_812, 2: 513_354, 3: 2_191_763, 4: 8_950_594}  # the authors' models


def _all_heads(full: ANUNet, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """X(0,1) .. X(0,4) of ``full`` as in eval mode: eval runs only the X(0,4) head, so run the network in
    training mode (every head) with each BatchNorm in eval mode (running statistics)."""
    full.train()
    for m in full.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    out = full(x)
    full.eval()
    return (*out.deep_supervision, out.logits)


@pytest.mark.parametrize(
    "dims, features, spatial",
    [(2, SMALL, (32, 48)), (2, SMALL, (33, 45)), (3, TINY_3D, (16, 16, 32)), (3, TINY_3D, (13, 16, 21))],
)
def test_pruned_output_equals_full_head(dims: int, features: tuple[int, ...], spatial: tuple[int, ...]) -> None:
    """Sec. 3.5: removing the deeper nodes does not change X(0,k), exactly, also at sizes 16 does not
    divide (the pruned model pads like the full one)."""
    full = ANUNet(spatial_dims=dims, features=features)
    _randomise_batchnorm(full)
    x = torch.randn(2, 1, *spatial)
    with torch.no_grad():
        heads = _all_heads(full, x)
        maps = full.eval()(x, return_maps=True).maps
        assert torch.equal(full(x).logits, heads[-1])
        for level in (1, 2, 3, 4):
            small = full.pruned(level)
            assert count_parameters(small) < count_parameters(full) or level == 4
            assert small.size_divisor == full.size_divisor == 16
            pruned_out = small(x, return_maps=True)
            assert torch.equal(pruned_out.logits, heads[level - 1]), level
            nodes = {(i, j) for i in range(level) for j in range(1, level + 1 - i)}  # i + j <= level
            assert set(pruned_out.maps) == {f"attention_x{i}_{j}" for i, j in nodes}
            for name, m in pruned_out.maps.items():
                assert torch.equal(m, maps[name]), (level, name)
            # same weights through load_state_dict of the full state dict (extra keys dropped)
            trainable = ANUNet(spatial_dims=dims, features=features, level=level, size_divisor=16)
            trainable.load_state_dict(full.state_dict())
            assert torch.equal(trainable.eval()(x).logits, heads[level - 1]), level


def test_eval_runs_only_the_main_head() -> None:
    """Deep-supervision heads cost nothing at inference: in eval mode only X(0,level)'s head runs."""
    net, x = ANUNet(features=SMALL, level=3), torch.randn(2, 1, 16, 16)

    def heads_run() -> list[str]:
        return [name for name in layer_output_shapes(net, x) if name.count(".") == 1 and name.startswith("heads.")]

    net.eval()
    assert heads_run() == ["heads.x0_3"]
    net.train()
    assert heads_run() == ["heads.x0_1", "heads.x0_2", "heads.x0_3"]


def test_pruning_rejects_what_it_cannot_do() -> None:
    net = ANUNet(features=SMALL, level=2)
    with pytest.raises(ValueError, match="L1..L2"):
        net.pruned(3)
    with pytest.raises(ValueError):
        ANUNet(features=SMALL, deep_supervision=False).pruned(2)
    with pytest.raises(ValueError):
        ANUNet(level=5)
    with pytest.raises(ValueError, match="multiple of 2\\*\\*level = 16"):
        ANUNet(features=SMALL, size_divisor=24)
    with pytest.raises(RuntimeError):  # a genuinely wrong state dict still fails
        net.load_state_dict({k: v for k, v in net.state_dict().items() if "x0_1" not in k})


def test_two_class_logits_are_the_papers_sigmoid() -> None:
    net = ANUNet(features=SMALL, level=1).eval()
    with torch.no_grad():
        logits = net(torch.randn(1, 1, 8, 8)).logits
    assert torch.equal(logits[:, 0], torch.zeros_like(logits[:, 0]))
    torch.testing.assert_close(logits.softmax(1)[:, 1], torch.sigmoid(logits[:, 1]))


@pytest.mark.parametrize("dims, features, level, spatial", [(2, SMALL, 4, (32, 32)), (3, TINY_3D, 3, (16, 16, 16))])
def test_every_parameter_gets_gradient(
    dims: int, features: tuple[int, ...], level: int, spatial: tuple[int, ...]
) -> None:
    check_every_parameter_gets_gradient(ANUNet(spatial_dims=dims, features=features, level=level), spatial)


@pytest.mark.parametrize("dims, features, spatial", [(2, SMALL, (20, 28)), (3, TINY_3D, (12, 16, 18))])
def test_eval_deterministic(dims: int, features: tuple[int, ...], spatial: tuple[int, ...]) -> None:
    check_eval_deterministic(ANUNet(spatial_dims=dims, features=features), spatial)


@pytest.mark.parametrize("dims, features, spatial", [(2, SMALL, (32, 32)), (3, TINY_3D, (16, 16, 16))])
def test_learns_tiny_batch(dims: int, features: tuple[int, ...], spatial: tuple[int, ...]) -> None:
    check_learns(lambda: ANUNet(spatial_dims=dims, features=features), spatial, steps=40, lr=3e-2)
