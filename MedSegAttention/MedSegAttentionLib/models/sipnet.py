"""SIP-Net: Selective Information Passing Network for 3D medical image segmentation.

Zhu et al., "Selective information passing for MR/CT image segmentation", Neural Computing and
Applications (2020), arXiv:2010.04920; authors' Keras code: github.com/ahukui/SIPNet (not copied).
Section numbers below refer to the paper; "the code" means the authors' ``SIPNet.py``.
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
    """Attention-focused module (AM, Sec. 3.3, Eq. 4-5); returns (output, mask, map).

    ``gate="paper"`` (default): the mask is the sigmoid of the long-connection feature H_t (Eq. 4-5,
    values in (0, 1)) and the AM output, the element-wise product of the mask and the long-connection
    feature it modulates ("AM modulated long connections", Sec. 4.4), joins the decoder feature D:
    out = D + sigmoid(H) * H.

    ``gate="code"``: the authors' code, out = D + sigmoid(D) * H, with the gate computed from the
    ReLU'd deconvolution output D, so it lies in [0.5, 1).

    The map is the mask of each voxel averaged over channels *weighted by how much long-connection
    signal each channel carries there*: sum_c M_c |H_c| / sum_c |H_c|, the share of the
    long-connection signal the module lets through (0 = closed, 1 = open; a plain channel mean is
    dominated by silent channels whose mask sits at 0.5 and shows a flat wash). In ``code`` mode the
    [0.5, 1) gate is first mapped to [0, 1) by 2 M - 1. Parameter-free.
    """

    def __init__(self, gate: str = "paper") -> None:
        super().__init__()
        if gate not in ("paper", "code"):
            raise ValueError(f"SIP-Net attention gate must be 'paper' or 'code', got {gate!r}")
        self.gate = gate

    def forward(self, decoder: torch.Tensor, skip: torch.Tensor, return_map: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.gate == "paper":
            mask = torch.sigmoid(skip)
            opening = mask
        else:
            mask = torch.sigmoid(decoder)
            opening = 2.0 * mask - 1.0
        out = decoder + mask * skip
        if not return_map:
            return out, None
        weight = skip.detach().abs().float()
        share = (opening.detach().float() * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True).clamp_min(1e-6)
        return out, share.clamp(0.0, 1.0)


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

    * **Attention module**: by default as the paper (Sec. 3.3, Eq. 4-5): the mask is the sigmoid of
      the long-connection feature H_t(x), values in (0, 1), multiplied into that feature; the
      modulated long connection is added to the decoder feature as in the code. The paper never
      says how the AM output joins the decoder; the addition is the code's. ``attention="code"``
      is the authors' code, out = D + sigmoid(D) * skip, whose gate from the ReLU'd deconvolution
      output lies in [0.5, 1) and can halve a skip feature but never close it.
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
    * **Maps**: ``attention_i`` (i = 1 coarsest, 1/4 resolution; i = 3 full resolution) is AM
      ``i``'s mask reduced to one channel, weighted by the long-connection signal of each channel
      (see :class:`AttentionFocusedModule`): the share of that signal the module passes, in [0, 1].
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
      ``deep_supervision``) and the main output, the Keras L2 regulariser 5e-4 (SGD weight decay 1e-3
      in PyTorch's convention, recipe ``sipnet-prostate-mr``), SGD (lr 1e-4, momentum 0.9).

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
        attention: ``"paper"`` (Eq. 4-5, mask from the long connection) or ``"code"`` (authors' code).
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
        attention: str = "paper",
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
        self.attention = AttentionFocusedModule(attention)
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
            fused, share = self.attention(d, skips[-1 - i], return_map=return_maps)
            if share is not None:
                maps[self.map_names[i]] = share
            h = block(fused)
        return SegmentationOutput(self.head(h), deep_supervision=tuple(side_logits), maps=maps)
