"""The paper pipelines: RA-UNet cascade, RSTN coarse-to-fine rounds, ANU-Net pruning level per run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedSegAttentionLib.inference.cascades import run_raunet_cascade
from MedSegAttentionLib.inference.engine import segment
from MedSegAttentionLib.inference.result_folder import write_result
from MedSegAttentionLib.errors import InputError
from MedSegAttentionLib.models import SegmentationNetwork, SegmentationOutput, build_network
from MedSegAttentionLib.inference.runcontext import RunContext
from model_cards import LIVER, TINY_ANUNET, TINY_RAUNET_2D, TINY_RAUNET_3D, TINY_RSTN, TUMOUR, install_random_model, tiny_ct_card
from volumes import phantom_volume


class _SliceOracle(SegmentationNetwork):
    """A 2D localiser that marks fixed regions as liver: a big block and a small, separate blob."""

    name = "slice_oracle"
    spatial_dims = 2

    def __init__(self) -> None:
        super().__init__()
        self.in_channels, self.num_classes = 1, 2
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward_padded(self, x: torch.Tensor, return_maps: bool) -> SegmentationOutput:
        fg = torch.zeros_like(x[:, 0])
        fg[:, 4:12, 6:18] = 1.0  # large component (on every slice)
        fg[:, 20:22, 26:28] = 1.0  # small component
        return SegmentationOutput(torch.stack([1 - fg, fg], 1) * 10.0 + self.dummy)


def test_raunet_cascade_works_inside_the_largest_liver_component_only() -> None:
    torch.manual_seed(0)
    networks = {"localizer": _SliceOracle(), "liver": build_network(TINY_RAUNET_3D).eval(), "tumour": build_network(TINY_RAUNET_3D).eval()}
    volume = torch.randn(1, 10, 30, 32)
    probs, maps = run_raunet_cascade(volume, networks, {"patch_size": [16, 16, 8], "box_margin": 1}, RunContext(), True)
    assert probs.shape == (3, 10, 30, 32)
    torch.testing.assert_close(probs.sum(0), torch.ones(10, 30, 32))
    box = (slice(None), slice(3, 13), slice(5, 19))
    outside = torch.ones(10, 30, 32, dtype=torch.bool)
    outside[box] = False
    assert torch.all(probs[0][outside] == 1.0)  # nothing outside the largest component's box
    assert probs[1:][:, ~outside].sum() > 0
    assert {"liver.soft_mask_1", "tumour.soft_mask_2"} <= set(maps)  # the oracle localiser has no maps
    assert torch.all(maps["liver.soft_mask_1"][:, outside] == 0)


def test_raunet_cascade_end_to_end_on_a_ct_phantom(tmp_path) -> None:
    card = tiny_ct_card(
        "tiny-raunet", {"localizer": TINY_RAUNET_2D, "liver": TINY_RAUNET_3D, "tumour": TINY_RAUNET_3D}, [LIVER, TUMOUR],
        [{"name": "liver_soft_mask_1", "title": "liver mask", "kind": "soft_mask", "source": "liver.soft_mask_1"}],
        mode="raunet_cascade", patch_size=[16, 16, 8], box_margin=2,
    )
    store, model_id, _ = install_random_model(tmp_path / "store", card)
    volume, _ = phantom_volume(modality="CT")
    result = segment(volume, store.card(model_id), store, device="cpu")
    assert result.label.GetSize() == volume.GetSize() and set(result.maps) == {"liver_soft_mask_1"}
    assert set(np.unique(sitk.GetArrayViewFromImage(result.label))) <= {0, 1, 2}


def test_rstn_iterates_over_three_views_and_reports_rounds(tmp_path) -> None:
    card = tiny_ct_card(
        "tiny-rstn", {view: TINY_RSTN for view in ("axial", "coronal", "sagittal")}, [dict(LIVER, name="pancreas")],
        [{"name": "saliency", "title": "saliency", "kind": "saliency", "range": "data"},
         {"name": "coarse_probability", "title": "coarse", "kind": "probability"}],
        mode="rstn_coarse_to_fine", slice_context=1, max_rounds=3, stop_dice=0.95,
    )
    store, model_id, _ = install_random_model(tmp_path / "store", card)
    volume, _ = phantom_volume(size_zyx=(20, 24, 28), spacing_xyz=(1.5, 1.5, 2.0), modality="CT")
    messages: list[str] = []
    result = segment(volume, store.card(model_id), store, device="cpu", progress=lambda f, m: messages.append(m))
    rounds = [m for m in messages if m.startswith("round ")]
    assert 1 <= len(rounds) <= 3
    converged = "inter-round Dice" in rounds[-1] and float(rounds[-1].rsplit(" ", 1)[1]) >= 0.95
    assert converged or any("did not converge" in w for w in result.warnings)
    probability = sitk.GetArrayViewFromImage(result.maps["coarse_probability"])
    assert result.maps["coarse_probability"].GetSize() == volume.GetSize() and probability.min() >= 0 and probability.max() <= 1
    saliency = sitk.GetArrayViewFromImage(result.maps["saliency"])  # raw weights: the range is the map's own
    assert result.map_ranges == {"coarse_probability": (0.0, 1.0), "saliency": (float(saliency.min()), float(saliency.max()))}
    write_result(result, tmp_path / "out", montage=False)
    written = {m["name"]: m["range"] for m in json.loads((tmp_path / "out" / "result.json").read_text())["maps"]}
    assert written == {name: list(value_range) for name, value_range in result.map_ranges.items()}


def test_anunet_pruning_level_is_chosen_per_run(tmp_path) -> None:
    maps = [{"name": f"attention_x0_{j}", "title": f"gate {j}", "kind": "attention"} for j in (1, 4)]
    card = tiny_ct_card("tiny-anunet", {"main": TINY_ANUNET}, [LIVER], maps, mode="slicewise",
                        levels=["L1", "L2", "L3", "L4"], default_level="L4")
    store, model_id, _ = install_random_model(tmp_path / "store", card)
    volume, _ = phantom_volume(modality="CT")
    full = segment(volume, store.card(model_id), store, device="cpu")
    small = segment(volume, store.card(model_id), store, device="cpu", level="L1")
    assert full.level == "L4" and small.level == "L1"
    assert set(full.maps) == {"attention_x0_1", "attention_x0_4"} and set(small.maps) == {"attention_x0_1"}
    assert any("attention_x0_4" in w and "L1" in w for w in small.warnings)
    with pytest.raises(InputError, match="not offered"):
        segment(volume, store.card(model_id), store, device="cpu", level="L5")


def _tiny_rstn_views(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    nets = {view: build_network(dict(TINY_RSTN, in_channels=3, num_classes=2)).eval() for view in ("axial", "coronal", "sagittal")}
    with torch.no_grad():  # a bright blob is "pancreas" for every coarse net, so round 0 finds something to refine
        for net in nets.values():
            for module in net.modules():
                if isinstance(module, torch.nn.Conv2d) and module.out_channels == 2 and module.kernel_size == (1, 1):
                    module.bias.copy_(torch.tensor([0.5, -0.5]))
    return nets


def test_rstn_round_zero_is_the_fused_coarse_segmentation_then_fine_rounds_follow_it() -> None:
    """Yu et al. 2018, "Training and Testing": Z(0) = mean of the three views' coarse probabilities; round t
    refines with Z(t-1); the first inter-round Dice compares Z(0) and Z(1)."""
    from MedSegAttentionLib.inference.cascades import VIEWS, _inverse, run_rstn
    from MedSegAttentionLib.inference.runcontext import RunContext
    from MedSegAttentionLib.inference.sliding_window import slicewise_inference

    nets = _tiny_rstn_views()
    generator = torch.Generator().manual_seed(0)
    volume = torch.rand((1, 10, 16, 18), generator=generator)
    volume[:, 3:7, 5:11, 6:12] += 1.0

    def fused(stage: str, guide: torch.Tensor | None) -> torch.Tensor:
        total = 0
        for view, net in nets.items():
            perm = VIEWS[view]
            g = guide.permute(*[p - 1 for p in perm[1:]]) if guide is not None else None
            probs, _ = slicewise_inference(volume.permute(*perm), net, RunContext(amp=False), context=1, guide=g, stage=stage,
                                           slice_average=True)
            total = total + probs.permute(*_inverse(perm))
        return total / 3

    coarse = fused("coarse", None)
    round_one = fused("full", 1.0 - coarse[0])
    messages: list[str] = []
    ctx = RunContext(amp=False, progress=lambda fraction, message: messages.append(message))
    probabilities, maps = run_rstn(volume, nets, {"slice_context": 1, "max_rounds": 1, "stop_dice": 0.99}, ctx, True)
    torch.testing.assert_close(probabilities, round_one)
    torch.testing.assert_close(maps["coarse_probability"][0], 1.0 - coarse[0], atol=1e-5, rtol=1e-5)
    a, b = coarse[0] < 0.5, round_one[0] < 0.5
    dice = 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())
    assert [m for m in messages if m.startswith("round ")] == [f"round 1: inter-round Dice {dice:.3f}"]
    assert dice < 0.99 and any("did not converge" in w and "0.99 after 1 rounds" in w for w in ctx.warnings)


def test_rstn_slice_probability_is_the_mean_of_the_windows_that_predict_it() -> None:
    """Yu et al. 2018, testing: each slice is predicted by the up to three three-slice windows that contain
    it; its probability is their mean (at the volume's ends only the windows inside it count)."""
    from MedSegAttentionLib.inference.runcontext import RunContext
    from MedSegAttentionLib.inference.sliding_window import slice_stack, slicewise_inference

    net = _tiny_rstn_views()["axial"]
    generator = torch.Generator().manual_seed(1)
    volume = torch.rand((1, 6, 16, 18), generator=generator)
    guide = torch.rand((6, 16, 18), generator=generator)
    depth = volume.shape[1]
    for stage, side in (("coarse", None), ("full", guide)):
        with torch.no_grad():
            windows = []  # (S=3, K, H, W) probabilities of the window centred on each slice
            for z in range(depth):
                x = slice_stack(volume, [z], 1)
                out = net.coarse_pass(x, all_slices=True) if side is None else net.refine(x, slice_stack(side[None], [z], 1), all_slices=True)
                windows.append(torch.softmax(out.logits.unflatten(1, (3, -1)), dim=2)[0])
        expected = torch.stack([
            torch.stack([windows[c][z - c + 1] for c in (z - 1, z, z + 1) if 0 <= c < depth]).mean(0) for z in range(depth)
        ], dim=1)
        averaged, _ = slicewise_inference(volume, net, RunContext(amp=False, batch_size=4), context=1, guide=side, stage=stage,
                                          slice_average=True)
        centred, _ = slicewise_inference(volume, net, RunContext(amp=False, batch_size=4), context=1, guide=side, stage=stage)
        # float32 sums over batches of 4 against 1 differ by up to about 2e-5; a wrong average differs by far more
        torch.testing.assert_close(averaged, expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(centred, torch.stack([windows[z][1] for z in range(depth)], dim=1), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(averaged, centred, atol=1e-3)


def test_rstn_defaults_are_the_papers_best_threshold_and_ten_rounds() -> None:
    from MedSegAttentionLib.inference.cascades import RSTN_MAX_ROUNDS, RSTN_STOP_DICE
    from pathlib import Path

    from MedSegAttentionLib import modelstore
    from MedSegAttentionLib.modelstore.cards import ModelCard

    card = ModelCard.load(Path(modelstore.__file__).parent / "catalog" / "rstn-pancreas-ct.json")
    assert RSTN_STOP_DICE == (0.90, 0.95, 0.99) and RSTN_MAX_ROUNDS == 10
    assert card.inference["stop_dice"] == 0.99 and card.inference["max_rounds"] == 10 and card.inference["slice_average"]
    assert "light U-Net" in card.title and "FCN-8s" in card.description


class _Recorder(SegmentationNetwork):
    """Records the spatial size of every input; foreground where ``rule(image)`` (a fixed segmenter)."""

    name = "recorder"

    def __init__(self, spatial_dims: int, rule) -> None:  # noqa: ANN001
        super().__init__()
        self.spatial_dims, self.rule, self.sizes = spatial_dims, rule, []
        self.in_channels, self.num_classes = 1, 2
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward_padded(self, x: torch.Tensor, return_maps: bool) -> SegmentationOutput:
        self.sizes.append(tuple(x.shape[2:]))
        fg = self.rule(x[:, 0]).float()
        return SegmentationOutput(torch.stack([1 - fg, fg], 1) * 10.0 + self.dummy)


def _liver_scene() -> torch.Tensor:
    """(1, z, y, x): a big bright 'liver' (1.0), a small separate bright blob (1.0), a 'tumour' (2.0)
    inside the liver and a tumour-bright spot outside any liver."""
    volume = torch.zeros(1, 36, 60, 70)
    volume[0, 4:30, 10:40, 12:50] = 1.0  # liver
    volume[0, 14:20, 20:26, 25:31] = 2.0  # tumour inside the liver
    volume[0, 4:30, 48:52, 60:64] = 1.0  # small separate liver-bright blob
    volume[0, 32:35, 52:56, 2:6] = 2.0  # tumour-bright spot far from the liver
    return volume


def test_raunet_paper_cascade_window_sizes_largest_liver_component_and_hard_gate() -> None:
    """Jin et al. 2020, Sec. III-E to III-G: 256^2 localiser slices, the liver box resized to 224^2 in-plane
    in 224x224x32 windows, the largest liver component, tumour at the card's grid in 128x128x32 windows
    and only inside that liver."""
    localizer = _Recorder(2, lambda x: x > 0.5)
    liver = _Recorder(3, lambda x: x > 0.5)
    tumour = _Recorder(3, lambda x: x > 1.5)
    inference = {"localizer_size": [256, 256], "liver_box_size": [224, 224], "liver_patch_size": [224, 224, 32],
                 "tumour_patch_size": [128, 128, 32], "box_margin": 2, "blend": "constant"}
    volume = _liver_scene()
    probs, _ = run_raunet_cascade(volume, {"localizer": localizer, "liver": liver, "tumour": tumour}, inference,
                                  RunContext(amp=False), False)
    assert set(localizer.sizes) == {(256, 256)}
    assert set(liver.sizes) == {(32, 224, 224)}
    assert set(tumour.sizes) == {(32, 128, 128)}  # the 30 x 34 x 42 box at the card's grid, padded to one window
    label = probs.argmax(0)
    expected = torch.zeros(36, 60, 70, dtype=torch.long)
    expected[4:30, 10:40, 12:50] = 1
    expected[14:20, 20:26, 25:31] = 2
    assert torch.equal(label, expected)  # no blob (largest component), no tumour outside the liver
    assert set(torch.unique(probs).tolist()) <= {0.0, 1.0}


def test_raunet_cascade_without_a_tumour_stage_gives_the_largest_organ_component_in_two_classes() -> None:
    """An organ without a lesion stage (the left-atrium RA-UNet): localiser, box, RA-UNet-II, largest
    component; background and organ only, the RA-UNet-II maps inside the box."""
    localizer = _Recorder(2, lambda x: x > 0.5)
    organ = _Recorder(3, lambda x: x > 0.5)
    volume = _liver_scene()
    volume[0, 4:30, 41:44, 20:30] = 1.0  # an organ-bright strip inside the box, joined to nothing
    inference = {"localizer_size": [128, 128], "liver_box_size": [64, 64], "liver_patch_size": [64, 64, 16],
                 "box_margin": 2, "blend": "constant"}
    probs, maps = run_raunet_cascade(volume, {"localizer": localizer, "liver": organ}, inference, RunContext(amp=False), True)
    expected = torch.zeros(36, 60, 70, dtype=torch.long)
    expected[4:30, 10:40, 12:50] = 1  # the tumour-bright block is organ too; no strip (largest component)
    assert probs.shape == (2, 36, 60, 70) and torch.equal(probs.argmax(0), expected)
    assert set(organ.sizes) == {(16, 64, 64)}
    assert not any(name.startswith("tumour.") for name in maps)
    localised = maps["localizer.probability"][0]  # RA-UNet-I's evidence: its probability, blob included
    assert localised.shape == (36, 60, 70) and float(localised[10, 20, 20]) > 0.99 and float(localised[10, 50, 62]) > 0.99
    assert float(localised[2, 5, 5]) < 0.01


def test_raunet_soft_gate_and_no_liver_component_step_are_switches() -> None:
    localizer = _Recorder(2, lambda x: x > 0.5)
    liver = _Recorder(3, lambda x: x > 0.5)
    tumour = _Recorder(3, lambda x: x > 1.5)
    volume = _liver_scene()
    volume[0, 4:30, 41:44, 20:30] = 1.0  # a liver-bright strip inside the box, joined to nothing
    inference = {"patch_size": [32, 32, 16], "box_margin": 2, "blend": "constant"}
    networks = {"localizer": localizer, "liver": liver, "tumour": tumour}
    hard, _ = run_raunet_cascade(volume, networks, inference, RunContext(amp=False), False)
    kept, _ = run_raunet_cascade(volume, networks, {**inference, "liver_largest_component": False}, RunContext(amp=False), False)
    soft, _ = run_raunet_cascade(volume, networks, {**inference, "tumour_gate": "soft"}, RunContext(amp=False), False)
    strip = (slice(4, 30), slice(41, 42), slice(20, 30))
    assert torch.all(hard.argmax(0)[strip] == 0) and torch.all(kept.argmax(0)[strip] == 1)
    torch.testing.assert_close(soft.sum(0), torch.ones(36, 60, 70))
    assert 0.0 < float(soft[2].max()) and set(liver.sizes) == {(16, 32, 32)}
    with pytest.raises(ValueError, match="tumour_gate"):
        run_raunet_cascade(volume, networks, {**inference, "tumour_gate": "product"}, RunContext(amp=False), False)


def test_slicewise_slice_size_runs_the_network_on_resized_slices_and_returns_the_scan_grid() -> None:
    """ANU-Net's paper setting (Li et al. 2020, Sec. 4.1): whole slices at 256 x 256, the result back on the grid."""
    from MedSegAttentionLib.inference.pipelines import run_slicewise

    net = _Recorder(2, lambda x: x > 0.5)
    volume = torch.zeros(1, 6, 90, 120)
    volume[0, :, 30:60, 40:80] = 1.0
    probs, _ = run_slicewise(volume, {"main": net}, {"slice_size": [256, 256]}, RunContext(amp=False), False)
    assert set(net.sizes) == {(256, 256)} and probs.shape == (2, 6, 90, 120)
    expected = torch.zeros(6, 90, 120, dtype=torch.long)
    expected[:, 30:60, 40:80] = 1
    assert float((probs.argmax(0) == expected).float().mean()) > 0.995  # only the organ's rim may move by interpolation
    plain, _ = run_slicewise(volume, {"main": net}, {}, RunContext(amp=False), False)
    assert net.sizes[-1] == (90, 120) and torch.equal(plain.argmax(0), expected)
