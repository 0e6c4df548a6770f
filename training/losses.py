"""The training loss of each paper, for networks that follow the MedSegAttention output contract.

Every loss is an ``nn.Module`` called as ``loss(output, target)`` with a
:class:`~MedSegAttentionLib.models.SegmentationOutput` and the integer label tensor ``target``
(B, *spatial) holding class indices in ``[0, num_classes)``; it returns a scalar tensor.

From sigmoid papers to softmax networks. All networks here output ``num_classes`` logits with a
background channel 0 and are read with a softmax, whereas most papers use one sigmoid channel per
target. The losses map the paper's formulas as follows:

* foreground probability of class k = softmax channel k (k >= 1); ground truth = one-hot channel k;
* Dice-type terms are computed on the foreground channels only and averaged over them (for a
  binary task this is exactly the paper's single-channel Dice on p = P(foreground));
* binary cross entropy on P(foreground) equals softmax cross entropy when there are two classes
  (-[y log p1 + (1-y) log(1-p1)] with 1 - p1 = p0), so "BCE" terms use categorical cross entropy,
  its natural multi-class form;
* binary focal loss -alpha_t (1-p_t)^gamma log p_t uses p_t = softmax probability of the true class
  and alpha_t = alpha on foreground voxels, 1 - alpha on background voxels (again exact for two
  classes);
* ConResNet's context-residual heads keep the paper's per-target sigmoid (one channel per
  foreground class, in ``output.aux``), trained with BCE-with-logits.

Sums over voxels in the papers (ConResNet Eq. 7/8) are taken as means, as the authors' code does; it
only rescales the loss. Deep-supervision heads are absent in eval mode (contract): each loss then
scores the main ``logits`` alone, so a validation loss is the main head's loss.

Use :func:`build_loss` with a network's registry name (``"sipnet"``, ``"conresnet"``, ``"anunet"``,
``"raunet_2d"``/``"raunet_3d"``/``"raunet"``, ``"rstn"``) or ``"dice_ce"``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss, FocalLoss
from torch import nn

from MedSegAttentionLib.models import SegmentationOutput

__all__ = [
    "ANUNetLoss",
    "ConResNetLoss",
    "DiceCE",
    "LOSSES",
    "RAUNetLoss",
    "RSTNLoss",
    "SIPNetLoss",
    "SegmentationLoss",
    "build_loss",
    "context_residual_target",
    "loss_names",
    "residual_bce",
]


# ----------------------------------------------------------------------------------------------- helpers
def _check_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Validate (B, *spatial) integer labels against (B, C, *spatial) logits; return (B, 1, *spatial) long."""
    if target.ndim != logits.ndim - 1 or target.shape[0] != logits.shape[0] or target.shape[1:] != logits.shape[2:]:
        raise ValueError(
            f"target must be (B, *spatial) class indices matching logits {tuple(logits.shape)}; "
            f"got {tuple(target.shape)}"
        )
    if target.is_floating_point():
        raise TypeError(f"target must be an integer label tensor, got {target.dtype}")
    if logits.shape[1] < 2:
        raise ValueError(
            f"logits need a background and at least one foreground channel; got {logits.shape[1]} channel(s)"
        )
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= logits.shape[1]):
        raise ValueError(
            f"target values must lie in [0, {logits.shape[1]}); got [{int(target.min())}, {int(target.max())}]"
        )
    return target.long().unsqueeze(1)


def _foreground_dice(squared: bool, smooth_nr: float, smooth_dr: float, batch: bool) -> DiceLoss:
    """MONAI Dice loss on softmax foreground channels: 1 - (2 sum p y + nr) / (sum p(^2) + sum y(^2) + dr)."""
    return DiceLoss(
        include_background=False,
        to_onehot_y=True,
        softmax=True,
        squared_pred=squared,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
        batch=batch,
    )


