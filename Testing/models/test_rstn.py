"""RSTN (Yu et al., CVPR 2018): contract, crop/uncrop, saliency transformation, crop_mask and refine."""

from __future__ import annotations

import pytest
import torch

from MedSegAttentionLib.models import build_network, count_parameters
from MedSegAttentionLib.models.rstn import (
    OUTSIDE_LOGIT,
    RSTN,
    CropBox,
    SaliencyTransform,
    crop,
    grow_box,
    mask_bounding_box,
    uncrop,
)
from MedSegAttentionLib.models.rstn_backbones import FCN8s, LightUNet
from network_checks import (
    check_eval_deterministic,
    check_every_parameter_gets_gradient,
    check_learns,
    check_output_contract,
)

SMALL = {"name": "rstn", "base_channels": 4, "margin": 3}
TINY_FCN = {"name": "rstn", "backbone": "fcn8s", "base_channels": 2, "fc_channels": 8, "margin": 3}


def small(**overrides: object) -> RSTN:
    return build_network({**SMALL, **overrides})  # type: ignore[return-value]


# ---------------------------------------------------------------------- contract and shared checks
@pytest.mark.parametrize("spatial", [(32, 48), (37, 45)])
def test_output_contract_unet_light(spatial: tuple[int, int]) -> None:
    check_output_contract(small(), spatial, batch=2)


def test_output_contract_fcn8s_tiny() -> None:
    check_output_contract(build_network(TINY_FCN), (40, 33))


def test_three_classes() -> None:
    check_output_contract(small(num_classes=3, in_channels=1), (33, 32))


def test_every_parameter_gets_gradient() -> None:
    check_every_parameter_gets_gradient(small(), (40, 40))
    # threshold 0 crops the whole frame, so the untrained coarse stage cannot skip the fine one
    check_every_parameter_gets_gradient(build_network({**TINY_FCN, "threshold": 0.0}), (64, 64))


def test_eval_deterministic() -> None:
    check_eval_deterministic(small(), (36, 40))


def test_learns_tiny_batch() -> None:
    check_learns(lambda: small(base_channels=8), (40, 40), steps=25, lr=1e-2)


# ---------------------------------------------------------------------- parameter counts (build only)
def test_fcn8s_parameter_count_matches_caffe_model() -> None:
    with torch.device("meta"):
        three_class = FCN8s(in_channels=3, num_classes=3)
        full = RSTN(backbone="fcn8s")
    # the authors' Caffe FCN-8s with 3 outputs: 134,277,737 incl. 2,592 frozen bilinear deconv weights
    assert count_parameters(three_class, trainable_only=False) == 134_277_737
    assert count_parameters(three_class) == 134_277_737 - 2_592
    per_stage = count_parameters(full.coarse, trainable_only=False)
    # 6 score channels (2 classes for each of the 3 slices) instead of 3 sigmoids: each channel adds 4,867
    # score weights (4096 + 512 + 256 + 3 biases); the frozen bilinear deconvolutions hold 288 c^2
    assert per_stage == 134_277_737 + 3 * 4_867 + 288 * (6**2 - 3**2)
    assert count_parameters(full, trainable_only=False) == 2 * per_stage + 312  # saliency 3 -> 3 -> 3 (Eq. 1)


def test_unet_light_default_parameter_count() -> None:
    with torch.device("meta"):
        net = RSTN()
        centre_only = RSTN(output_slices=1)
    assert count_parameters(centre_only) == 2 * 1_979_042 + 258  # one 2-class slice; saliency 1 -> 3 -> 3
    assert count_parameters(net) == 2 * (1_979_042 + 4 * 33) + 312  # 1x1 head of 32 channels to 6, not 2


# ---------------------------------------------------------------------- crop / uncrop
def test_bounding_box_with_margin_and_border() -> None:
    mask = torch.zeros(3, 20, 30)
    mask[1, 5:8, 10:15] = 1
    assert mask_bounding_box(mask, margin=2) == CropBox(3, 10, 8, 17)
    assert mask_bounding_box(mask, margin=(1, 0, 3, 4)) == CropBox(4, 8, 7, 19)
    border = torch.zeros(20, 30)
    border[0:4, 27:30] = 0.7  # probability touching the top-right corner: clipped to the frame
    assert mask_bounding_box(border, margin=5) == CropBox(0, 9, 22, 30)
    assert mask_bounding_box(border, margin=5, threshold=0.8) is None
    assert mask_bounding_box(torch.zeros(20, 30)) is None  # empty: the fine stage is skipped


