"""Where the GPU time of a network goes: one batch of windows (or slices) through each catalog network
under several execution settings, to choose the engine's GPU defaults by measurement.

Per model: the engine's own window (3D: the card's patch; 2D: the card's ``slice_size``, else the
512 x 512 slices of a CT) and batch (3D: the windows per batch the engine picks for an 8 GiB budget;
2D: the card's batch), the network with its bundled weights or seeded random ones. Per setting (``--variants``):

* ``fp32``: float32, contiguous (NCDHW) tensors;
* ``bf16`` / ``bf16-cl``: bf16 autocast, contiguous / channels-last (``bf16-cl`` is the engine's default);
* ``fp16-cl``: fp16 autocast, channels-last;
* ``bf16-cl-compile``: the default under ``torch.compile`` (inductor; its compile time is reported
  apart from the steady-state time);
* ``bf16-cl-graphs``: the default under ``torch.compile(mode="reduce-overhead")`` (CUDA graphs).

Reported: milliseconds per batch (median of ``--iters`` after warm-up), windows per second, effective
TFLOP/s (the float32 forward's FLOPs from PyTorch's counter), peak GPU memory. Rows are JSON lines.

    python benchmarks/gpu_network_variants.py --json runs/variants.jsonl
    python benchmarks/gpu_network_variants.py --device cpu --models sipnet-left-atrium-mr --variants fp32 --iters 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from gpu_vs_monai import networks_for, timed
from MedSegAttentionLib.inference.runcontext import RunContext, channels_last_format
from MedSegAttentionLib.inference.sizes import size_yx, stage_patch_zyx
from MedSegAttentionLib.inference.sliding_window import choose_batch_size
from MedSegAttentionLib.modelstore.store import ModelStore
from rows import emit

VARIANTS = {  # name: (autocast dtype or None, channels-last, torch.compile mode or None)
    "fp32": (None, False, None),
    "bf16": (torch.bfloat16, False, None),
    "bf16-cl": (torch.bfloat16, True, None),
    "fp16-cl": (torch.float16, True, None),
    "bf16-cl-compile": (torch.bfloat16, True, "default"),
    "bf16-cl-graphs": (torch.bfloat16, True, "reduce-overhead"),
}


def window_batch(card, net: torch.nn.Module, device: torch.device) -> torch.Tensor:  # noqa: ANN001
    """The batch the engine feeds this network: its window shape and windows (or slices) per batch."""
    inference = card.inference
    channels = int(net.config.get("in_channels", 1))
    if net.spatial_dims == 3:
        window = stage_patch_zyx(inference, "liver_patch_size")  # RA-UNet: its 3D liver stage
        ctx = RunContext(device=device, batch_size=int(inference.get("batch_size", 2)))
        batch = choose_batch_size(net, window, channels, ctx, 8.0)
    else:
        window = size_yx(inference, "slice_size") or size_yx(inference, "localizer_size") or (512, 512)
        batch = int(inference.get("batch_size", 8))
    generator = torch.Generator().manual_seed(0)
    return torch.randn((batch, channels, *window), generator=generator).to(device)


def forward_flops(net: torch.nn.Module, batch: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        net(batch)
    return counter.get_total_flops()


def runner(net: torch.nn.Module, batch: torch.Tensor, dtype: torch.dtype | None, channels_last: bool,
           compile_mode: str | None) -> Callable[[], torch.Tensor]:
    """One forward pass (softmax of the logits, as the engine takes it) under the given settings."""
    if channels_last:
        fmt = channels_last_format(batch.ndim - 2)
        net, batch = net.to(memory_format=fmt), batch.contiguous(memory_format=fmt)
    else:
        net, batch = net.to(memory_format=torch.contiguous_format), batch.contiguous()
    model = torch.compile(net, mode=compile_mode) if compile_mode else net

    def run() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(batch.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return torch.softmax(model(batch).logits.float(), dim=1)

    return run


def measure(net: torch.nn.Module, batch: torch.Tensor, variant: str, iters: int) -> dict:
    dtype, channels_last, compile_mode = VARIANTS[variant]
    device = batch.device
    run = runner(net, batch, dtype, channels_last, compile_mode)
    first = timed(run, device)[1]  # the first call: cuDNN's kernel search, or the compilation
    for _ in range(2):
        run()
    runs = [timed(run, device) for _ in range(iters)]
    seconds = statistics.median(s for _, s, _ in runs)
    row = {"variant": variant, "first_call_s": round(first, 2), "ms_per_batch": round(1e3 * seconds, 2),
           "windows_per_s": round(batch.shape[0] / seconds, 1)}
    if device.type == "cuda":
        row["peak_gib"] = round(max(p for _, _, p in runs) / 2**30, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", help="catalog ids (default: every catalog model)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--deadline-s", type=float, default=None, help="start no model after this many seconds")
    parser.add_argument("--json", help="append each row to this JSON-lines file as it comes")
    args = parser.parse_args()
    device, store, start = torch.device(args.device), ModelStore(), time.perf_counter()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the engine sets it on CUDA
    for model_id in args.models or [entry.card.id for entry in store.catalog()]:
        card = store.card(model_id)
        if args.deadline_s is not None and time.perf_counter() - start > args.deadline_s:
            emit({"model": model_id, "skipped": "deadline"}, args.json)
            continue
        networks = networks_for(card, store, device)
        role = next(r for r in ("main", "liver", "axial") if r in networks)
        net = networks[role].to(device).eval()
        batch = window_batch(card, net, device)
        flops = forward_flops(net, batch)
        for variant in args.variants:
            base = {"model": model_id, "role": role, "batch": list(batch.shape), "gflop_per_batch": round(flops / 1e9, 1)}
            try:
                row = measure(net, batch, variant, args.iters)
                row["effective_tflops"] = round(flops / 1e12 / (row["ms_per_batch"] / 1e3), 1)
            except Exception as error:  # noqa: BLE001 - one setting failing (a compile error) must not lose the others
                row = {"variant": variant, "error": f"{type(error).__name__}: {str(error)[:300]}"}
            emit({**base, **row}, args.json)
            torch._dynamo.reset()
        del net, networks
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
