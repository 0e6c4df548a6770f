"""Seconds per window (3D) or slice (2D) of each catalog network by memory layout and batch size.

The figures behind the engine's device defaults (channels-last layout, the CPU batch cap); see
docs/benchmarks.md. Random seeded weights: speed does not depend on them. Example::

    python benchmarks/layout_and_batch.py --device cpu --batches 1,2,8 --slice 256
"""

from __future__ import annotations

import argparse
import time

import torch

from MedSegAttentionLib.modelstore.cards import builtin_cards
from MedSegAttentionLib.models import build_network
from MedSegAttentionLib.inference.sizes import patch_size_zyx
from MedSegAttentionLib.inference.runcontext import channels_last_format


def seconds_per_item(net: torch.nn.Module, x: torch.Tensor, device: torch.device, repeats: int = 2) -> float:
    with torch.inference_mode():
        net(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            net(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats / x.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,2,8", help="comma-separated batch sizes")
    parser.add_argument("--slice", type=int, default=256, help="side of the square 2D slice")
    parser.add_argument("--models", nargs="*", help="catalog ids (default: all)")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"# torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads")
    print("| network | input | batch | s/item contiguous | s/item channels-last |")
    print("| --- | --- | --- | --- | --- |")
    seen: set[str] = set()
    for card in builtin_cards():
        if args.models and card.id not in args.models:
            continue
        for role, config in card.networks.items():
            key = repr(config)
            if key in seen:  # the three RSTN views and RA-UNet's liver/tumour share one architecture
                continue
            seen.add(key)
            torch.manual_seed(0)
            net = build_network(config).to(device).eval()
            spatial = patch_size_zyx(card.inference) if net.spatial_dims == 3 else (args.slice, args.slice)
            layout = channels_last_format(net.spatial_dims)
            for batch in (int(b) for b in args.batches.split(",")):
                x = torch.randn(batch, net.in_channels, *spatial, device=device)
                plain = seconds_per_item(net.to(memory_format=torch.contiguous_format), x.contiguous(), device)
                fast = seconds_per_item(net.to(memory_format=layout), x.contiguous(memory_format=layout), device)
                print(f"| {card.id}/{role} | {tuple(spatial)} | {batch} | {plain:.3f} | {fast:.3f} |", flush=True)


if __name__ == "__main__":
    main()
