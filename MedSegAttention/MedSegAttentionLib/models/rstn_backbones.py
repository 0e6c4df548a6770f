"""The two per-stage backbones of RSTN (coarse and fine networks, separate weights).

* ``"fcn8s"``: FCN-8s on VGG-16 (Long et al. 2015), the network of the RSTN paper ("Different
  Settings": "We use the FCN-8s model"). Written from the FCN paper's description; torchvision is not
  used. Parameter count with 3 classes: 134,277,737 including the frozen up-sampling kernels, the
  figure of the authors' Caffe model (github.com/198808xc/OrganSegRSTN).
* ``"unet_light"``: a light U-Net (MONAI :class:`~monai.networks.nets.BasicUNet`, 4 down-samplings,
  instance norm). The default backbone, because FCN-8s is meant to start from ImageNet/VOC weights
  and none can be fetched at run time; trained from scratch a small U-Net converges far better.
"""

from __future__ import annotations

import torch
from monai.networks.nets import BasicUNet
from torch import nn

#: VGG-16 convolution blocks: (width multiplier of ``base_channels``, number of 3x3 convs)
VGG16_BLOCKS: tuple[tuple[int, int], ...] = ((1, 2), (2, 2), (4, 3), (8, 3), (8, 3))


def bilinear_kernel(channels: int, size: int) -> torch.Tensor:
    """(channels, channels, size, size) transposed-convolution weight doing per-channel bilinear
    up-sampling (the FCN "surgery" fill): a bilinear kernel on the diagonal, zeros elsewhere."""
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(size, dtype=torch.float32, device="cpu") - centre).abs() / factor
    weight = torch.zeros(channels, channels, size, size, device="cpu")
    weight[range(channels), range(channels)] = ramp[:, None] * ramp[None, :]
    return weight


def _frozen_bilinear_up(channels: int, scale: int) -> nn.ConvTranspose2d:
    """Exact ``scale``-times up-sampling (kernel 2*scale, stride scale), bilinear, no bias, frozen."""
    up = nn.ConvTranspose2d(channels, channels, 2 * scale, stride=scale, padding=scale // 2, bias=False)
    if not up.weight.is_meta:  # meta tensors (parameter counting) hold no values
        with torch.no_grad():
            up.weight.copy_(bilinear_kernel(channels, 2 * scale))
    up.weight.requires_grad_(False)
    return up


class FCN8s(nn.Module):
    """FCN-8s on VGG-16 (Long et al. 2015): 13 VGG convs, fc6 (7x7) and fc7 (1x1) as convolutions,
    score layers on fc7, pool4 and pool3 fused by 2x, 2x and 8x frozen bilinear up-sampling.

    Deliberate change to the Caffe layout: "same" padding everywhere (conv1_1 pad 1 instead of 100,
    fc6 pad 3) and exact up-sampling (k4 s2 p1, k16 s8 p4) instead of the pad-100 + crop-offset
    trick. Same parameters, output aligned with the input by construction, no 200-pixel enlargement;
    in exchange the input must be a multiple of 32 (:attr:`divisor`). ``base_channels``/
    ``fc_channels`` shrink the widths for tests (VGG-16: 64 and 4096).
    """

    divisor = 32

    def __init__(
        self, in_channels: int = 3, num_classes: int = 2, base_channels: int = 64, fc_channels: int = 4096,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        blocks: list[nn.Sequential] = []
        channels = in_channels
        for multiplier, depth in VGG16_BLOCKS:
            width = base_channels * multiplier
            layers: list[nn.Module] = []
            for _ in range(depth):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
                channels = width
            layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
        self.to_pool3 = nn.Sequential(*blocks[:3])
        self.to_pool4, self.to_pool5 = blocks[3], blocks[4]
        self.fc = nn.Sequential(
            nn.Conv2d(channels, fc_channels, 7, padding=3), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Conv2d(fc_channels, fc_channels, 1), nn.ReLU(inplace=True), nn.Dropout(dropout),
        )
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        self.score_pool4 = nn.Conv2d(8 * base_channels, num_classes, 1)
        self.score_pool3 = nn.Conv2d(4 * base_channels, num_classes, 1)
        for module in self.modules():  # from scratch: He init (no pretrained VGG available)
            if isinstance(module, nn.Conv2d) and not module.weight.is_meta:  # meta: counting only
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        self.up_fr = _frozen_bilinear_up(num_classes, 2)
        self.up_pool4 = _frozen_bilinear_up(num_classes, 2)
        self.up_final = _frozen_bilinear_up(num_classes, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool3 = self.to_pool3(x)
        pool4 = self.to_pool4(pool3)
        score = self.score_fr(self.fc(self.to_pool5(pool4)))
        score = self.up_fr(score) + self.score_pool4(pool4)
        score = self.up_pool4(score) + self.score_pool3(pool3)
        return self.up_final(score)


def instance_norms_as_group_norms(module: nn.Module) -> nn.Module:
    """Replace every affine ``InstanceNorm`` without running statistics by ``GroupNorm`` with one group
    per channel: the same normalisation (mean and variance per sample and channel, same ``eps``, same
    ``weight`` and ``bias``, so state dicts load unchanged), computed by PyTorch's group-norm kernel,
    4-7 times faster on the CPU than its instance-norm one (docs/benchmarks.md)."""
    for name, child in list(module.named_children()):
        if (isinstance(child, nn.modules.instancenorm._InstanceNorm) and child.affine
                and not child.track_running_stats):
            group = nn.GroupNorm(child.num_features, child.num_features, eps=child.eps, affine=True)
            with torch.no_grad():
                group.weight.copy_(child.weight)
                group.bias.copy_(child.bias)
            setattr(module, name, group)
        else:
            instance_norms_as_group_norms(child)
    return module


class LightUNet(BasicUNet):
    """Light 2D U-Net: MONAI BasicUNet with widths (c, c, 2c, 4c, 8c, c), instance norm, LeakyReLU.

    Instance norm suits the fine stage, which runs one crop at a time (batch norm would see batch 1);
    it is computed as a per-channel group norm (:func:`instance_norms_as_group_norms`).
    """

    divisor = 16

    def __init__(self, in_channels: int = 3, num_classes: int = 2, base_channels: int = 32) -> None:
        c = base_channels
        super().__init__(
            spatial_dims=2, in_channels=in_channels, out_channels=num_classes, features=(c, c, 2 * c, 4 * c, 8 * c, c)
        )
        instance_norms_as_group_norms(self)


#: default ``base_channels`` per backbone (VGG-16's 64; MONAI BasicUNet's 32)
DEFAULT_WIDTH: dict[str, int] = {"fcn8s": 64, "unet_light": 32}


def build_backbone(
    backbone: str, in_channels: int, num_classes: int, base_channels: int | None = None, fc_channels: int = 4096
) -> FCN8s | LightUNet:
    """One stage network; ``base_channels=None`` picks the backbone's standard width."""
    if backbone not in DEFAULT_WIDTH:
        raise ValueError(f"unknown RSTN backbone {backbone!r}; choose one of {sorted(DEFAULT_WIDTH)}")
    width = DEFAULT_WIDTH[backbone] if base_channels is None else int(base_channels)
    if backbone == "fcn8s":
        return FCN8s(in_channels, num_classes, width, fc_channels)
    return LightUNet(in_channels, num_classes, width)