def test_grow_box_keeps_the_frame() -> None:
    assert grow_box(CropBox(10, 14, 0, 3), 8, (40, 40)) == CropBox(8, 16, 0, 8)
    assert grow_box(CropBox(30, 40, 46, 50), 16, (40, 50)) == CropBox(24, 40, 34, 50)
    assert grow_box(CropBox(0, 5, 0, 5), 64, (20, 30)) == CropBox(0, 20, 0, 30)  # frame smaller
    assert grow_box(CropBox(2, 30, 3, 40), 8, (40, 50)) == CropBox(2, 30, 3, 40)  # already large


def test_crop_uncrop_round_trip() -> None:
    x = torch.randn(2, 3, 20, 30, requires_grad=True)
    fill = torch.tensor([0.0, -5.0, -7.0]).view(1, 3, 1, 1)
    for box in (CropBox(3, 10, 8, 17), CropBox(0, 20, 22, 30), CropBox(0, 20, 0, 30)):
        pasted = uncrop(crop(x, box), box, (20, 30), fill)
        assert pasted.shape == x.shape
        torch.testing.assert_close(crop(pasted, box), crop(x, box))
        outside = torch.ones(20, 30, dtype=torch.bool)
        outside[box.top : box.bottom, box.left : box.right] = False
        torch.testing.assert_close(pasted[:, :, outside], fill.view(1, 3, 1).expand(2, 3, int(outside.sum())))
    pasted.sum().backward()
    assert x.grad is not None and torch.all(x.grad == 1)


def test_saliency_transformation_keeps_spatial_size() -> None:
    module = SaliencyTransform(1, 3, 3)
    for spatial in ((17, 23), (32, 32)):
        weights = module(torch.rand(2, 1, *spatial))
        assert weights.shape == (2, 3, *spatial)
    # near-identity start: the weighted image is close to the image
    torch.testing.assert_close(module(torch.rand(1, 1, 16, 16)), torch.ones(1, 3, 16, 16), atol=0.1, rtol=0)


# ---------------------------------------------------------------------- crop_mask and refine
def test_crop_mask_path_crops_the_fine_stage() -> None:
    net = small().eval()
    x = torch.randn(2, 3, 45, 50)
    mask = torch.zeros(2, 45, 50)
    mask[0, 20:24, 30:50] = 1
    with torch.no_grad():
        out = net(x, crop_mask=mask, return_maps=True)
        same = net(x, crop_mask=mask[:, None] > 0.5)  # (B, 1, H, W) bool works too
    torch.testing.assert_close(out.logits, same.logits)
    region = out.maps["crop_region"][:, 0]
    padded = torch.nn.functional.pad(mask[0], (0, 14, 0, 3))  # the frame is padded to (48, 64)
    box = grow_box(mask_bounding_box(padded, net.margin), net.min_crop, (48, 64))
    expected = torch.zeros(48, 64)
    expected[box.top : box.bottom, box.left : box.right] = 1
    torch.testing.assert_close(region[0], expected[:45, :50])
    assert region[1].sum() == 0  # empty mask: fine stage skipped, pure background
    assert torch.all(out.logits[1, 0] == 0) and torch.all(out.logits[1, 1] == OUTSIDE_LOGIT)
    assert torch.all(out.logits[0, 1][region[0] == 0] == OUTSIDE_LOGIT)
    # the crop really comes from the mask, not from the coarse prediction
    assert not torch.equal(net(x).logits, out.logits)
    with pytest.raises(ValueError, match="crop_mask must have shape"):
        net(x, crop_mask=torch.zeros(2, 40, 50))


def test_crop_mask_in_training_keeps_deep_supervision() -> None:
    net = small().train()
    x = torch.randn(1, 3, 40, 40)
    out = net(x, crop_mask=torch.ones(1, 40, 40))
    assert len(out.deep_supervision) == 1 and out.deep_supervision[0].shape == (1, 2, 40, 40)


def test_refine_round() -> None:
    net = small().eval()
    x = torch.randn(2, 3, 37, 41)
    probability = torch.zeros(2, 3, 37, 41)  # the previous round's probability of the three input slices
    probability[0, :, 10:20, 12:25] = 0.9
    with torch.no_grad():
        out = net.refine(x, probability, return_maps=True)
    assert out.logits.shape == (2, 2, 37, 41) and out.deep_supervision == ()
    torch.testing.assert_close(out.maps["coarse_probability"][:, 0], probability[:, 1])  # the centre slice
    assert out.maps["crop_region"][0].sum() > 0 and out.maps["crop_region"][1].sum() == 0
    assert torch.softmax(out.logits[1], 0)[1].max() < 1e-6  # empty previous mask: background
    assert net.train().refine(x, probability).deep_supervision == ()
    with pytest.raises(ValueError, match="probability must have shape"):
        net.refine(x, probability[:, :1])  # one slice where the network predicts three
    centre_only = small(output_slices=1).eval()
    with torch.no_grad():
        torch.testing.assert_close(centre_only.refine(x, probability[:, 1]).logits,
                                   centre_only.refine(x, probability[:, 1:2]).logits)


