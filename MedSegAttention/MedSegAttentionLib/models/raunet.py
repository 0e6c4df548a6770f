"""RA-UNet: residual attention U-Nets for liver and liver-tumour CT (Jin et al., 2020).

Paper: Q. Jin, Z. Meng, C. Sun, H. Cui, R. Su, "RA-UNet: A Hybrid Deep Attention-Aware Network to
Extract Liver and Tumor in CT Scans", Frontiers in Bioengineering and Biotechnology 8:605132, 2020,
doi:10.3389/fbioe.2020.605132 (arXiv:1811.01328).

* :class:`RAUNet2D` is RA-UNet-I (Sec. III-E, Table II): coarse liver localisation on 256 x 256 axial
  slices, ~0.74 M parameters.
* :class:`RAUNet3D` is RA-UNet-II (Sec. III-F/G, Table III): liver on 224 x 224 x 32 patches of the
  liver box and, as a second instance, tumour on 128 x 128 x 32 patches, ~4.4 M parameters.

Both share one implementation of the blocks, chosen by ``spatial_dims``:

* :class:`ResidualBlock` -- pre-activation bottleneck (Sec. III-D2, Fig. 5);
* :class:`SoftMaskBranch` -- encoder-decoder of depth D giving the soft mask M in [0, 1] (Fig. 4b);
* :class:`AttentionResidualModule` -- trunk T and mask M combined as (1 + M) * T (Eq. 2, Fig. 4a).

The cascade (2D localisation -> largest component -> 3D liver -> 3D tumour inside the liver) is the
inference engine's job, not this module's.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch
from monai.networks.layers.factories import Conv, Norm, Pool
from torch import nn

from .base import SegmentationNetwork, SegmentationOutput

__all__ = ["AttentionResidualModule", "RAUNet2D", "RAUNet3D", "ResidualBlock", "SoftMaskBranch"]


def _upsample() -> nn.Module:
    """Parameter-free x2 up-sampling. Nearest neighbour, as in the authors' code (the paper only says
    "up-sampling"); sizes always match because inputs are padded to the network's size divisor."""
    return nn.Upsample(scale_factor=2, mode="nearest")


