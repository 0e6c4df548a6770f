"""The OpenVINO backend gives PyTorch's answer, caches its conversion, and steps aside when it cannot."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedSegAttentionLib.errors import InputError
from MedSegAttentionLib.inference.engine import Predictor
from MedSegAttentionLib.inference.openvino_backend import OpenVINORunner, choose_backend
from MedSegAttentionLib.models import SegmentationNetwork, SegmentationOutput, build_network
from model_cards import (LIVER, TINY_ANUNET, TINY_RAUNET_2D, TINY_RAUNET_3D, TINY_RSTN, TINY_SIPNET, install_random_model,
                         tiny_card, tiny_ct_card)
from volumes import phantom_volume

pytest.importorskip("openvino")

TINY_CONRESNET = {"name": "conresnet", "base_channels": 8, "blocks": [1, 1, 1, 1, 1]}


@pytest.mark.parametrize("config, shapes", [
    (TINY_SIPNET, [(2, 1, 16, 16, 16), (1, 1, 11, 21, 17)]),
    (TINY_CONRESNET, [(2, 1, 16, 16, 16), (1, 1, 9, 20, 13)]),
    (TINY_RAUNET_3D, [(1, 1, 16, 16, 16), (2, 1, 10, 19, 23)]),
    (TINY_RAUNET_2D, [(3, 1, 32, 32), (1, 1, 29, 45)]),
    ({**TINY_ANUNET, "level": 3}, [(2, 1, 32, 32), (4, 1, 37, 50)]),
], ids=["sipnet", "conresnet", "raunet_3d", "raunet_2d", "anunet"])
def test_openvino_gives_pytorchs_logits_and_maps_on_every_shape(config, shapes, tmp_path) -> None:
    torch.manual_seed(0)
    net = build_network(config).eval()
    runner = OpenVINORunner(tmp_path)
    for shape in shapes:  # one conversion, dynamic batch and spatial size; odd sizes take the padding path
        x = torch.randn(shape)
        with torch.inference_mode():
            expected = net(x, return_maps=True)
            got = runner.forward(net, x, return_maps=True)
        assert got is not None
        torch.testing.assert_close(got.logits, expected.logits, atol=2e-4, rtol=1e-4)
        assert set(got.maps) == set(expected.maps) and got.maps
        for name, value in expected.maps.items():
            torch.testing.assert_close(got.maps[name], value, atol=2e-4, rtol=1e-4)
    assert id(net) in runner.ran and len(list(tmp_path.glob("*.xml"))) == 1


def test_the_converted_model_is_cached_by_weights_and_maps(tmp_path) -> None:
    net = build_network(TINY_SIPNET).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    OpenVINORunner(tmp_path).forward(net, x, return_maps=False)
    assert len(list(tmp_path.glob("*.xml"))) == 1
    again = OpenVINORunner(tmp_path)
    calls: list[tuple[int, ...]] = []
    original = net.forward_padded
    net.forward_padded = lambda t, maps: calls.append(tuple(t.shape)) or original(t, maps)  # type: ignore[method-assign]
    again.forward(net, x, return_maps=False)
    assert len(list(tmp_path.glob("*.xml"))) == 1  # read back, not converted again
    assert calls == []  # and the shape checked in the first run is not checked against PyTorch again
    again.forward(net, torch.randn(1, 1, 16, 32, 16), return_maps=False)
    assert calls == [(1, 1, 16, 32, 16)]  # a new shape is
    del net.forward_padded
    again.forward(net, x, return_maps=True)
    with torch.no_grad():
        next(net.parameters()).add_(0.1)
    OpenVINORunner(tmp_path).forward(net, x, return_maps=False)
    assert len(list(tmp_path.glob("*.xml"))) == 3  # maps on, and other weights, are other models
    assert not list(tmp_path.glob("*.partial.*"))


class _ShapeBaked(SegmentationNetwork):
    """A network whose traced graph keeps the example's width as a constant: right on that shape only."""

    name = "shape_baked"
    spatial_dims = 2

    def __init__(self) -> None:
        super().__init__()
        self.in_channels, self.num_classes = 1, 2
        self.conv = torch.nn.Conv2d(1, 2, 1)

    def forward_padded(self, x: torch.Tensor, return_maps: bool) -> SegmentationOutput:
        return SegmentationOutput(self.conv(x) * float(x.shape[-1]))


def test_a_network_whose_conversion_disagrees_goes_back_to_pytorch_with_a_warning(tmp_path) -> None:
    warnings: list[str] = []
    net = _ShapeBaked().eval()
    runner = OpenVINORunner(tmp_path, warn=warnings.append)
    assert runner.forward(net, torch.randn(1, 1, 8, 8), False) is not None  # the traced shape agrees
    assert runner.forward(net, torch.randn(1, 1, 8, 24), False) is None  # another width does not
    assert not runner.accepts(net) and id(net) not in runner.ran
    assert len(warnings) == 1 and "disagree" in warnings[0] and "PyTorch" in warnings[0]


def test_backend_choice_and_its_errors() -> None:
    cpu = torch.device("cpu")
    assert choose_backend("auto", cpu) == "openvino" and choose_backend("pytorch", cpu) == "pytorch"
    assert choose_backend("auto", torch.device("cuda")) == "pytorch"
    with pytest.raises(InputError, match="runs on the CPU"):
        choose_backend("openvino", torch.device("cuda"))
    with pytest.raises(InputError, match="backend must be"):
        choose_backend("tensorrt", cpu)


def test_engine_labels_and_maps_are_the_same_on_both_backends_and_the_result_says_which_ran(tmp_path) -> None:
    store, model_id, _ = install_random_model(tmp_path / "store", tiny_card(patch_size=[16, 16, 8]))
    card = store.card(model_id)
    image, _ = phantom_volume()
    messages: list[str] = []
    fast = Predictor(card, store, "cpu", backend="auto").predict(image, progress=lambda f, m: messages.append(m))
    assert any(m.startswith("OpenVINO: preparing") for m in messages)  # the one-off conversion is announced
    reference = Predictor(card, store, "cpu", backend="pytorch").predict(image)
    assert fast.backend.startswith("openvino ") and reference.backend.startswith("pytorch ")
    assert np.array_equal(sitk.GetArrayFromImage(fast.label), sitk.GetArrayFromImage(reference.label))
    for name, value in reference.maps.items():
        assert np.allclose(sitk.GetArrayFromImage(fast.maps[name]), sitk.GetArrayFromImage(value), atol=1e-3)
    assert "openvino_prepare" in fast.timings and list((store.root / "cache" / "openvino").glob("*.xml"))


def test_rstns_rounds_stay_on_pytorch_and_the_result_says_so(tmp_path) -> None:
    card = tiny_ct_card("tiny-rstn", {view: {**TINY_RSTN, "in_channels": 3} for view in ("axial", "coronal", "sagittal")},
                        [LIVER], [], mode="rstn_coarse_to_fine", slice_context=1, max_rounds=2)
    store, model_id, _ = install_random_model(tmp_path / "store", card)
    image, _ = phantom_volume(modality="CT")
    result = Predictor(store.card(model_id), store, "cpu", backend="auto").predict(image, maps=False)
    assert result.backend.startswith("pytorch ")
