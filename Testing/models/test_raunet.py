"""RA-UNet-I (2D) and RA-UNet-II (3D): contract, parameter counts, attention residual module, learning."""

from __future__ import annotations

import pytest
import torch

from MedSegAttentionLib.models import build_network, count_parameters
from MedSegAttentionLib.models.raunet import (
    AttentionResidualModule,
    RAUNet2D,
    RAUNet3D,
    ResidualBlock,
    SoftMaskBranch,
)
from network_checks import (
    check_eval_deterministic,
    check_every_parameter_gets_gradient,
    check_learns,
    check_output_contract,
    layer_output_shapes,
)

# Small test configurations: two attention levels (depths 0 and 1), size divisor 8.
SMALL_2D = dict(base_channels=8, mask_depths=(0, 1))
SMALL_3D = dict(base_channels=4, mask_depths=(0, 1))
NETS = {
    "2d": (RAUNet2D, SMALL_2D, (20, 27)),  # 20 x 27 is not divisible by 8
    "3d": (RAUNet3D, SMALL_3D, (9, 12, 14)),  # neither is 9 x 12 x 14
}


def _small(key: str, **overrides: object) -> tuple[torch.nn.Module, tuple[int, ...]]:
    cls, config, spatial = NETS[key]
    return cls(**{**config, **overrides}), spatial


@pytest.mark.parametrize("key", sorted(NETS))
@pytest.mark.parametrize("num_classes", [2, 3])
def test_output_contract_small(key: str, num_classes: int) -> None:
    net, spatial = _small(key, num_classes=num_classes, in_channels=2)
    assert net.size_divisor == 8 and net.map_names == ("soft_mask_1", "soft_mask_2")
    check_output_contract(net, spatial, batch=2)


@pytest.mark.parametrize(
    ("cls", "spatial"), [(RAUNet2D, (40, 50)), (RAUNet3D, (12, 20, 33))], ids=["2d", "3d"]
)
def test_paper_configuration_shapes(cls: type, spatial: tuple[int, ...]) -> None:
    """Default (paper) networks: divisor 32, four soft masks, input shape kept at awkward sizes."""
    net = cls().eval()
    assert net.size_divisor == 32 and net.map_names == cls.map_names
    with torch.no_grad():
        out = net(torch.randn(1, 1, *spatial), return_maps=True)
    assert out.logits.shape == (1, 2, *spatial) and out.deep_supervision == ()
    assert sorted(out.maps) == ["soft_mask_1", "soft_mask_2", "soft_mask_3", "soft_mask_4"]
    for m in out.maps.values():
        assert m.shape == (1, 1, *spatial) and 0.0 <= float(m.min()) and float(m.max()) <= 1.0


#: Tables II (RA-UNet-I, 256^2 input) and III (RA-UNet-II, 224^2 x 32 input) of the paper: rows of the
#: encoder and decoder with their output (in-plane size, depth (3D only), channels), and the module whose
#: output it is (a repeated module lists its calls in order). Conv3: 1 sigmoid channel in the paper.
TABLE_ROWS = [
    ("Conv1", "stem", 0, 16), ("Pooling", "pool", 1, 16), ("Res1", "encoders.0", 1, 16),
    ("Pooling", "pool", 2, 16), ("Res2", "encoders.1", 2, 32), ("Pooling", "pool", 3, 32),
    ("Res3", "encoders.2", 3, 64), ("Pooling", "pool", 4, 64), ("Res4", "encoders.3", 4, 128),
    ("Pooling", "pool", 5, 128), ("Res5", "bottom.0", 5, 256), ("Res6", "bottom.1", 5, 256),
    ("Up1", "up", 4, 256), ("Att1 [Res4], depth=0", "attentions.3", 4, 128), ("Res7", "decoders.3", 4, 128),
    ("Up2", "up", 3, 128), ("Att2 [Res3], depth=1", "attentions.2", 3, 64), ("Res8", "decoders.2", 3, 64),
    ("Up3", "up", 2, 64), ("Att3 [Res2], depth=2", "attentions.1", 2, 32), ("Res9", "decoders.1", 2, 32),
    ("Up4", "up", 1, 32), ("Att4 [Res1], depth=3", "attentions.0", 1, 16), ("Res10", "decoders.0", 1, 16),
    ("Up5", "up", 0, 16), ("Conv2", "fuse", 0, 16), ("Conv3", "head", 0, None),
]  # (row, module, down-sampling exponent, channels in Table II; Table III has twice the channels)


