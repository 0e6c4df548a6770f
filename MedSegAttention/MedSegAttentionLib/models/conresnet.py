"""ConResNet: inter-slice context residual learning for 3D segmentation.

Zhang, Xie, Wang, Xia, "Inter-slice Context Residual Learning for 3D Medical Image Segmentation",
IEEE TMI 40(2):661-672 (2021), doi:10.1109/TMI.2020.3034995. A shared residual encoder (Sec. III-A), a segmentation decoder and a context-residual
(ConRes) decoder (Sec. III-B) joined at each scale by a context residual module (Sec. III-C).
Written from the paper; no code from the authors' repository (github.com/jianpengz/ConResNet).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import SegmentationNetwork, SegmentationOutput

__all__ = ["ConResNet", "WSConv3d", "slice_residual", "context_residual_target"]

SLICE_AXIS = 2  # (B, C, S, H, W): the depth axis of the tensor is the paper's slice axis S


def slice_residual(x: torch.Tensor) -> torch.Tensor:
    """|x[s] - x[s-1]| along the slice axis, first slice zero (Eq. 1 / Eq. 4 with zero padding)."""
    diff = (x[:, :, 1:] - x[:, :, :-1]).abs()
    return F.pad(diff, (0, 0, 0, 0, 1, 0))


def context_residual_target(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Training target of the ``aux`` context-residual logits (Eq. 1), one channel per foreground class.

    ``labels`` (B, S, H, W) integer class indices -> (B, num_classes - 1, S, H, W) float in {0, 1}:
    channel k-1 is 1 where class k starts or stops between slice s-1 and s; slice 0 is 0.
    """
    one_hot = F.one_hot(labels.long(), num_classes).movedim(-1, 1).float()
    return slice_residual(one_hot[:, 1:])