def test_saliency_map_is_the_raw_weights_and_all_slices_gives_every_slices_logits() -> None:
    """The ``saliency`` map is Eq. 1's weights as the module multiplies them into the image (not rescaled);
    ``all_slices`` returns every predicted slice's logits, the centre slice equal to the default output."""
    net = small().eval()
    x = torch.randn(2, 3, 32, 48)  # a multiple of the backbone's size rule: no padding around the weights
    assert not any(net.padding_for(x.shape[2:]))
    probability = torch.zeros(2, 3, 32, 48)
    probability[:, :, 10:20, 12:25] = 0.9
    with torch.no_grad():
        out = net.refine(x, probability, return_maps=True)
        every = net.refine(x, probability, all_slices=True)
        coarse_every = net.coarse_pass(x, all_slices=True)
        weights = net.saliency(probability)
    torch.testing.assert_close(out.maps["saliency"], weights)
    assert every.logits.shape == coarse_every.logits.shape == (2, 6, 32, 48)
    torch.testing.assert_close(every.logits[:, 2:4], out.logits)
    torch.testing.assert_close(coarse_every.logits[:, 2:4], net.coarse_pass(x).logits)


def test_saliency_sees_the_neighbouring_slices_probability() -> None:
    """Eq. 1 on the three-slice probability map: a neighbour's probability changes the weights, the
    crop box is the slices' union."""
    net = small().eval()
    x = torch.randn(1, 3, 96, 96)
    probability = torch.zeros(1, 3, 96, 96)
    probability[0, 1, 15:25, 15:25] = 0.9
    neighbour = probability.clone()
    neighbour[0, 0, 70:80, 70:80] = 0.9  # only slice j-1 differs
    with torch.no_grad():
        a = net.refine(x, probability, return_maps=True)
        b = net.refine(x, neighbour, return_maps=True)
    assert not torch.allclose(a.maps["saliency"], b.maps["saliency"])
    assert b.maps["crop_region"][0, 0, 75, 75] == 1 and a.maps["crop_region"][0, 0, 75, 75] == 0


def test_training_output_predicts_every_input_slice() -> None:
    net = small().train()
    out = net(torch.randn(2, 3, 40, 40), crop_mask=torch.ones(2, 40, 40))
    assert out.aux["slices"].shape == out.aux["coarse_slices"].shape == (2, 6, 40, 40)
    torch.testing.assert_close(out.logits, out.aux["slices"][:, 2:4])  # the centre slice's two classes
    torch.testing.assert_close(out.deep_supervision[0], out.aux["coarse_slices"][:, 2:4])
    with pytest.raises(ValueError, match="output_slices must be 1 or"):
        small(output_slices=2)


def test_unknown_backbone_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown RSTN backbone 'vgg'"):
        small(backbone="vgg")


def test_light_unet_instance_norm_as_group_norm_is_the_same_network() -> None:
    """The light U-Net computes its instance norms with a per-channel group norm (faster on the CPU):
    no InstanceNorm is left, a MONAI BasicUNet with instance norms loads the same state dict strictly
    and gives the same logits on batches of several slices, with per-sample statistics."""
    from monai.networks.nets import BasicUNet

    torch.manual_seed(0)
    net = LightUNet(in_channels=3, num_classes=2, base_channels=8).eval()
    assert not any(isinstance(m, torch.nn.modules.instancenorm._InstanceNorm) for m in net.modules())
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in net.modules()) == 18
    reference = BasicUNet(spatial_dims=2, in_channels=3, out_channels=2, features=(8, 8, 16, 32, 64, 8)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-0.5, 0.5)
    reference.load_state_dict(net.state_dict(), strict=True)
    x = torch.randn(3, 3, 48, 64) * torch.tensor([1.0, 5.0, 0.2]).view(3, 1, 1, 1)
    with torch.no_grad():
        assert torch.allclose(net(x), reference(x), atol=1e-5)
        assert torch.allclose(net(x[1:2]), reference(x)[1:2], atol=1e-5)  # each slice normalised on its own
