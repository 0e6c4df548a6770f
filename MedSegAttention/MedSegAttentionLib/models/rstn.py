"""RSTN: recurrent saliency transformation network (Yu et al., CVPR 2018), 2D coarse-to-fine.

Yu, Xie, Wang, Zhou, Fishman, Yuille, "Recurrent saliency transformation network: incorporating
multi-stage visual cues for small organ segmentation", CVPR 2018, arXiv:1709.04518; the authors'
code (github.com/198808xc/OrganSegRSTN) was read for details the paper leaves open. One network per view; the three-view fusion and the test-time iteration
until the inter-round Dice reaches 0.95 belong to the inference engine, which drives :meth:`RSTN.refine`.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import SegmentationNetwork, SegmentationOutput
from .rstn_backbones import build_backbone

#: fine logits outside the crop box: background 0, every foreground class this value, so the
#: foreground probability there is ~2e-9 (the Caffe code fills -9,999,999 before its sigmoid; a finite
#: value keeps the loss of foreground pixels outside the box bounded).
OUTSIDE_LOGIT = -20.0


class CropBox(NamedTuple):
    """Half-open pixel box ``[top, bottom) x [left, right)`` of a 2D frame."""

    top: int
    bottom: int
    left: int
    right: int

    @property
    def size(self) -> tuple[int, int]:
        return self.bottom - self.top, self.right - self.left


def mask_bounding_box(
    mask: torch.Tensor, margin: int | Sequence[int] = 20, threshold: float = 0.5
) -> CropBox | None:
    """Crop box of a mask (paper, eq. 1 and "Formulation"): binarise at ``mask >= threshold`` (any
    leading channels are merged), take the minimal rectangle covering the foreground, add a margin
    (one int, or (top, bottom, left, right)) and clip to the frame. An empty mask gives ``None``: the
    paper does not run the fine stage on such a slice ("Training and Testing")."""
    foreground = mask.detach() >= threshold
    foreground = foreground.reshape(-1, *foreground.shape[-2:]).any(0)
    rows = torch.nonzero(foreground.any(1)).flatten()
    if rows.numel() == 0:
        return None
    cols = torch.nonzero(foreground.any(0)).flatten()
    top, bottom, left, right = (margin,) * 4 if isinstance(margin, int) else tuple(int(m) for m in margin)
    height, width = foreground.shape
    return CropBox(
        max(0, int(rows[0]) - top), min(height, int(rows[-1]) + 1 + bottom),
        max(0, int(cols[0]) - left), min(width, int(cols[-1]) + 1 + right),
    )


def grow_box(box: CropBox, min_size: int, frame: tuple[int, int]) -> CropBox:
    """Enlarge each side of ``box`` around its centre to at least ``min_size`` (as far as the frame
    allows), so that the fine backbone never sees a crop too small for its down-sampling."""
    bounds = []
    for low, high, extent in ((box.top, box.bottom, frame[0]), (box.left, box.right, frame[1])):
        want = min(max(high - low, min_size), extent)
        low = min(max(0, low - (want - (high - low)) // 2), extent - want)
        bounds += [low, low + want]
    return CropBox(*bounds)


def crop(tensor: torch.Tensor, box: CropBox) -> torch.Tensor:
    """The ``box`` region of the last two axes."""
    return tensor[..., box.top : box.bottom, box.left : box.right]


def uncrop(tensor: torch.Tensor, box: CropBox, frame: tuple[int, int], fill: torch.Tensor | float) -> torch.Tensor:
    """Paste a cropped (B, C, h, w) map back into a full (B, C, *frame) map filled with ``fill``
    (a number or a per-channel (1, C, 1, 1) tensor); differentiable with respect to ``tensor``."""
    pads = (box.left, frame[1] - box.right, box.top, frame[0] - box.bottom)
    return F.pad(tensor - fill, pads) + fill


def foreground_probability(logits: torch.Tensor, slices: int = 1) -> torch.Tensor:
    """(B, slices, H, W) probability of "any foreground class" = 1 - softmax background, per slice of
    logits that stack ``slices`` groups of class channels (B, slices * K, H, W)."""
    batch, channels = logits.shape[:2]
    grouped = logits.reshape(batch, slices, channels // slices, *logits.shape[2:])
    return torch.softmax(grouped, dim=2)[:, :, 1:].sum(2)


class SaliencyTransform(nn.Module):
    """g(Z; theta_T) of eq. (1): size-preserving convolutions on the coarse probability map whose
    output weights the image element-wise. Two stacked layers, 3x3 + ReLU then 5x5 (linear): the
    best setting of the paper's Table 1 ("5x5 kernels, two stacked layers") and the authors' v2.0 code.

    Initialisation: first conv Xavier-normal, bias 1 (PyTorch port); second conv bias 1 and tiny
    random weights, so training starts from g ~ 1 (plain crop-and-segment, like the authors' "scratch"
    model's zero weights) while every parameter receives a gradient from the first step.
    """

    def __init__(self, in_channels: int = 1, hidden_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_channels, out_channels, 5, padding=2)
        if not self.conv1.weight.is_meta:
            nn.init.xavier_normal_(self.conv1.weight)
            nn.init.normal_(self.conv2.weight, std=1e-3)
            nn.init.ones_(self.conv1.bias)
            nn.init.ones_(self.conv2.bias)

    def forward(self, probability: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(probability)))


class RSTN(SegmentationNetwork):
    """Recurrent saliency transformation network for one view (Yu et al., CVPR 2018).

    Input: three neighbouring slices [j-1, j, j+1] as channels (``in_channels=3``), CT scaled to
    [0, 1]. The coarse network segments the whole frame; the saliency transformation turns the coarse
    foreground probability into per-channel weights multiplied into the image; the weighted image is
    cropped to the bounding box (plus ``margin``) of a mask, segmented by the fine network and pasted
    back (:func:`uncrop`). ``logits`` are the uncropped fine logits; in training mode
    ``deep_supervision = (coarse_logits,)``: the paper's joint loss (eq. 2, lambda = 1/3) weights the
    coarse term 1/3 and the fine term 2/3, which the training loop applies.

    Input size: any slice size. It is replicate-padded at the high end to a multiple of the backbone's
    down-sampling (``size_divisor``: light U-Net 16, FCN-8s 32) and to at least two such multiples
    (the light U-Net's instance norm needs a bottleneck wider than one pixel); outputs are cropped back.

    Crop source: ``forward(x, crop_mask=...)`` (training: the ground truth, later the coarse prediction
    with the ground truth as fall-back when it is empty, as the authors' stages I/J do; the mask is
    zero-padded like the input); otherwise the coarse prediction thresholded at ``threshold``. The
    fine stage runs once per forward, as in training in the paper; :meth:`refine` is one round of the
    test-time iteration. ``margin=20`` is the authors' test margin (the paper's K).

    Deliberate choices (paper vs. authors' code):

    * Output: as the paper, both stages predict every input slice (``output_slices``, default
      ``in_channels``: three), each with ``num_classes`` softmax channels (background = 0; for two
      classes softmax([0, z]) = sigmoid(z), the paper's per-slice sigmoid); the joint loss covers all
      of them (``aux["slices"]``, ``aux["coarse_slices"]`` in training). ``logits`` is the centre
      slice, the engine's one-slice contract; at test time :meth:`refine` and :meth:`coarse_pass` with
      ``all_slices=True`` give every predicted slice, so that each slice's probability can be the
      mean of the up to three windows covering it, as the paper tests
      (:func:`..inference.sliding_window.slicewise_inference`, ``slice_average``).
    * Saliency input (Eq. 1): the foreground probability 1 - p(background) of every predicted slice
      (paper: the three-slice probability map), mapped to ``saliency_channels`` hidden and
      ``in_channels`` output weights (paper 3 -> 3 -> 3). The crop box is that of the slices' union.
      The ``saliency`` map is these weights as the module applies them (unbounded, as in the paper;
      the card shows them over their own range, ``range: "data"``).
    * Gradients flow from the fine loss through the saliency module into the coarse network (joint
      optimisation, paper "Formulation"); the crop box itself is not differentiable.
    * Empty crop mask (paper, "Training and Testing"): the fine stage is not run on that sample and its
      logits are pure background. Crops smaller than twice the backbone's down-sampling are grown around
      their centre (:func:`grow_box`) and padded at the high end to that multiple; no resampling.
    * ``margin_jitter`` (authors' code, not in the paper): in training, with probability 0.5 each
      side's margin is drawn from 0..2*margin (code: 0..40 around the fixed 20).
    * ``backbone="unet_light"`` (default, MONAI BasicUNet) instead of the paper's FCN-8s on VGG-16
      (``"fcn8s"``): FCN-8s relies on ImageNet/VOC-pretrained VGG weights that cannot be fetched at run
      time; from scratch the light U-Net trains far more reliably. FCN-8s is built as in the paper
      (134.3 M parameters per stage, see :mod:`.rstn_backbones`).
    """

    name = "rstn"
    spatial_dims = 2
    map_names = ("saliency", "coarse_probability", "crop_region")
    raw_maps = ("saliency",)  # Eq. 1's weights as applied

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        backbone: str = "unet_light",
        base_channels: int | None = None,
        fc_channels: int = 4096,
        saliency_channels: int = 3,
        margin: int = 20,
        threshold: float = 0.5,
        margin_jitter: bool = True,
        output_slices: int | None = None,
    ) -> None:
        """``base_channels=None``: the backbone's standard width (VGG-16 64, light U-Net 32);
        ``fc_channels``: FCN-8s fc6/fc7 width (4096), unused by the U-Net; ``output_slices``: slices
        each stage predicts, the input's (``None``, the paper) or 1 (the centre slice only)."""
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"RSTN needs num_classes >= 2 (background included); got {num_classes}")
        slices = in_channels if output_slices is None else int(output_slices)
        if slices not in (1, in_channels) or slices % 2 == 0:
            raise ValueError(f"RSTN output_slices must be 1 or the (odd) number of input slices {in_channels}; got {slices}")
        self.in_channels, self.num_classes, self.output_slices = in_channels, num_classes, slices
        self.margin, self.threshold, self.margin_jitter = int(margin), float(threshold), bool(margin_jitter)
        self.coarse = build_backbone(backbone, in_channels, num_classes * slices, base_channels, fc_channels)
        self.fine = build_backbone(backbone, in_channels, num_classes * slices, base_channels, fc_channels)
        self.saliency = SaliencyTransform(slices, saliency_channels, in_channels)
        self.size_divisor = self.fine.divisor
        self.min_divisor_multiple = 2  # the light U-Net's instance norm needs a bottleneck wider than 1
        self.min_crop = 2 * self.fine.divisor
        self._side_input: tuple[str, torch.Tensor] | None = None
        self._all_slices = False  # set for one test-time call: logits of every predicted slice

    # ------------------------------------------------------------------ public API
    def training_inputs(self, x: torch.Tensor, labels: torch.Tensor, from_prediction: bool) -> dict[str, torch.Tensor]:
        """Where the fine stage is cropped in training (Yu et al., "Training and Testing").

        The ground-truth foreground first; with ``from_prediction`` (the fine-tuning on coarse-scaled
        crops, "Experiments") the coarse network's own prediction (foreground probability >= the
        network's threshold), with the ground truth where that prediction is empty (authors' stage J).
        ``labels`` (B, H, W), or (B, S, H, W) for every predicted slice: the union of the slices.
        """
        truth = ((labels > 0).any(1) if labels.ndim == 4 else labels > 0).to(x.dtype)
        if not from_prediction:
            return {"crop_mask": truth}
        with torch.no_grad():
            height, width = x.shape[-2:]
            coarse = self.coarse(self.pad_to_divisor(x))[..., :height, :width]
            union = foreground_probability(coarse.float(), self.output_slices).amax(1)
            predicted = (union >= self.threshold).to(x.dtype)
            empty = predicted.flatten(1).sum(1) == 0
            return {"crop_mask": torch.where(empty[:, None, None], truth, predicted)}

    def forward(
        self, x: torch.Tensor, return_maps: bool = False, crop_mask: torch.Tensor | None = None
    ) -> SegmentationOutput:
        """Coarse stage, saliency transformation, fine stage on the crop, uncrop.

        ``crop_mask`` (B, H, W) or (B, 1, H, W), binary or a probability (``>= threshold`` is
        foreground): where to crop the fine stage; ``None`` crops from the coarse prediction.
        """
        if crop_mask is None:
            return super().forward(x, return_maps)
        return self._with_side_input(x, return_maps, "crop_mask", crop_mask)

    def refine(self, x: torch.Tensor, probability: torch.Tensor, return_maps: bool = False,
               all_slices: bool = False) -> SegmentationOutput:
        """One test-time round (paper, "Training and Testing"): saliency transformation of the previous
        round's (fused) foreground ``probability`` in [0, 1] of every input slice (B, S, H, W) (with one
        output slice also (B, H, W)), crop from its union ``>= threshold`` with ``margin``, fine network,
        uncrop. The coarse network is not run and ``deep_supervision`` is empty; a sample with an
        empty mask gets background logits. Maps: ``coarse_probability`` is the given ``probability``
        of the centre slice. ``all_slices``: ``logits`` (B, output_slices * K, H, W), slice by slice.
        Wrap in ``torch.no_grad()`` at test."""
        self._all_slices = bool(all_slices)
        try:
            return self._with_side_input(x, return_maps, "probability", probability)
        finally:
            self._all_slices = False

    def coarse_pass(self, x: torch.Tensor, return_maps: bool = False, all_slices: bool = False) -> SegmentationOutput:
        """The coarse network alone (paper, "Training and Testing": the test image "is first fed into
        the coarse-scaled segmentation networks"): its logits (``all_slices`` as :meth:`refine`); map
        ``coarse_probability``."""
        self.check_input(x)
        self._side_input, self._all_slices = ("coarse", None), bool(all_slices)
        try:
            return super().forward(x, return_maps)
        finally:
            self._side_input, self._all_slices = None, False

    def forward_padded(self, x: torch.Tensor, return_maps: bool) -> SegmentationOutput:
        kind, side = self._side_input if self._side_input is not None else ("", None)
        centre = self.output_slices // 2
        if kind == "coarse":
            logits = self.coarse(x)
            probability = foreground_probability(logits, self.output_slices)[:, centre : centre + 1]
            maps = {"coarse_probability": probability.clamp(0, 1)} if return_maps else {}
            return SegmentationOutput(logits=logits if self._all_slices else self._centre(logits), deep_supervision=(), maps=maps)
        coarse_logits: torch.Tensor | None = None
        if kind == "probability":
            probability = side.to(x.dtype)
        else:
            coarse_logits = self.coarse(x)
            probability = foreground_probability(coarse_logits, self.output_slices)
        crop_source = side if kind == "crop_mask" else probability.amax(1, keepdim=True)
        weights = self.saliency(probability)
        all_logits, region = self._fine_stage(x * weights, crop_source, with_region=return_maps)
        logits = all_logits if self._all_slices else self._centre(all_logits)
        probability = probability[:, centre : centre + 1]
        maps: dict[str, torch.Tensor] = {}
        if return_maps and region is not None:
            maps = {
                "saliency": weights,  # raw: the factors the image is multiplied by (Eq. 1), no fixed range
                "coarse_probability": probability.clamp(0, 1),
                "crop_region": region,
            }
        deep = (self._centre(coarse_logits),) if coarse_logits is not None else ()
        aux = {"slices": all_logits, "coarse_slices": coarse_logits} if coarse_logits is not None else {}
        return SegmentationOutput(logits=logits, deep_supervision=deep, maps=maps, aux=aux)

    def _centre(self, logits: torch.Tensor) -> torch.Tensor:
        """The centre slice's (B, K, H, W) logits of (B, output_slices * K, H, W)."""
        first = (self.output_slices // 2) * self.num_classes
        return logits[:, first : first + self.num_classes]

    # ------------------------------------------------------------------ stages
    def crop_box(self, mask: torch.Tensor) -> CropBox | None:
        """The fine stage's box for one sample's (…, H, W) mask: bounding box + margin (jittered in
        training when ``margin_jitter``), grown to the backbone's minimum size; ``None`` if empty."""
        margin: int | list[int] = self.margin
        if self.training and self.margin_jitter and float(torch.rand(())) < 0.5:
            margin = torch.randint(0, 2 * self.margin + 1, (4,)).tolist()
        box = mask_bounding_box(mask, margin, self.threshold)
        return None if box is None else grow_box(box, self.min_crop, tuple(mask.shape[-2:]))

    def _fine_stage(
        self, weighted: torch.Tensor, crop_source: torch.Tensor, with_region: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per sample: crop the weighted image, run the fine net, uncrop; with ``with_region`` also
        the 0/1 crop region (a map, so not built on the normal path)."""
        frame = (weighted.shape[2], weighted.shape[3])
        channels = self.num_classes * self.output_slices
        fill = torch.full((1, channels, 1, 1), OUTSIDE_LOGIT, dtype=weighted.dtype, device=weighted.device)
        fill[:, :: self.num_classes] = 0.0  # each slice's background
        logits = []
        region = None
        if with_region:
            region = torch.zeros(weighted.shape[0], 1, *frame, dtype=weighted.dtype, device=weighted.device)
        for b in range(weighted.shape[0]):
            box = self.crop_box(crop_source[b])
            if box is None:
                logits.append(fill.expand(1, -1, *frame))
                continue
            patch = crop(weighted[b : b + 1], box)
            height, width = box.size
            pads = (0, (-width) % self.fine.divisor, 0, (-height) % self.fine.divisor)
            out = self.fine(F.pad(patch, pads, mode="replicate") if any(pads) else patch)
            logits.append(uncrop(out[..., :height, :width], box, frame, fill))
            if region is not None:
                crop(region[b : b + 1], box).fill_(1.0)
        return torch.cat(logits), region

    # ------------------------------------------------------------------ helpers
    def _with_side_input(
        self, x: torch.Tensor, return_maps: bool, kind: str, side: torch.Tensor
    ) -> SegmentationOutput:
        """Check and zero-pad a per-pixel side input like ``x``, then run the base forward with it."""
        self.check_input(x)
        if not isinstance(side, torch.Tensor):
            raise TypeError(f"{kind} must be a torch.Tensor, got {type(side).__name__}")
        if side.ndim == 3:
            side = side[:, None]
        channels = self.output_slices if kind == "probability" else 1
        expected = (x.shape[0], channels, *x.shape[2:])
        if tuple(side.shape) != expected:
            raise ValueError(f"{kind} must have shape (B, H, W) or {expected}; got {tuple(side.shape)}")
        side = side.to(device=x.device, dtype=x.dtype)
        pads = self.padding_for(x.shape[2:])
        self._side_input = (kind, F.pad(side, pads) if any(pads) else side)
        try:
            return super().forward(x, return_maps)
        finally:
            self._side_input = None
