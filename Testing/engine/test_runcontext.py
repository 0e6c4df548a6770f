"""The run context's policies, shared by inference and training."""

from __future__ import annotations

import pytest
import torch

from MedSegAttentionLib.inference.runcontext import RunContext, mixed_precision
from training.loop import _amp


@pytest.mark.parametrize("setting", ["auto", "bf16", "fp16", "none", None])
def test_the_cpu_never_runs_mixed_precision(setting) -> None:
    assert mixed_precision(torch.device("cpu"), setting) == (False, torch.float32)
    assert not RunContext(device=torch.device("cpu"), amp=True, precision=setting or "auto").use_amp


def test_training_and_inference_share_the_policy() -> None:
    for setting in ("bf16", "fp16", "none"):
        assert _amp(setting, torch.device("cpu")) == mixed_precision(torch.device("cpu"), setting)
    with pytest.raises(ValueError, match="mixed precision must be"):
        mixed_precision(torch.device("cpu"), "fp8")
    with pytest.raises(ValueError, match="train.amp must be"):
        _amp("auto-ish", torch.device("cpu"))


def test_a_predictor_refuses_an_unknown_precision_before_loading_anything(tmp_path) -> None:
    from MedSegAttentionLib.inference.engine import Predictor
    from model_cards import install_random_model

    store, model_id, _ = install_random_model(tmp_path / "store")
    with pytest.raises(ValueError, match="mixed precision must be"):
        Predictor(store.card(model_id), store, "cpu", precision="fp8")
    assert Predictor(store.card(model_id), store, "cpu", precision="float32").precision == "float32"


def test_a_gpu_index_the_machine_does_not_have_is_refused_with_the_ones_it_has(monkeypatch) -> None:
    from MedSegAttentionLib.errors import InputError
    from MedSegAttentionLib.inference.devices import resolve_device

    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1") and resolve_device("cuda") == torch.device("cuda")
    for choice in ("cuda:2", "cuda:x"):
        with pytest.raises(InputError, match=r"has 2 CUDA GPU\(s\): cuda:0, cuda:1"):
            resolve_device(choice)
