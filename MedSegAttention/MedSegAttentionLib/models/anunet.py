"""ANU-Net: attention-based nested U-Net with deep supervision and L1-L4 pruning.

Li et al., "ANU-Net: Attention-based nested U-Net to exploit full resolution features for medical
image segmentation", Computers & Graphics 90:11-20 (2020), doi:10.1016/j.cag.2020.05.003. Written
from the paper; the authors' public code (github.com/lichen14/Attention-unet-plusplus) was only read
for the details the paper leaves open, and for the parameter counts of its Table 6.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from torch import nn

from .base import SegmentationNetwork, SegmentationOutput

MAX_LEVEL = 4


def _nodes(level: int) -> list[tuple[int, int]]:
    """Decoder nodes X(i,j), j >= 1, of the sub-network L``level`` (i + j <= level), in compute order."""
    return [(i, j) for j in range(1, level + 1) for i in range(level + 1 - j)]


def _conv_block(dims: int, in_channels: int, out_channels: int) -> nn.Sequential:
    """Nested convolution block Phi (Sec. 3.3): (conv3 with bias -> BN -> ReLU) x 2."""
    return nn.Sequential(
        Convolution(dims, in_channels, out_channels, kernel_size=3, act="RELU", norm="BATCH"),
        Convolution(dims, out_channels, out_channels, kernel_size=3, act="RELU", norm="BATCH"),
    )


class AttentionGate(nn.Module):
    """Additive attention gate, Sec. 3.2, Eqs. (1)-(3).

    ``alpha = sigmoid(BN(W_theta relu(BN(W_f f) + BN(W_g g))))``; the output is ``f * alpha``.
    The gating signal ``g`` (the up-sampled deeper feature) and ``f`` share one resolution, so every
    projection is a 1x1 convolution.
    """

    def __init__(self, dims: int, channels: int, inter_channels: int) -> None:
        super().__init__()
        self.w_g = Convolution(dims, channels, inter_channels, kernel_size=1, act=None, norm="BATCH")
        self.w_f = Convolution(dims, channels, inter_channels, kernel_size=1, act=None, norm="BATCH")
        self.w_theta = Convolution(dims, inter_channels, 1, kernel_size=1, act="SIGMOID", norm="BATCH")

    def forward(self, g: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self.w_theta(torch.relu(self.w_g(g) + self.w_f(f)))
        return f * alpha, alpha


class ANUNet(SegmentationNetwork):
    """ANU-Net (Li et al. 2020): a UNet++-style nested U-Net whose dense skips pass attention gates.

    **Topology** (Sec. 3.3, Eq. 4, filters ``features`` = c_0..c_4). Encoder
    ``X(i,0) = Phi(maxpool(X(i-1,0)))``. Decoder node, j >= 1::

        u      = Up_i(X(i+1, j-1))                      # 2x transposed conv -> BN -> ReLU
        A(i,j) = AG_(i,j)(g=u, f=X(i, j-1))             # the node's attention gate
        X(i,j) = Phi(cat[A(i,1), ..., A(i,j), u])       # (j+1) c_i -> c_i

    **Deliberate choices where paper and code differ or the paper is silent**

    * *Which skips are gated.* Eq. (4) concatenates the gated versions of *all* earlier nodes of the
      row ("the outputs of prior Attention Gates along skip connection at the same depth", Sec. 3.3);
      the authors' code gates only X(i,j-1) and concatenates X(i,0..j-2) raw. We follow the paper
      with one gate per node, as the code has: gate AG_(i,j) gates X(i,j-1) once and its output
      A(i,j) is re-used by every later node of the row. This is parameter-identical to the code
      (Table 6 confirms both) and costs no extra compute.
    * *Up-sampling* is one transposed convolution per level shared by all nodes of that level, as in
      the code (UNet++ has one per node). Table 6 decides it: one per node would add 0.22 M (2.5 %).
    * *Gate width* F_int = max(c_i // 2, c_0): 32, 32, 64, 128 for the default filters, as in the code.
    * *Convolution block* Phi (Eq. 4) is not detailed in the paper; it is the code's (3x3 conv with
      bias -> BN -> ReLU) x 2, without the dropout UNet++ uses (the code defines none in use either).
    * *Heads and sigmoid.* The paper's heads are 1x1 conv + sigmoid on X(0,1..4) (Sec. 3.4). Each of
      our heads is a 1x1 conv to ``num_classes - 1`` channels ``z`` and the logits are ``[0, z]``
      (background logit fixed at 0). For two classes ``softmax([0, z])[1] = sigmoid(z)``, so this is
      exactly the paper's sigmoid head with its parameter count, and cross-entropy on it is the
      paper's BCE; for more classes it is an ordinary (reference-class) softmax.
    * *Loss* (Eq. 8, a Dice + focal/BCE hybrid summed over the four heads) belongs to training, not here.

    **Outputs.** Logits are the X(0, ``level``) head, in eval and in training: the full model
    (``level=4``) predicts with X(0,4), as the paper's L4 and the authors' test script do (not the
    mean of the heads). In training, ``deep_supervision`` holds the shallower heads in the order
    X(0,1), ..., X(0,level-1). Maps ``attention_x{i}_{j}`` are the coefficients alpha of gate
    AG_(i,j) at the resolution of row i (Fig. 12 shows row 0).

    **Pruning** (Sec. 3.5, Fig. 7). ``ANUNet(level=k)`` builds and runs only L_k, the nodes with
    i + j <= k, so its parameter count is Table 6's (L1 0.10 M, L2 0.51 M, L3 2.19 M, L4 8.95 M).
    :meth:`pruned` copies a trained model's weights into L_k (keeping only the X(0,k) head), and
    :meth:`load_state_dict` accepts the state dict of a deeper model (its extra modules are dropped);
    the pruned output is exactly the deeper model's X(0,k) head. ``deep_supervision=False`` builds
    the X(0,level) head only. Parameters, trainable: L1 103,812; L2 513,354; L3 2,191,763 (single
    head, as Table 6 counts the pruned models); L4 8,950,594 with its four heads (8,950,495 with one).

    **Input size.** Inputs are replicate-padded at the high end to a multiple of ``size_divisor``
    (default ``2**level``, what the ``level`` max-poolings need) and every output is cropped back (the
    base-class rule). A pruned model keeps the divisor of the model it was pruned from, so it sees the
    same padded input and its output equals the deeper model's head at *any* input size.

    ``spatial_dims=3`` gives the volumetric variant (3D convolutions and pooling; the authors' 3D
    model used filters 8..128, which suits 3D memory better than the 2D default).
    """

    name = "anunet"
    map_names = tuple(f"attention_x{i}_{j}" for i, j in _nodes(MAX_LEVEL))

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        level: int = 4,
        deep_supervision: bool = True,
        size_divisor: int | None = None,
    ) -> None:
        """``size_divisor``: pad inputs to a multiple of this (a multiple of ``2**level``; ``None``:
        ``2**level``); :meth:`pruned` sets it to the deeper model's."""
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if not 1 <= level <= MAX_LEVEL:
            raise ValueError(f"level must be 1..{MAX_LEVEL} (pruned sub-network L1..L4), got {level}")
        if len(features) != MAX_LEVEL + 1:
            raise ValueError(f"features needs {MAX_LEVEL + 1} filter counts (c_0..c_4), got {list(features)}")
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        self.spatial_dims = spatial_dims
        self.in_channels, self.num_classes = in_channels, num_classes
        self.level, self.deep_supervision = level, deep_supervision
        if size_divisor is not None and (int(size_divisor) < 1 or int(size_divisor) % 2**level):
            raise ValueError(f"size_divisor must be a positive multiple of 2**level = {2**level}, got {size_divisor}")
        self.size_divisor = 2**level if size_divisor is None else int(size_divisor)
        self.map_names = tuple(f"attention_x{i}_{j}" for i, j in _nodes(level))  # type: ignore[misc]
        c = [int(f) for f in features]
        dims = spatial_dims

        self.pool = Pool[Pool.MAX, dims](kernel_size=2)
        self.blocks = nn.ModuleDict()  # X(i,j) -> Phi
        for i in range(level + 1):
            self.blocks[f"x{i}_0"] = _conv_block(dims, in_channels if i == 0 else c[i - 1], c[i])
        for i, j in _nodes(level):
            self.blocks[f"x{i}_{j}"] = _conv_block(dims, (j + 1) * c[i], c[i])
        self.ups = nn.ModuleDict(  # Up_i: row i+1 -> row i, shared along the row
            {
                f"up{i}": Convolution(
                    dims, c[i + 1], c[i], strides=2, kernel_size=2, padding=0, output_padding=0,
                    is_transposed=True, act="RELU", norm="BATCH",
                )
                for i in range(level)
            }
        )
        self.gates = nn.ModuleDict(
            {f"x{i}_{j}": AttentionGate(dims, c[i], max(c[i] // 2, c[0])) for i, j in _nodes(level)}
        )
        head_levels = range(1, level + 1) if deep_supervision else (level,)
        self.heads = nn.ModuleDict(
            {f"x0_{j}": Convolution(dims, c[0], num_classes - 1, kernel_size=1, conv_only=True) for j in head_levels}
        )

    # ------------------------------------------------------------------ forward
    def forward_padded(self, x: torch.Tensor, return_maps: bool) -> SegmentationOutput:
        """Eq. (4) node by node; the shallower heads (deep supervision) run in training mode only,
        the attention coefficients are collected only when asked for."""
        rows: list[list[torch.Tensor]] = []  # rows[i][j] = X(i,j)
        for i in range(self.level + 1):
            rows.append([self.blocks[f"x{i}_0"](x if i == 0 else self.pool(rows[-1][0]))])
        gated: list[list[torch.Tensor]] = [[] for _ in range(self.level)]  # A(i,1..j)
        maps: dict[str, torch.Tensor] = {}
        for i, j in _nodes(self.level):
            key = f"x{i}_{j}"
            u = self.ups[f"up{i}"](rows[i + 1][j - 1])
            a, alpha = self.gates[key](u, rows[i][j - 1])
            gated[i].append(a)
            rows[i].append(self.blocks[key](torch.cat([*gated[i], u], dim=1)))
            if return_maps:
                maps[f"attention_{key}"] = alpha
        used = list(self.heads) if self.training else [f"x0_{self.level}"]
        heads = [self._logits(self.heads[k](rows[0][int(k.split("_")[1])])) for k in used]
        return SegmentationOutput(logits=heads[-1], deep_supervision=tuple(heads[:-1]), maps=maps)

    @staticmethod
    def _logits(z: torch.Tensor) -> torch.Tensor:
        """Prepend a zero background logit: softmax([0, z])[1:] is sigmoid(z) for one foreground class."""
        return torch.cat([torch.zeros_like(z[:, :1]), z], dim=1)

    # ------------------------------------------------------------------ pruning
    def pruned(self, level: int) -> ANUNet:
        """The test-time sub-network L``level`` (Sec. 3.5) with this model's weights, in eval mode.

        It keeps only the X(0,level) head (``deep_supervision=False``): the shallower heads play no
        part in its prediction, and Table 6 counts L1-L3 this way. It keeps this model's
        ``size_divisor``, so its output equals this model's X(0,level) head at any input size.
        """
        if not 1 <= level <= self.level:
            raise ValueError(f"can prune an L{self.level} model to L1..L{self.level}, not L{level}")
        if not self.deep_supervision and level != self.level:
            raise ValueError("pruning needs the deep-supervision heads (deep_supervision=True)")
        params = {k: v for k, v in self.config.items() if k != "name"}
        small = ANUNet(**{**params, "level": level, "deep_supervision": False, "size_divisor": self.size_divisor})
        small.load_state_dict(self.state_dict())
        return small.to(next(self.parameters()).device).eval()

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load weights; entries of modules a pruned model lacks (deeper nodes, gates, ups, heads) are
        dropped, so a full L4 state dict loads into any L_k. Any other mismatch still raises."""
        own = {"blocks": self.blocks, "ups": self.ups, "gates": self.gates, "heads": self.heads}

        def belongs(key: str) -> bool:
            group, _, rest = key.partition(".")
            return group not in own or rest.split(".", 1)[0] in own[group]

        return super().load_state_dict({k: v for k, v in state_dict.items() if belongs(k)}, strict, assign)
