"""SIP-Net: Selective Information Passing Network for 3D medical image segmentation.

Zhu et al., "Selective information passing for MR/CT image segmentation" (Neural Computing and
Applications); authors' Keras code: github.com/ahukui/SIPNet (not copied). Section numbers below refer to
the paper; "the code" means the authors' ``SIPNet.py`` as described in the project's reference notes.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.layers.factories import Act, Conv, Norm, Pool
from torch import nn

from .base import SegmentationNetwork, SegmentationOutput

__all__ = ["SIPNet"]


def _norm_act(channels: int, bn: dict[str, float]) -> list[nn.Module]:
    """Pre-activation BN -> ReLU used in front of every convolution (Sec. 3.1, "BN-ReLU-Conv")."""
    return [Norm[Norm.BATCH, 3](channels, **bn), Act[Act.RELU]()]


def _norm_act_conv(in_channels: int, out_channels: int, kernel_size: int, bn: dict[str, float]) -> list[nn.Module]:
    """BN-ReLU-Conv (no bias, "same" padding)."""
    conv = Conv[Conv.CONV, 3](in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    return [*_norm_act(in_channels, bn), conv]


class _DenseLayer(nn.Sequential):
    """BN-ReLU-Conv1x1 (bottleneck*k) - BN-ReLU-Conv3x3 (k) - Dropout (Sec. 3.1); input concatenated."""

    def __init__(
        self, in_channels: int, growth_rate: int, bottleneck: int, dropout: float, bn: dict[str, float]
    ) -> None:
        super().__init__(
            *_norm_act_conv(in_channels, bottleneck * growth_rate, 1, bn),
            *_norm_act_conv(bottleneck * growth_rate, growth_rate, 3, bn),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, super().forward(x)], dim=1)


class DenseResidualBlock(nn.Module):
    """Densely-connected residual block (DRB, Sec. 3.2, Fig. 3B): transition(dense(x)) + shortcut(x).

    The dense part has ``num_layers`` dense layers (C -> C + k * num_layers channels, Eq. 2), the
    transition is BN-ReLU-Conv1x1 (Eq. 3). With ``project_shortcut`` (down path) the shortcut is a second
    BN-ReLU-Conv1x1 on the block input; otherwise (up path, ``out_channels == in_channels``) the identity.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        growth_rate: int,
        bottleneck: int,
        dropout: float,
        bn: dict[str, float],
        project_shortcut: bool,
    ) -> None:
        super().__init__()
        self.dense = nn.Sequential(
            *[
                _DenseLayer(in_channels + i * growth_rate, growth_rate, bottleneck, dropout, bn)
                for i in range(num_layers)
            ]
        )
        self.transition = nn.Sequential(*_norm_act_conv(in_channels + num_layers * growth_rate, out_channels, 1, bn))
        self.shortcut: nn.Module = nn.Identity()
        if project_shortcut:
            self.shortcut = nn.Sequential(*_norm_act_conv(in_channels, out_channels, 1, bn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transition(self.dense(x)) + self.shortcut(x)


class _Deconv(nn.Sequential):
    """BN-ReLU-ConvTranspose3d(3, stride 2, bias)-ReLU: the up-sampling layer (Sec. 3.1, Table 1)."""

    def __init__(self, in_channels: int, out_channels: int, bn: dict[str, float]) -> None:
        deconv = Conv[Conv.CONVTRANS, 3](in_channels, out_channels, 3, stride=2, padding=1, output_padding=1)
        super().__init__(*_norm_act(in_channels, bn), deconv, Act[Act.RELU]())


class AttentionFocusedModule(nn.Module):
    """Attention-focused module (AM, Sec. 3.3, Eq. 4-5): out = D + sigmoid(D) * skip; returns (out, mask).

    ``D`` is the (ReLU'd) deconvolution output and ``skip`` the long-connection feature of the same
    resolution; the sigmoid mask selects what the long connection passes on. Parameter-free.
    """

    def forward(self, decoder: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.sigmoid(decoder)
        return decoder + mask * skip, mask


def _head(in_channels: int, num_classes: int, bn: dict[str, float]) -> nn.Sequential:
    """Segmentation head BN-ReLU-Conv1x1 (no bias) to ``num_classes`` logits (Table 1, Convolution2)."""
    return nn.Sequential(*_norm_act_conv(in_channels, num_classes, 1, bn))


class SIPNet(SegmentationNetwork):
    """SIP-Net (Zhu et al. 2020), 3D encoder-decoder with dense-residual blocks and attention-focused modules.

    Architecture (Sec. 3, Table 1; defaults reproduce the paper with k = 32):
    conv3x3 (1 -> 64) -> BN-ReLU -> avg-pool; three down DRBs with 4, 8, 16 dense layers whose
    transitions give k*L = 128, 256, 512 channels, the first two followed by 2x avg-pool (three
    poolings in all, so ``size_divisor`` is 8); three deconvolutions (512 -> 256 -> 128 -> 64), each
    followed by an attention-focused module on the long connection and an up DRB with 8, 4, 2 dense
    layers; a 1x1 head. Deep supervision: one head on each deconvolution output (Sec. 3.1), computed
    in training mode only.

    Input size: any; a size that is not a multiple of 8 is replicate-padded at the high end and every
    output cropped back (the base-class rule), so the paper's 16 x 96 x 96 tiles need no padding.

    Choices where paper and code differ, or where neither fits this project's contract:

    * **Attention module follows the code**: out = D + sigmoid(D) * skip, with the gate computed from
      the ReLU'd deconvolution output D. The paper (Sec. 3.3, Eq. 4-5) writes the mask as the sigmoid
      of "the feature map from long connection" H_t(x), multiplies it into unnamed "input feature
      maps", and never says how the result joins the decoder. Read literally, a mask computed from
      the skip alone cannot select anything the decoder knows; the code is the only complete
      specification and its trained behaviour is what the paper reports (Fig. 9 masks).
      Consequence, kept deliberately: the masks (``attention_1..3``) lie in [0.5, 1), so the gate
      can halve a skip feature but never close it.
    * **Full-resolution long connection** is the pre-BN output of the first convolution (code).
    * **Down DRB shortcut** is a BN-ReLU-Conv1x1 on the block input; up DRBs use an identity
      shortcut (code; the paper's Fig. 3B only shows "a residual connection"). Down DRBs output
      ``growth_rate * L`` channels (Table 1); up DRB transitions map back to the block's input width
      (the code writes ``growth_rate * L``, which coincides only for k = 32 and breaks otherwise).
    * **Transition order** is BN-ReLU-Conv1x1 (Sec. 3.1 and the code); Sec. 3.2 words it as "a 1x1
      convolution layer, a batch-normalization and a ReLU". Pre-activation keeps the residual sum
      of the DRB free of a trailing ReLU, as in the code.
    * **Output**: ``num_classes`` softmax logits including background instead of the paper's single
      sigmoid channel (project contract). Side heads sit on the deconvolution outputs before the
      attention fusion (code); they return low-resolution logits that the base class upsamples
      trilinearly, whereas the code upsamples sigmoid probabilities by nearest neighbour.
    * **Maps**: ``attention_i`` is the channel mean of AM ``i``'s mask (i = 1 coarsest, 1/4
      resolution; i = 3 full resolution), one channel each, so that maps stay cheap at full size.
    * **BatchNorm** uses the Keras settings of the code (eps 1e-3, momentum 0.99 = PyTorch 0.01)
      everywhere, except that the code's eps = 0 in the first BN of each dense layer is not copied
      (it divides by zero on a constant channel).
    * **Initialisation**: He-normal for convolutions (code); PyTorch default for deconvolutions.
    * **Parameters**: the default configuration has 12,006,208 trainable parameters with one output
      channel, as the code (reference rebuild) has; with the 2-class softmax heads it has 512 more.
      The paper's "3.16 M" (Sec. 4.2) cannot come from this architecture: the three 3x3x3
      deconvolutions alone hold 4.65 M.
    * Not part of the network and left to the trainer: the code's BCE loss weights
      [0.1, 0.15, 0.25, 0.5] for the three side outputs (coarsest first, the order of
      ``deep_supervision``) and the main output, L2 weight decay 5e-4, SGD (lr 1e-4, momentum 0.9).

    Args:
        in_channels: input channels (1 for T2 prostate MR).
        num_classes: output classes including background.
        init_filters: channels of the first convolution (64).
        growth_rate: dense growth rate k (32).
        down_layers: dense layers per down DRB (4, 8, 16).
        up_layers: dense layers per up DRB, coarsest first (8, 4, 2).
        bottleneck: width of each dense layer's 1x1 conv, in multiples of k (4).
        dropout: dropout after each dense layer's 3x3 conv (0.3).
        norm_eps, norm_momentum: BatchNorm settings (PyTorch convention).
    """

    name = "sipnet"
    spatial_dims = 3
    map_names = ("attention_1", "attention_2", "attention_3")

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        init_filters: int = 64,
        growth_rate: int = 32,
        down_layers: Sequence[int] = (4, 8, 16),
        up_layers: Sequence[int] = (8, 4, 2),
        bottleneck: int = 4,
        dropout: float = 0.3,
        norm_eps: float = 1e-3,
        norm_momentum: float = 0.01,
    ) -> None:
        super().__init__()
        if len(down_layers) != 3 or len(up_layers) != 3:
            raise ValueError(f"SIP-Net has three down and three up DRBs; got {down_layers} and {up_layers}")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.size_divisor = 8
        bn = {"eps": norm_eps, "momentum": norm_momentum}
        drb = {"growth_rate": growth_rate, "bottleneck": bottleneck, "dropout": dropout, "bn": bn}

        self.stem = Conv[Conv.CONV, 3](in_channels, init_filters, 3, padding=1, bias=False)
        self.stem_pool = nn.Sequential(*_norm_act(init_filters, bn), Pool[Pool.AVG, 3](2))
        skip_channels = [init_filters]
        down: list[nn.Module] = []
        channels = init_filters
        for num_layers in down_layers:
            width = growth_rate * num_layers  # Table 1: TransLayer1-3 give k * L channels
            down.append(DenseResidualBlock(channels, width, num_layers, **drb, project_shortcut=True))
            channels = width
            skip_channels.append(channels)
        self.down = nn.ModuleList(down)
        self.pool = Pool[Pool.AVG, 3](2)

        self.deconvs = nn.ModuleList()
        self.up = nn.ModuleList()
        self.side_heads = nn.ModuleList()
        for num_layers, skip in zip(up_layers, reversed(skip_channels[:-1])):
            self.deconvs.append(_Deconv(channels, skip, bn))
            self.side_heads.append(_head(skip, num_classes, bn))
            self.up.append(DenseResidualBlock(skip, skip, num_layers, **drb, project_shortcut=False))
            channels = skip
        self.attention = AttentionFocusedModule()
        self.head = _head(channels, num_classes, bn)

        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward_padded(self, x: torch.Tensor, return_maps: bool) -> SegmentationOutput:
        x0 = self.stem(x)
        skips = [x0]
        h = self.stem_pool(x0)
        for i, block in enumerate(self.down):
            h = block(h)
            if i < len(self.down) - 1:
                skips.append(h)
                h = self.pool(h)

        side_logits: list[torch.Tensor] = []  # deep supervision: only computed when it is trained
        maps: dict[str, torch.Tensor] = {}
        for i, (deconv, side_head, block) in enumerate(zip(self.deconvs, self.side_heads, self.up)):
            d = deconv(h)
            if self.training:
                side_logits.append(side_head(d))
            fused, mask = self.attention(d, skips[-1 - i])
            if return_maps:
                maps[self.map_names[i]] = mask.mean(dim=1, keepdim=True)
            h = block(fused)
        return SegmentationOutput(self.head(h), deep_supervision=tuple(side_logits), maps=maps)