def _weighted_heads(
    output: SegmentationOutput, weights: Sequence[float] | None, head_loss: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """sum_j w_j head_loss(head_j) over (deep_supervision..., logits); main head alone when there is no DS.

    ``weights`` lists the deep-supervision heads in ``output.deep_supervision`` order, then the main
    head; ``None`` gives every head weight 1 (a plain sum).
    """
    heads = (*output.deep_supervision, output.logits)
    if not output.deep_supervision:
        return head_loss(output.logits)
    if weights is None:
        weights = [1.0] * len(heads)
    if len(weights) != len(heads):
        raise ValueError(
            f"{len(weights)} head weights for {len(heads)} heads "
            f"({len(output.deep_supervision)} deep-supervision + main)"
        )
    return sum((w * head_loss(h) for w, h in zip(weights, heads)), torch.zeros((), device=output.logits.device))


class SegmentationLoss(nn.Module):
    """Base class: ``forward(output, target) -> scalar``; subclasses implement :meth:`compute`."""

    def forward(self, output: SegmentationOutput, target: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not isinstance(output, SegmentationOutput):
            raise TypeError(f"{type(self).__name__} expects a SegmentationOutput, got {type(output).__name__}")
        return self.compute(output, _check_target(output.logits, target))

    def compute(self, output: SegmentationOutput, target: torch.Tensor) -> torch.Tensor:
        """``target`` is (B, 1, *spatial) long, already checked against ``output.logits``."""
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------- generic
class DiceCE(SegmentationLoss):
    """Plain soft Dice (foreground classes) + cross entropy on the main head; a baseline, not a paper loss."""

    def __init__(self, lambda_dice: float = 1.0, lambda_ce: float = 1.0, smooth: float = 1e-5) -> None:
        super().__init__()
        self.loss = DiceCELoss(
            include_background=False, to_onehot_y=True, softmax=True, smooth_nr=smooth, smooth_dr=smooth,
            lambda_dice=lambda_dice, lambda_ce=lambda_ce,
        )

    def compute(self, output: SegmentationOutput, target: torch.Tensor) -> torch.Tensor:
        return self.loss(output.logits, target)


# ----------------------------------------------------------------------------------------------- SIP-Net
class SIPNetLoss(SegmentationLoss):
    """SIP-Net (Sec. 3.1, deep supervision of the three attention-focused modules): weighted sum of
    binary cross entropy over the three side outputs and the main output.

    The paper adds one supervision layer after each deconvolution but gives no weights; the weights
    are the authors' code's ``loss_weights=[0.1, 0.15, 0.25, 0.5]`` (side heads coarsest first, the
    order of ``deep_supervision``, then main). BCE on P(foreground) becomes softmax cross entropy
    (identical for two classes). The code's Dice is only a metric and is not part of the loss.
    """

    def __init__(self, weights: Sequence[float] = (0.1, 0.15, 0.25, 0.5)) -> None:
        super().__init__()
        self.weights = tuple(float(w) for w in weights)

    def compute(self, output: SegmentationOutput, target: torch.Tensor) -> torch.Tensor:
        labels = target[:, 0]
        return _weighted_heads(output, self.weights, lambda h: F.cross_entropy(h, labels))


# ----------------------------------------------------------------------------------------------- ConResNet
def context_residual_target(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Ground-truth context residual Y_res (ConResNet Eq. 1): |Y[s+1] - Y[s]| along the slice axis.

    ``labels`` (B, S, H, W) class indices (S = first spatial axis = the paper's slice axis) ->
    (B, num_classes - 1, S, H, W) float in {0, 1}, one channel per foreground class: 1 where class k
    is present on exactly one of slices s-1 and s. Slice 0 has no predecessor and is 0 (the paper pads
    the first slice of its residuals, Eq. 4; the authors' code keeps label[0] there, which would ask
    for the whole first-slice mask as "residual"). Same definition as
    ``MedSegAttentionLib.models.conresnet.context_residual_target``.
    """
    if labels.ndim < 3:
        raise ValueError(f"labels must be (B, S, ...) with a slice axis; got shape {tuple(labels.shape)}")
    one_hot = F.one_hot(labels.long(), num_classes).movedim(-1, 1)[:, 1:].float()
    residual = torch.zeros_like(one_hot)
    residual[:, :, 1:] = (one_hot[:, :, 1:] - one_hot[:, :, :-1]).abs()
    return residual


def residual_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Foreground-weighted BCE of one context-residual head (ConResNet Eq. 8).

    Per channel k the positive (residual) voxels get weight w_k = log(V / V_k) (V voxels in the batch,
    V_k of them residual; V_k is taken as at least 1, and w_k at least 1, the background weight, so an
    (unrealistic) residual covering over 1/e of the volume is never down-weighted); background voxels
    get weight 1. BCE-with-logits: the code's version skips the sigmoid, a bug not copied. Mean over
    voxels and channels.
    """
    if logits.shape != target.shape:
        raise ValueError(f"context-residual logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
    dims = [0] + list(range(2, target.ndim))
    voxels = target[:, :1].numel()
    positives = target.sum(dim=dims).clamp(min=1.0)
    pos_weight = torch.log(voxels / positives).clamp(min=1.0).detach()
    pos_weight = pos_weight.view(-1, *([1] * (target.ndim - 2)))
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)


class ConResNetLoss(SegmentationLoss):
    """ConResNet joint loss L = L_seg + L_res (Sec. III-D).

    * L_seg (Eq. 7) = cross entropy + (1 - Dice), Dice = 2 sum P Y / (sum P + sum Y + eps), eps = 1
      (as the code; the paper's "- Dice" is shifted by the constant 1 so the minimum is 0), per sample
      and foreground class, averaged.
    * L_res (Eq. 8-9) = L_res^0 + lambda (L_res^1 + L_res^2), lambda = 0.5, each term the
      foreground-weighted :func:`residual_bce` of one residual head against
      :func:`context_residual_target`. Heads: ``aux["context_residual"]`` (weight 1) and every other
      ``aux["context_residual_*"]`` (deep supervision, weight lambda). The network brings all heads to
      the input resolution, so all share the full-resolution target. Without aux (eval) L = L_seg.
    """

    main_key = "context_residual"

    def __init__(self, ds_weight: float = 0.5, dice_smooth: float = 1.0, residual_weight: float = 1.0) -> None:
        super().__init__()
        self.ds_weight = float(ds_weight)
        self.residual_weight = float(residual_weight)
        self.seg = DiceCELoss(
            include_background=False, to_onehot_y=True, softmax=True, smooth_nr=0.0, smooth_dr=dice_smooth
        )

    def compute(self, output: SegmentationOutput, target: torch.Tensor) -> torch.Tensor:
        loss = self.seg(output.logits, target)
        heads = {k: v for k, v in output.aux.items() if k == self.main_key or k.startswith(self.main_key + "_")}
        if not heads:
            return loss
        num_classes = output.logits.shape[1]
        res_target = context_residual_target(target[:, 0], num_classes).to(output.logits.dtype)
        residual = torch.zeros((), device=loss.device)
        for key, logits in heads.items():
            if logits.shape[1] != num_classes - 1:
                raise ValueError(
                    f"aux[{key!r}] has {logits.shape[1]} channels; expected num_classes - 1 = {num_classes - 1}"
                )
            weight = 1.0 if key == self.main_key else self.ds_weight
            residual = residual + weight * residual_bce(logits, res_target)
        return loss + self.residual_weight * residual


# ----------------------------------------------------------------------------------------------- ANU-Net
class ANUNetLoss(SegmentationLoss):
    """ANU-Net hybrid loss (Sec. 3.4, Eq. 8): sum over the four nested heads X(0,1..4) of
    focal-BCE + (1 - soft Dice).

    * Dice part as Eq. 8: (2 sum Y_i Ybar + s) / (sum Y_i^2 + sum Ybar^2 + s) (squared denominator),
      per sample and foreground class, averaged; s = ``smooth``.
    * Focal/BCE part: the RetinaNet focal loss the paper cites (its Eq. 7 and text: alpha balances
      positive/negative voxels, alpha smaller for label 1; gamma = 2 down-weights easy voxels), i.e.
      the binary cross entropy modulated by -alpha_t (1 - p_t)^gamma; mean over voxels. Deliberate
      deviation: Eq. 8 as printed divides alpha Ybar log Y_i by |Y_i - 0.5|^gamma, which is infinite at
      Y_i = 0.5, weights confident voxels by 4 rather than ~0 and has no background term, so it cannot
      be what was trained; (1 - p_t)^gamma has the behaviour the text describes. gamma = 0 gives
      alpha-balanced BCE.
    * Heads are summed (Eq. 8: sum_{i=1}^4); ``head_weights`` overrides this (the authors' scripts
      use the mean, i.e. 0.25 each). Eval mode: the main head alone.
    """

    def __init__(
        self, alpha: float = 0.25, gamma: float = 2.0, smooth: float = 1e-5, head_weights: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        self.head_weights = None if head_weights is None else tuple(float(w) for w in head_weights)
        self.dice = _foreground_dice(squared=True, smooth_nr=smooth, smooth_dr=smooth, batch=False)
        # softmax focal, per voxel and class: (1 - alpha) on background, alpha on foreground classes
        self.focal = FocalLoss(
            include_background=True, to_onehot_y=True, use_softmax=True, gamma=gamma, alpha=alpha, reduction="none"
        )

    def focal_term(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean over voxels of -alpha_t (1 - p_t)^gamma log p_t (only the true class's channel is non-zero)."""
        return self.focal(logits, target).sum(dim=1).mean()

    def compute(self, output: SegmentationOutput, target: torch.Tensor) -> torch.Tensor:
        return _weighted_heads(output, self.head_weights, lambda h: self.focal_term(h, target) + self.dice(h, target))


# ----------------------------------------------------------------------------------------------- RA-UNet
class RAUNetLoss(SegmentationLoss):
    """RA-UNet Dice loss (Sec. III-D-4, Eq. 3): L = 1 - 2 sum s g / (sum s^2 + sum g^2).

    s = softmax foreground probability, g = one-hot label, foreground classes averaged. The squared
    denominator is the paper's; the smoothing ``smooth`` = 1 in numerator and denominator and the
    sums over the whole batch (``batch=True``) follow the authors' code (the paper has no smoothing,
    undefined for an empty patch with an empty prediction). Used for the liver (RA-UNet-I/II) and
    tumour models alike; RA-UNet has no deep supervision.
    """

    def __init__(self, smooth: float = 1.0, squared: bool = True, batch: bool = True) -> None:
        super().__init__()
        self.dice = _foreground_dice(squared=squared, smooth_nr=smooth, smooth_dr=smooth, batch=batch)

    def compute(self, output: SegmentationOutput, target: torch.Tensor) -> torch.Tensor:
        return self.dice(output.logits, target)


# ----------------------------------------------------------------------------------------------- RSTN
class RSTNLoss(SegmentationLoss):
    """RSTN joint coarse/fine loss (Sec. "Formulation", Eq. 2):
    L = lambda * L{Y, Z^C} + (1 - lambda) * L{Y, Z^F}, lambda = 1/3.

    L{Y, Z} = 1 - (2 sum Y Z + eps) / (sum Y + sum Z + eps), the paper's soft DSC loss (not squared),
    with eps = 1e-6 and sums over the whole batch as in the authors' Caffe DiceLoss layer; Z = softmax
    foreground probability, foreground classes averaged. Z^F is ``output.logits`` (the fine stage,
    on the full grid); Z^C is ``output.aux["coarse"]`` if present, else the single
    ``deep_supervision`` entry. Eval mode (no coarse output): L{Y, Z^F} alone.
    """

    def __init__(self, coarse_weight: float = 1.0 / 3.0, eps: float = 1e-6, batch: bool = True) -> None:
        super().__init__()
        if not 0.0 <= coarse_weight <= 1.0:
            raise ValueError(f"coarse_weight (lambda) must be in [0, 1], got {coarse_weight}")
        self.coarse_weight = float(coarse_weight)
        self.dice = _foreground_dice(squared=False, smooth_nr=eps, smooth_dr=eps, batch=batch)

    @staticmethod
    def coarse_logits(output: SegmentationOutput) -> torch.Tensor | None:
        if "coarse" in output.aux:
            return output.aux["coarse"]
        if len(output.deep_supervision) == 1:
            return output.deep_supervision[0]
        if output.deep_supervision:
            raise ValueError(
                f"RSTN loss expects one coarse output (aux['coarse'] or one deep_supervision entry); "
                f"got {len(output.deep_supervision)} deep_supervision entries"
            )
        return None

    def forward(self, output: SegmentationOutput, target: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``target`` (B, H, W) for the centre slice, or (B, S, H, W) for every slice the network
        predicts (its ``aux["slices"]`` / ``aux["coarse_slices"]``, the paper's three-slice output)."""
        if isinstance(output, SegmentationOutput) and target.ndim == output.logits.ndim and "slices" in output.aux:
            slices = target.shape[1]

            def per_slice(logits: torch.Tensor) -> torch.Tensor:
                if logits.shape[1] % slices:
                    raise ValueError(f"RSTN slice logits {tuple(logits.shape)} do not hold {slices} slices")
                return logits.reshape(logits.shape[0] * slices, logits.shape[1] // slices, *logits.shape[2:])

            coarse = output.aux.get("coarse_slices")
            output = SegmentationOutput(logits=per_slice(output.aux["slices"]),
                                        deep_supervision=() if coarse is None else (per_slice(coarse),))
            target = target.reshape(-1, *target.shape[2:])
        return super().forward(output, target)

    def compute(self, output: SegmentationOutput, target: torch.Tensor) -> torch.Tensor:
        fine = self.dice(output.logits, target)
        coarse = self.coarse_logits(output)
        if coarse is None:
            return fine
        return self.coarse_weight * self.dice(coarse, target) + (1.0 - self.coarse_weight) * fine


# ----------------------------------------------------------------------------------------------- registry
LOSSES: dict[str, type[SegmentationLoss]] = {
    "sipnet": SIPNetLoss,
    "conresnet": ConResNetLoss,
    "anunet": ANUNetLoss,
    "raunet": RAUNetLoss,
    "raunet_2d": RAUNetLoss,
    "raunet_3d": RAUNetLoss,
    "rstn": RSTNLoss,
    "dice_ce": DiceCE,
}


def loss_names() -> list[str]:
    """Names accepted by :func:`build_loss` (the network registry names, plus ``raunet`` and ``dice_ce``)."""
    return sorted(LOSSES)


def build_loss(name: str, **params: Any) -> SegmentationLoss:
    """The loss registered under ``name`` (usually the network's name) with keyword ``params``."""
    try:
        cls = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(loss_names())}") from None
    try:
        return cls(**params)
    except TypeError as err:
        raise ValueError(f"loss {name!r}: bad parameters {sorted(params)} ({err})") from None