@pytest.mark.parametrize(("cls", "spatial", "width"), [(RAUNet2D, (256, 256), 1), (RAUNet3D, (32, 224, 224), 2)])
def test_default_networks_reproduce_paper_tables(cls: type, spatial: tuple[int, ...], width: int) -> None:
    """Every row of Table II (2D) / Table III (3D) at the paper's input size (meta tensors: shapes only)."""
    with torch.device("meta"):
        net = cls(num_classes=2).eval()
        shapes = layer_output_shapes(net, torch.empty(1, 1, *spatial))
    for row, module, exponent, channels in TABLE_ROWS:
        expected = (1, 2 if channels is None else width * channels, *(s // 2**exponent for s in spatial))
        assert shapes[module].pop(0) == expected, (row, module)
    # soft-mask depth D of Att1..Att4 is 0..3 (Fig. 4b), and each branch bottoms out at the U-Net's 1/32
    assert [net.attentions[3 - k].mask.depth for k in range(4)] == [0, 1, 2, 3]
    for k in range(4):
        deepest = shapes[f"attentions.{k}.mask.down.{net.attentions[k].mask.depth}"]
        assert deepest == [(1, width * 16 * 2**k, *(s // 32 for s in spatial))], k


# Reference trainable counts (authors' Keras code, one sigmoid output; reference notes 3.2):
# RA-UNet-I 737,897 (paper: "0.74 M"), RA-UNet-II 4,420,849 (paper: "4 M"). Ours differs by exactly
# + (num_classes - 1) x (3^d x base + 1)   softmax output channels beyond the first, and
# - 2 x out/4 per residual block (52 blocks) - 2 x base   biases of convs feeding a BatchNorm
#   (1,512 in 2D, 3,024 in 3D), which BatchNorm cancels; tolerance vs the reference figure: 0.5 %.
@pytest.mark.parametrize(
    ("cls", "reference", "head_fan_in", "redundant_biases"),
    [(RAUNet2D, 737_897, 9 * 16, 1_512), (RAUNet3D, 4_420_849, 27 * 32, 3_024)],
    ids=["2d", "3d"],
)
def test_parameter_counts_match_reference(cls: type, reference: int, head_fan_in: int, redundant_biases: int) -> None:
    for num_classes in (2, 3):
        count = count_parameters(cls(num_classes=num_classes))
        assert count == reference + (num_classes - 1) * (head_fan_in + 1) - redundant_biases
        assert count == pytest.approx(reference, rel=0.005)
    net = cls()
    assert sum(isinstance(m, ResidualBlock) for m in net.modules()) == 52
    attention = sum(count_parameters(a) for a in net.attentions)  # reference: 2.13 M (3D), 0.37 M (2D)
    assert attention == pytest.approx(2.13e6 if cls is RAUNet3D else 0.37e6, rel=0.02)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_attention_residual_module_is_one_plus_mask_times_trunk(spatial_dims: int, depth: int) -> None:
    channels, size = 8, 2 ** (depth + 1) * (3 if spatial_dims == 2 else 1)
    module = AttentionResidualModule(spatial_dims, channels, depth).eval()
    seen: dict[str, torch.Tensor] = {}
    module.trunk.register_forward_hook(lambda m, i, o: seen.__setitem__("trunk", o))
    module.post.register_forward_pre_hook(lambda m, i: seen.__setitem__("post_in", i[0]))
    x = torch.randn(2, channels, *(size,) * spatial_dims)
    with torch.no_grad():
        out, mask = module(x)
    assert out.shape == x.shape and mask.shape == x.shape
    assert 0.0 <= float(mask.min()) and float(mask.max()) <= 1.0
    torch.testing.assert_close(seen["post_in"], (1.0 + mask) * seen["trunk"])
    # the mask branch pools depth + 1 times and has 3 * depth + 2 residual blocks
    assert isinstance(module.mask, SoftMaskBranch) and module.mask.depth == depth
    assert len(module.mask.down) + len(module.mask.skips) + len(module.mask.up_blocks) == 3 * depth + 2


@pytest.mark.parametrize("key", sorted(NETS))
def test_every_parameter_gets_gradient(key: str) -> None:
    net, spatial = _small(key)
    check_every_parameter_gets_gradient(net, spatial)


@pytest.mark.parametrize("key", sorted(NETS))
def test_eval_deterministic(key: str) -> None:
    net, spatial = _small(key)
    check_eval_deterministic(net, spatial)


@pytest.mark.parametrize(("key", "spatial"), [("2d", (32, 32)), ("3d", (16, 16, 16))])
def test_learns_tiny_phantom_batch(key: str, spatial: tuple[int, ...]) -> None:
    check_learns(lambda: _small(key)[0], spatial, steps=30)


def test_registry_builds_both_and_rejects_bad_settings() -> None:
    assert isinstance(build_network({"name": "raunet_2d", **SMALL_2D}), RAUNet2D)
    assert isinstance(build_network({"name": "raunet_3d", **SMALL_3D}), RAUNet3D)
    with pytest.raises(ValueError, match="num_classes"):
        RAUNet3D(num_classes=1)
    with pytest.raises(ValueError, match="2D network"):
        RAUNet2D(**SMALL_2D)(torch.randn(1, 1, 8, 8, 8))
