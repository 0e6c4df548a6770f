"""Resume continues bit-identically; two gloo DDP processes match one process within tolerance."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from conftest import tiny_overrides
from training.checkpoint import load_checkpoint
from training.loop import fit
from training.recipes import load_recipe


def test_interrupted_and_resumed_run_equals_straight_run(phantom_sets, tmp_path) -> None:
    name = "sipnet-prostate-mr"  # dropout and BatchNorm: exercises RNG and buffer state
    data = phantom_sets["prostate"]
    straight = load_recipe(name, tiny_overrides(name, steps=6, extra=["train.checkpoint_every=1"]))
    fit(straight, data, 0, tmp_path / "a", device="cpu", progress=False)
    interrupted = load_recipe(name, tiny_overrides(name, steps=6, extra=["train.stop_after=3"]))
    assert fit(interrupted, data, 0, tmp_path / "b", device="cpu", progress=False).step == 3
    resumed = load_recipe(name, tiny_overrides(name, steps=6))
    assert fit(resumed, data, 0, tmp_path / "b", device="cpu", resume=True, progress=False).step == 6
    a = load_checkpoint(tmp_path / "a" / "fold_0" / "main" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "fold_0" / "main" / "last.pt")
    assert a["step"] == b["step"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for pid, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][pid]["momentum_buffer"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 6


def _run(args: list[str], cwd) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_ddp_two_gloo_processes_match_one_process(phantom_sets, tmp_path) -> None:
    """Same global batch (2), seed and data: per-sample seeds make the two ranks draw exactly the
    single process's batch; ConResNet (GroupNorm, no dropout), so the averaged DDP gradient equals
    the full-batch gradient up to rounding (measured: ~1e-4 of the distance moved)."""
    name = "conresnet-pancreas-ct"
    # SGD: the update is linear in the gradient, so weight differences measure gradient differences
    # (Adam's first steps are ~lr * sign(g) and would blow up rounding-level differences)
    # Without the residual term (its positive weight log(V / V_k) is computed over each process's own
    # batch, so DDP legitimately differs there) and without clipping the loss is a per-sample mean.
    extra = ["optimizer={name: sgd, lr: 0.05, momentum: 0.9}", "loss.residual_weight=0", "train.grad_clip=null"]
    sets = [f"--set={s}" for s in tiny_overrides(name, steps=3, extra=extra)]
    common = ["fit", "--recipe", name, "--data", str(phantom_sets["pancreas"]), "--fold", "all", "--device", "cpu",
              "--no-progress", "--no-export", *sets]
    _run([sys.executable, "-m", "training", *common, "--out", str(tmp_path / "one")], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531",
          "-m", "training", *common, "--out", str(tmp_path / "two")], tmp_path)
    one = load_checkpoint(tmp_path / "one" / "fold_all" / "main" / "last.pt")
    two = load_checkpoint(tmp_path / "two" / "fold_all" / "main" / "last.pt")
    torch.manual_seed(1234)
    from MedSegAttentionLib.models import build_network

    init = build_network(one["config"]).state_dict()
    moved = sum(float((one["model"][k] - init[k]).float().norm() ** 2) for k in init if init[k].is_floating_point()) ** 0.5
    differ = sum(float((one["model"][k] - two["model"][k]).float().norm() ** 2) for k in init if init[k].is_floating_point()) ** 0.5
    assert moved > 0
    assert differ < 0.01 * moved, (differ, moved)