class ResidualBlock(nn.Module):
    """Pre-activation bottleneck residual block (Sec. III-D2, Eq. 1, Fig. 5).

    Three BN-ReLU-conv units (1x1 to ``out/4``, 3x3(x3) at ``out/4``, 1x1 to ``out``) plus a shortcut.
    The shortcut is always a 1x1 convolution ("a convolutional identity mapping connection", Sec.
    III-D2); the authors' code does the same, and with it the parameter counts match the reference
    figures. An identity shortcut where ``in == out`` would save ~C^2 parameters per block.
    The two inner convolutions have no bias: each feeds a BatchNorm, which cancels a bias exactly (it
    gets no gradient); the authors' code keeps them, so we have 2 * out/4 fewer parameters per block.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        mid = max(1, out_channels // 4)
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]

        def unit(cin: int, cout: int, kernel: int, bias: bool) -> list[nn.Module]:
            return [norm(cin), nn.ReLU(inplace=True), conv(cin, cout, kernel, padding=kernel // 2, bias=bias)]

        self.body = nn.Sequential(
            *unit(in_channels, mid, 1, False), *unit(mid, mid, 3, False), *unit(mid, out_channels, 1, True)
        )
        self.shortcut = conv(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.body(x)


class SoftMaskBranch(nn.Module):
    """Soft-mask branch S(x) of depth D (Sec. III-D3, Fig. 4b): values in [0, 1], input's shape.

    Encoder: max-pool + residual block, then D times [skip residual block; max-pool; residual block].
    Decoder, mirrored: D times [residual block; x2 up-sample; add skip], then a residual block and a
    last x2 up-sample. Head: two 1x1 convolutions and a sigmoid (no norm or activation between them,
    as the paper's text and the authors' code have it). The branch pools D + 1 times, so the input size
    must be divisible by 2^(D+1). Paper depth D = 0..3 is ``encoder_depth`` 1..4 in the authors' code.
    """

    def __init__(self, spatial_dims: int, channels: int, depth: int) -> None:
        super().__init__()
        if depth < 0:
            raise ValueError(f"soft-mask depth must be >= 0, got {depth}")
        self.depth = depth
        conv = Conv[Conv.CONV, spatial_dims]
        self.pool = Pool[Pool.MAX, spatial_dims](2)
        self.up = _upsample()
        self.down = nn.ModuleList(ResidualBlock(spatial_dims, channels) for _ in range(depth + 1))
        self.skips = nn.ModuleList(ResidualBlock(spatial_dims, channels) for _ in range(depth))
        self.up_blocks = nn.ModuleList(ResidualBlock(spatial_dims, channels) for _ in range(depth + 1))
        self.head = nn.Sequential(conv(channels, channels, 1), conv(channels, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down[0](self.pool(x))
        skips = []
        for level in range(self.depth):
            skips.append(self.skips[level](h))
            h = self.down[level + 1](self.pool(h))
        for level in reversed(range(self.depth)):
            h = self.up(self.up_blocks[level + 1](h)) + skips[level]
        return self.head(self.up(self.up_blocks[0](h)))


class AttentionResidualModule(nn.Module):
    """Attention residual module (Sec. III-D3, Eq. 2, Fig. 4a), after Wang et al.'s Residual Attention
    Network with p = 1, t = 2, r = 1: one residual block; trunk T = two residual blocks; soft mask M of
    depth D on the same features; output (1 + M) * T; one final residual block. Channels are kept.

    ``forward`` returns the module output and M (for the network's interpretable maps).
    """

    def __init__(self, spatial_dims: int, channels: int, depth: int) -> None:
        super().__init__()
        self.pre = ResidualBlock(spatial_dims, channels)
        self.trunk = nn.Sequential(ResidualBlock(spatial_dims, channels), ResidualBlock(spatial_dims, channels))
        self.mask = SoftMaskBranch(spatial_dims, channels, depth)
        self.post = ResidualBlock(spatial_dims, channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.pre(x)
        trunk = self.trunk(h)
        mask = self.mask(h)
        return self.post((1.0 + mask) * trunk), mask


class _RAUNet(SegmentationNetwork):
    """RA-UNet body shared by the 2D and 3D networks (Fig. 2d, Tables II and III).

    Encoder: conv 3x3(x3)-BN-ReLU at full resolution (``base_channels``); then L = len(mask_depths)
    levels of [max-pool, residual block] with ``base * (1, 1, 2, 4, ...)`` channels; then the bottom,
    [max-pool, two residual blocks] with ``base * 2^L`` channels. Decoder, at each level: nearest x2
    up-sampling, concatenation with the attention residual module applied to that level's encoder
    output (the long-range connection), one residual block back to the level's channels. Finally x2
    up-sampling, concatenation with the stem, conv-BN-ReLU, and a 3x3(x3) output convolution.

    Deliberate choices:

    * **Output**: ``num_classes`` logits with background as class 0 (softmax), per the project contract;
      the paper and code use one channel with a sigmoid (liver or tumour vs rest). So the head has
      (num_classes - 1) x (k^d x base + 1) more parameters than the reference.
    * Convolutions followed directly by BatchNorm have no bias (see :class:`ResidualBlock`).
    * ``mask_depths`` are listed in the paper's order Att1..AttL: Att1 sits on the deepest skip (Res4)
      with depth 0, Att4 on the shallowest (Res1) with depth 3, so every soft mask bottoms out at the
      same 1/32 resolution as the U-Net. Maps are named ``soft_mask_1`` .. ``soft_mask_L`` likewise.
    * **Maps** are the channel mean of each module's M (in [0, 1]): the full M has up to 512 channels
      and, brought to input resolution, would cost far more memory than the network itself.
    * Weights use the Keras defaults of the reference code (Glorot-uniform, zero bias); BatchNorm uses
      PyTorch defaults (eps 1e-5, momentum 0.1 vs Keras' 1e-3 / 0.01).
    * Pooling is isotropic (x2 on every axis) as in the paper, also in 3D.
    """

    map_names: ClassVar[tuple[str, ...]] = ("soft_mask_1", "soft_mask_2", "soft_mask_3", "soft_mask_4")

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        base_channels: int,
        mask_depths: Sequence[int],
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        if not mask_depths:
            raise ValueError("mask_depths needs at least one level")
        dims, levels = self.spatial_dims, len(mask_depths)
        self.in_channels, self.num_classes = in_channels, num_classes
        self.map_names = tuple(f"soft_mask_{i + 1}" for i in range(levels))  # type: ignore[misc]
        # encoder level k (1..L) sits at 1/2^k and its attention module (Att_{L+1-k}) pools D + 1 more
        depth_at_level = list(reversed([int(d) for d in mask_depths]))  # shallow -> deep
        exponent = max([levels + 1] + [k + 1 + d + 1 for k, d in enumerate(depth_at_level)])
        self.size_divisor = 2**exponent

        conv, norm = Conv[Conv.CONV, dims], Norm[Norm.BATCH, dims]
        widths = [base_channels * 2 ** max(k - 1, 0) for k in range(1, levels + 1)]  # encoder levels
        bottom = base_channels * 2**levels

        self.pool = Pool[Pool.MAX, dims](2)
        self.up = _upsample()
        self.stem = nn.Sequential(
            conv(in_channels, base_channels, 3, padding=1, bias=False), norm(base_channels), nn.ReLU(inplace=True)
        )
        self.encoders = nn.ModuleList(
            ResidualBlock(dims, cin, cout) for cin, cout in zip([base_channels] + widths[:-1], widths)
        )
        self.bottom = nn.Sequential(ResidualBlock(dims, widths[-1], bottom), ResidualBlock(dims, bottom))
        self.attentions = nn.ModuleList(
            AttentionResidualModule(dims, w, d) for w, d in zip(widths, depth_at_level)
        )
        self.decoders = nn.ModuleList(
            ResidualBlock(dims, deeper + w, w) for w, deeper in zip(widths, widths[1:] + [bottom])
        )
        self.fuse = nn.Sequential(
            conv(widths[0] + base_channels, base_channels, 3, padding=1, bias=False),
            norm(base_channels),
            nn.ReLU(inplace=True),
        )
        self.head = conv(base_channels, num_classes, 3, padding=1)
        self.apply(_keras_init)

    def forward_padded(self, x: torch.Tensor, return_maps: bool) -> SegmentationOutput:
        stem = self.stem(x)
        skips, h = [], stem
        for encoder in self.encoders:
            h = encoder(self.pool(h))
            skips.append(h)
        h = self.bottom(self.pool(h))
        maps: dict[str, torch.Tensor] = {}
        for level in reversed(range(len(skips))):
            attended, mask = self.attentions[level](skips[level])
            h = self.decoders[level](torch.cat([self.up(h), attended], dim=1))
            if return_maps:
                maps[f"soft_mask_{len(skips) - level}"] = mask.mean(dim=1, keepdim=True)
        h = self.fuse(torch.cat([self.up(h), stem], dim=1))
        return SegmentationOutput(logits=self.head(h), deep_supervision=(), maps=maps)


def _keras_init(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for convolutions (Keras defaults, as the authors used)."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d)):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class RAUNet2D(_RAUNet):
    """RA-UNet-I (Sec. III-E, Table II): 2D liver localisation on axial slices (paper: 256 x 256).

    Defaults reproduce the paper (channels 16 | 16, 32, 64, 128 | 256; soft-mask depths 0-3; input
    size divisor 32): 736,530 parameters vs the reference 737,897 (authors' code, ``f = 4``; paper
    "0.74 M"): +145 for the second output channel, -1,512 redundant conv biases before BatchNorm.
    No deep supervision. See :class:`_RAUNet` for the deliberate choices.
    """

    name = "raunet_2d"
    spatial_dims = 2

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        base_channels: int = 16,
        mask_depths: Sequence[int] = (0, 1, 2, 3),
    ) -> None:
        super().__init__(in_channels, num_classes, base_channels, mask_depths)


class RAUNet3D(_RAUNet):
    """RA-UNet-II (Sec. III-F/G, Table III): 3D liver (224 x 224 x 32 patches) and tumour (128 x 128 x
    32 patches; 64^3 cubes at inference in the authors' code) segmentation; one instance per task.

    Defaults reproduce the paper (channels 32 | 32, 64, 128, 256 | 512; soft-mask depths 0-3; input
    size divisor 32): 4,418,690 parameters vs the reference 4,420,849 (authors' code, ``f = 8``; paper
    "4 M"): +865 for the second output channel, -3,024 redundant conv biases before BatchNorm.
    No deep supervision. See :class:`_RAUNet` for the deliberate choices.
    """

    name = "raunet_3d"
    spatial_dims = 3

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        base_channels: int = 32,
        mask_depths: Sequence[int] = (0, 1, 2, 3),
    ) -> None:
        super().__init__(in_channels, num_classes, base_channels, mask_depths)