class WSConv3d(nn.Conv3d):
    """3D convolution with weight standardisation (Sec. III-A, Qiao et al. [37]).

    Each output filter is standardised over (in, kD, kH, kW) to zero mean and unit variance before
    use; no bias (a GroupNorm follows in the next pre-activation unit).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1) -> None:
        padding = dilation * (kernel_size // 2)
        super().__init__(in_ch, out_ch, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        var, mean = torch.var_mean(w, dim=(1, 2, 3, 4), keepdim=True, unbiased=False)
        w = (w - mean) * torch.rsqrt(var + 1e-5)
        return F.conv3d(x, w, None, self.stride, self.padding, self.dilation, self.groups)


class NormActConv(nn.Sequential):
    """Pre-activation unit GroupNorm -> ReLU -> [Dropout3d] -> WS-conv (the paper's "Conv" layer)."""

    def __init__(
        self, in_ch: int, out_ch: int, groups: int, stride: int = 1, dilation: int = 1, dropout: float = 0.0
    ) -> None:
        layers: list[nn.Module] = [nn.GroupNorm(groups, in_ch), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout3d(dropout))
        layers.append(WSConv3d(in_ch, out_ch, 3, stride=stride, dilation=dilation))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3x3 pre-activation units plus identity skip (Sec. III-A); ``dilation`` for the last stage."""

    def __init__(self, ch: int, groups: int, dilation: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            NormActConv(ch, ch, groups, dilation=dilation), NormActConv(ch, ch, groups, dilation=dilation)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ContextResidualModule(nn.Module):
    """Context residual module (Sec. III-C, Fig. 2b): residual mapping and context attention.

    Segmentation path: F = Conv(I_seg + I_skip) (Eq. 3).
    Residual mapping: G = |sigma(F)[s] - sigma(F)[s-1]| (Eq. 4, first slice zero);
    O_res = Conv(Conv1x1(G) + I_res) (Eq. 5), where I_res is first brought to ``out_ch`` channels.
    Context attention: O_seg = F * (1 + sigma(O_res)) (Eq. 6).
    In the first module I_res is the image context residual, projected by a plain WS-conv (no
    norm/activation before it, as the raw residual image is not a feature map).
    """

    def __init__(self, in_ch: int, out_ch: int, res_in_ch: int, groups: int, first: bool = False) -> None:
        super().__init__()
        self.seg_conv = NormActConv(in_ch, out_ch, groups)
        self.residual_proj = WSConv3d(out_ch, out_ch, kernel_size=1)
        if first:
            self.res_in: nn.Module = WSConv3d(res_in_ch, out_ch)
        elif res_in_ch != out_ch:
            self.res_in = NormActConv(res_in_ch, out_ch, groups)
        else:
            self.res_in = nn.Identity()
        self.res_conv = NormActConv(out_ch, out_ch, groups)

    def forward(self, seg: torch.Tensor, res: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(I_seg + I_skip, I_res) -> (O_seg, O_res, attention sigma(O_res))."""
        f = self.seg_conv(seg)
        g = slice_residual(torch.sigmoid(f))
        o_res = self.res_conv(self.res_in(res) + self.residual_proj(g))
        attention = torch.sigmoid(o_res)
        return f * (1 + attention), o_res, attention


def _upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Trilinear interpolation to ``ref``'s spatial size (never a fixed tile shape)."""
    return F.interpolate(x, size=ref.shape[2:], mode="trilinear", align_corners=False)


class ConResNet(SegmentationNetwork):
    """3D context residual network (Zhang et al., TMI 2021).

    Structure (Sec. III, Fig. 2), channels for ``base_channels`` c = 32:

    * Encoder (Sec. III-A): WS-conv in->c, ``blocks[0]`` residual blocks (skip 1); three stages of a
      stride-2 GN-ReLU-WS-conv doubling channels and ``blocks[1..3]`` residual blocks (skips 2, 3 at
      1/2, 1/4; bottom at 1/8, 8c); a last stage of ``blocks[4]`` residual blocks with dilation
      ``dilation`` at 1/8; then GN-ReLU-Dropout3d(``dropout``)-WS-conv 8c -> 4c.
    * Decoders (Sec. III-B): three context residual modules (4c->2c at 1/4, 2c->c at 1/2, c->c at 1/1).
      Each stage upsamples the segmentation features to the skip's size and adds the skip; the ConRes
      decoder starts from the image context residual (computed here from the input, Eq. 1 applied to
      the intensities) resized to 1/4, and upsamples its features between stages.
    * Heads: 1x1 conv (with bias) on the segmentation path -> ``logits``; 1x1 convs on the ConRes
      outputs at 1/1, 1/2 and 1/4 -> ``aux["context_residual"]``, ``aux["context_residual_ds1"]``
      (1/2), ``aux["context_residual_ds2"]`` (1/4), the deep-supervised residual heads of Eq. 8/9.

    Outputs. ``logits`` have ``num_classes`` channels (background = 0) for softmax. The paper uses one
    sigmoid per target (1 for pancreas; ET/WT/TC for BraTS); here the segmentation head is a softmax
    over mutually exclusive labels, so pancreas is ``num_classes=2`` and BraTS ``num_classes=4``
    (background, necrosis/non-enhancing, oedema, enhancing; the regions WT/TC/ET are unions of these
    softmax probabilities). The context-residual heads keep the paper's per-target sigmoid: they have
    ``num_classes - 1`` channels (one per foreground class) and are trained against
    :func:`context_residual_target` with the foreground-weighted BCE of Eq. 8 (positive weight
    log(V / V_k)), total L_res = L0 + 0.5 (L1 + L2) (Eq. 9), added to Dice + CE on ``logits`` (Eq. 7).
    There is no deep supervision of the segmentation decoder (neither paper nor code has any), so
    ``deep_supervision`` is empty.

    Maps (``return_maps``): ``context_residual`` = sigmoid of the full-resolution residual logits;
    ``context_attention_1..3`` = channel mean of sigma(O_res) of modules 1 (1/4), 2 (1/2), 3 (1/1), i.e.
    the part of the gate 1 + sigma(O_res) that varies (Eq. 6); the channel mean follows Fig. 3.

    Slice axis: the first spatial axis (D of (B, C, D, H, W)) is the paper's slice axis S.

    Deliberate choices where paper, code and this project differ:

    * Blocks are pre-activation (GN-ReLU-conv), as in the authors' code; the paper's "Conv" in Eq. 3/5
      lists conv, GN, ReLU. Pre-activation keeps the residual identity paths clean.
    * Weight standardisation divides by sqrt(population variance + 1e-5) (as in [37]); the code uses
      the unbiased variance + 1e-12, which is numerically fragile and makes no practical difference.
    * Only modules used in the forward pass are built: the code defines ~0.42 M unused weights
      (19.44 M total, 19.02 M effective at 4 inputs / 3 outputs); this network has ~19.02 M
      with ``in_channels=4, num_classes=4`` (paper Table VII reports 19.3 M).
    * Upsampling follows the skip's size (the code fixes sizes from the training tile), with
      ``align_corners=False`` (the code uses True); any input size works (padded to a multiple of 8).
    * First slice of every context residual (image, features, label target) is zero: the paper pads
      G's first slice (Eq. 4); the code zeroes it for the image but keeps label[0] for the target,
      which would ask the network to predict the whole first-slice mask as "residual".
    * The code's residual BCE is applied to raw logits without a sigmoid (a bug); ``aux`` here are
      logits meant for BCE-with-logits.
    * Dropout3d(0.1) before the fusion conv follows the code (the paper does not mention it).
    * The inner Conv of Eq. 5, applied to the feature context residual G, is a plain 1x1 WS-conv as in
      the code (the paper's "Conv" is a weighted layer of convolution, GN and ReLU); G is in [0, 1]
      and the outer Conv of Eq. 5 supplies the normalisation and non-linearity.
    """

    name = "conresnet"
    spatial_dims = 3
    map_names = ("context_residual", "context_attention_1", "context_attention_2", "context_attention_3")

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        base_channels: int = 32,
        blocks: tuple[int, ...] = (1, 2, 2, 2, 2),
        norm_groups: int = 8,
        dilation: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts background and must be >= 2; got {num_classes}")
        if len(blocks) != 5:
            raise ValueError(f"blocks gives the residual blocks of the 5 encoder stages; got {blocks}")
        if base_channels % norm_groups:
            raise ValueError(f"base_channels ({base_channels}) must be divisible by norm_groups ({norm_groups})")
        self.in_channels, self.num_classes, self.size_divisor = in_channels, num_classes, 8
        c, g = base_channels, norm_groups
        widths = (c, 2 * c, 4 * c, 8 * c)

        # Encoder (Sec. III-A)
        self.stem = WSConv3d(in_channels, c)
        self.stages = nn.ModuleList()
        for i, width in enumerate(widths):
            down = [] if i == 0 else [NormActConv(widths[i - 1], width, g, stride=2)]
            self.stages.append(nn.Sequential(*down, *(ResidualBlock(width, g) for _ in range(blocks[i]))))
        self.dilated = nn.Sequential(*(ResidualBlock(8 * c, g, dilation=dilation) for _ in range(blocks[4])))
        self.fusion = NormActConv(8 * c, 4 * c, g, dropout=dropout)

        # Dual decoders joined by context residual modules (Sec. III-B/C)
        self.conres_x4 = ContextResidualModule(4 * c, 2 * c, in_channels, g, first=True)
        self.conres_x2 = ContextResidualModule(2 * c, c, 2 * c, g)
        self.conres_x1 = ContextResidualModule(c, c, c, g)

        # Heads: segmentation logits and deep-supervised context residual logits (Sec. III-D)
        res_out = num_classes - 1
        self.seg_head = nn.Conv3d(c, num_classes, 1)
        self.res_head = nn.Conv3d(c, res_out, 1)
        self.res_head_x2 = nn.Conv3d(c, res_out, 1)
        self.res_head_x4 = nn.Conv3d(2 * c, res_out, 1)

    def forward_padded(self, x: torch.Tensor, return_maps: bool) -> SegmentationOutput:
        image_residual = slice_residual(x)
        skip1 = self.stages[0](self.stem(x))
        skip2 = self.stages[1](skip1)
        skip3 = self.stages[2](skip2)
        bottom = self.fusion(self.dilated(self.stages[3](skip3)))

        res_in = F.interpolate(image_residual, size=skip3.shape[2:], mode="trilinear", align_corners=False)
        seg, res_x4, att1 = self.conres_x4(_upsample_to(bottom, skip3) + skip3, res_in)
        seg, res_x2, att2 = self.conres_x2(_upsample_to(seg, skip2) + skip2, _upsample_to(res_x4, skip2))
        seg, res_x1, att3 = self.conres_x1(_upsample_to(seg, skip1) + skip1, _upsample_to(res_x2, skip1))

        logits = self.seg_head(seg)
        residual_logits = self.res_head(res_x1) if (self.training or return_maps) else None
        aux: dict[str, torch.Tensor] = {}
        if residual_logits is not None and self.training:
            aux = {
                "context_residual": residual_logits,
                "context_residual_ds1": self.res_head_x2(res_x2),
                "context_residual_ds2": self.res_head_x4(res_x4),
            }
        maps: dict[str, torch.Tensor] = {}
        if residual_logits is not None and return_maps:
            maps = {"context_residual": torch.sigmoid(residual_logits)}
            for k, att in enumerate((att1, att2, att3), start=1):
                maps[f"context_attention_{k}"] = att.mean(dim=1, keepdim=True)
        return SegmentationOutput(logits=logits, aux=aux, maps=maps)
