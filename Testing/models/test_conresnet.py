"""ConResNet: the shared network checks plus its context-residual outputs, at a small configuration."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from MedSegAttentionLib.models import build_network, count_parameters
from MedSegAttentionLib.models.conresnet import ConResNet, context_residual_target, slice_residual
from network_checks import (
    check_eval_deterministic,
    check_every_parameter_gets_gradient,
    check_learns,
    check_output_contract,
    layer_output_shapes,
)
from phantoms import phantom_batch

SMALL = dict(base_channels=8, blocks=(1, 1, 1, 1, 1), norm_groups=4)
AUX = ("context_residual", "context_residual_ds1", "context_residual_ds2")
RESIDUAL_HEADS = ("res_head.", "res_head_x2.", "res_head_x4.")


def small(in_channels: int = 1, num_classes: int = 2) -> ConResNet:
    return ConResNet(in_channels=in_channels, num_classes=num_classes, **SMALL)


@pytest.mark.parametrize(
    ("in_channels", "num_classes", "spatial"),
    [(1, 2, (16, 16, 16)), (4, 4, (11, 13, 18)), (1, 4, (5, 9, 8)), (4, 2, (8, 24, 7))],
)
def test_output_contract_and_aux_shapes(in_channels: int, num_classes: int, spatial: tuple[int, ...]) -> None:
    net = small(in_channels, num_classes)
    check_output_contract(net, spatial)
    out = net.train()(torch.randn(2, in_channels, *spatial), return_maps=True)
    assert out.deep_supervision == ()  # the paper deep-supervises only the residual decoder
    assert set(out.aux) == set(AUX)
    for name in AUX:
        assert out.aux[name].shape == (2, num_classes - 1, *spatial), name
    assert out.maps["context_residual"].shape == (2, num_classes - 1, *spatial)
    for k in (1, 2, 3):
        assert out.maps[f"context_attention_{k}"].shape == (2, 1, *spatial)


def test_parameter_count_matches_reference() -> None:
    # Reference (architectures.md 4.5): 19,018,732 effective parameters of the authors' model with 4
    # inputs and 3 sigmoid outputs (19,441,196 incl. 0.42 M unused weights; paper Table VII: 19.3 M).
    # Our 4-class softmax head has one more channel and the residual heads num_classes - 1 = 3.
    n = count_parameters(ConResNet(in_channels=4, num_classes=4))
    assert abs(n - 19_018_732) <= 0.005 * 19_018_732, n  # within 0.5 % (measured: 19,018,765)


def test_every_parameter_gets_gradient_with_aux_loss() -> None:
    spatial = (8, 12, 10)
    net = small(1, 3)
    # segmentation loss alone reaches everything except the three residual heads (the ConRes decoder
    # is trained through the context attention of Eq. 6) ...
    with pytest.raises(AssertionError, match="6 in all"):
        check_every_parameter_gets_gradient(net, spatial)
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert missing and all(n.startswith(RESIDUAL_HEADS) for n in missing), missing
    # ... and adding the aux residual loss (Eq. 8/9) reaches every parameter
    x, y = phantom_batch(2, spatial, net.in_channels, net.num_classes)
    net.zero_grad()
    out = net.train()(x)
    target = context_residual_target(y, net.num_classes)
    loss = F.cross_entropy(out.logits, y)
    loss = loss + sum(F.binary_cross_entropy_with_logits(out.aux[k], target) for k in AUX)
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_inference_skips_the_residual_heads() -> None:
    """The context-residual heads feed only the aux loss and the maps: eval without maps never runs them
    (the ConRes decoder itself still runs, its attention shapes the segmentation, Eq. 6)."""
    net, x = small(1, 2), torch.randn(1, 1, 8, 16, 16)

    def heads_run(**kwargs: object) -> set[str]:
        return set(layer_output_shapes(net, x, **kwargs)) & {"res_head", "res_head_x2", "res_head_x4"}

    net.eval()
    assert heads_run() == set()
    assert heads_run(return_maps=True) == {"res_head"}
    net.train()
    assert heads_run() == {"res_head", "res_head_x2", "res_head_x4"}


def test_maps_in_unit_range_and_eval_deterministic() -> None:
    net = small(4, 4)
    check_eval_deterministic(net, (9, 16, 12))  # maps range is checked by check_output_contract


def test_context_residual_definitions() -> None:
    labels = torch.zeros(1, 4, 2, 2, dtype=torch.long)
    labels[0, 1:3, 0, 0] = 1  # class 1 on slices 1-2
    labels[0, 2:, 1, 1] = 2  # class 2 from slice 2 on
    target = context_residual_target(labels, 3)
    assert target.shape == (1, 2, 4, 2, 2)
    assert target[0, 0, :, 0, 0].tolist() == [0, 1, 0, 1]  # starts at slice 1, stops at slice 3
    assert target[0, 1, :, 1, 1].tolist() == [0, 0, 1, 0]
    x = torch.arange(4.0).view(1, 1, 4, 1, 1) ** 2
    assert slice_residual(x).flatten().tolist() == [0, 1, 3, 5]


def test_learns_tiny_batch() -> None:
    check_learns(lambda: small(1, 2), (8, 16, 16), steps=20)


def test_rebuild_from_config_and_bad_arguments() -> None:
    net = small(4, 3)
    assert build_network(net.config).config == net.config
    with pytest.raises(ValueError, match="num_classes"):
        ConResNet(num_classes=1)
    with pytest.raises(ValueError, match="divisible"):
        ConResNet(base_channels=12)
