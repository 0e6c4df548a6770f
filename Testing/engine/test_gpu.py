"""On a CUDA machine: the fast GPU path (bf16, the faster layout, memory-chosen batch, compilation) agrees with the CPU.

Skipped without CUDA (CI has none); run on the lent GPU with ``pytest Testing/engine/test_gpu.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedSegAttentionLib.inference.engine import Predictor, segment
from model_cards import install_random_model
from volumes import phantom_volume

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_gpu_and_cpu_give_the_same_segmentation(tmp_path) -> None:
    store, model_id, _ = install_random_model(tmp_path / "store")
    volume, _ = phantom_volume(size_zyx=(24, 64, 64))
    cpu = segment(volume, store.card(model_id), store, device="cpu")
    gpu = segment(volume, store.card(model_id), store, device="cuda")
    a, b = sitk.GetArrayFromImage(cpu.label) > 0, sitk.GetArrayFromImage(gpu.label) > 0
    dice = 1.0 if a.sum() + b.sum() == 0 else 2 * (a & b).sum() / (a.sum() + b.sum())
    assert dice >= 0.99
    for name in cpu.maps:
        diff = np.abs(sitk.GetArrayFromImage(cpu.maps[name]) - sitk.GetArrayFromImage(gpu.maps[name])).max()
        assert diff < 2e-2, name


def test_memory_chosen_batch_keeps_peak_memory_within_the_budget(tmp_path) -> None:
    """The windows per batch are chosen so that the whole run's peak stays inside ``memory_budget_gib``."""
    store, model_id, _ = install_random_model(tmp_path / "store")
    volume, _ = phantom_volume(size_zyx=(96, 192, 192))
    budget = 0.25
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    result = segment(volume, store.card(model_id), store, device="cuda", memory_budget_gib=budget)
    assert torch.cuda.max_memory_allocated() <= budget * 2**30
    assert not [w for w in result.warnings if "out of memory" in w]


def test_compiled_networks_give_the_eager_segmentation_and_compile_once(tmp_path) -> None:
    """``compile=True``: the same labels as the eager run, and no second compilation although the last
    batch of windows is short (it is padded to the batch shape)."""
    store, model_id, _ = install_random_model(tmp_path / "store")
    card = store.card(model_id)
    volume, _ = phantom_volume(size_zyx=(40, 72, 64))  # 3 x 6 x 5 = 90 windows of 16 (overlap 0.25): the last batch of 7 is short
    eager = segment(volume, card, store, device="cuda", maps=False, batch_size=7)
    torch._dynamo.reset()
    compiled = Predictor(card, store, "cuda", batch_size=7, compile=True)
    assert compiled.compiled
    with torch._dynamo.config.patch(error_on_recompile=True):
        result = compiled.predict(volume, maps=False)
    a, b = sitk.GetArrayFromImage(eager.label) > 0, sitk.GetArrayFromImage(result.label) > 0
    assert 2 * (a & b).sum() / max(a.sum() + b.sum(), 1) >= 0.99
