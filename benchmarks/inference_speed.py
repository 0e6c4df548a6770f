"""Inference speed and memory per catalog model (the side by side with MONAI: cpu_vs_monai.py, gpu_vs_monai.py).

Prints a table (seconds, effective TFLOP/s, peak memory) and, with ``--json``, writes the figures.
Networks are the catalog's paper-size configurations with random (seeded) weights: speed does not
depend on the weights. Examples::

    python benchmarks/inference_speed.py --device cpu --volume prostate        # real ProstateX T2
    python benchmarks/inference_speed.py --device cuda --volume ct512
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from MedSegAttentionLib.modelstore.cards import builtin_cards
from MedSegAttentionLib.inference.engine import segment
from MedSegAttentionLib.models import build_network
from MedSegAttentionLib.cli import with_inference_settings
from MedSegAttentionLib.inference.sizes import patch_size_zyx
from MedSegAttentionLib.inference.window_plan import plan_window
from MedSegAttentionLib.modelstore.store import ModelStore

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def synthetic_ct(size_zyx: tuple[int, int, int] = (200, 512, 512), spacing=(0.8, 0.8, 1.5)) -> sitk.Image:
    """A body-like CT: air outside an ellipse of soft tissue with brighter organs, in HU."""
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[: size_zyx[0], : size_zyx[1], : size_zyx[2]]
    body = ((y - size_zyx[1] / 2) / (0.42 * size_zyx[1])) ** 2 + ((x - size_zyx[2] / 2) / (0.47 * size_zyx[2])) ** 2 <= 1
    organ = ((y - 0.45 * size_zyx[1]) / 60) ** 2 + ((x - 0.35 * size_zyx[2]) / 80) ** 2 + ((z - size_zyx[0] / 2) / 50) ** 2 <= 1
    hu = np.where(body, 40.0, -1000.0) + np.where(organ, 60.0, 0.0)
    image = sitk.GetImageFromArray((hu + rng.normal(0, 15, size_zyx)).astype(np.int16))
    image.SetSpacing(spacing)
    return image


def load_volume(name: str) -> sitk.Image:
    if name == "ct512":
        return synthetic_ct()
    paths = {"prostate": SHARED / "ProstateX-0000" / "t2_tse_tra.nii.gz",
             "ct20": SHARED / "TotalSegmentatorSamples" / "example_ct_dicom",
             "ct_sm": SHARED / "TotalSegmentatorSamples" / "example_ct_sm.nii.gz"}
    from MedSegAttentionLib.inference.imageio import read_image

    if not paths[name].exists():
        sys.exit(f"{paths[name]} is absent (../shared/data); use --volume ct512")
    return read_image(paths[name])


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def flops_per_window(net: torch.nn.Module, channels: int, patch: tuple[int, ...], device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, channels, *patch, device=device))
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--volume", default="ct512", choices=["ct512", "prostate", "ct20", "ct_sm"])
    parser.add_argument("--models", nargs="*", help="catalog ids (default: all)")
    parser.add_argument("--batch-size", type=int, help="windows/slices per batch (default: the engine's choice for the device)")
    parser.add_argument("--backend", default="pytorch", choices=["pytorch", "openvino"],
                        help="the engine's CPU runtime (the tables in docs/benchmarks.md before 2026-11-27 are PyTorch)")
    parser.add_argument("--inference", action="append", default=[], metavar="KEY=VALUE",
                        help="change a card inference setting as medseg segment --inference does, e.g. "
                             "max_window_voxels=2000000 (windows planned to span the volume)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    device = torch.device(args.device)
    image = load_volume(args.volume)
    store = ModelStore("/nonexistent")  # networks are passed in; the store is not read
    rows = []
    print(f"# {time.strftime('%Y-%m-%d')} torch {torch.__version__} on {platform.node()} "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'}; "
          f"volume {args.volume} {image.GetSize()} @ {tuple(round(s, 3) for s in image.GetSpacing())} mm")
    for card in builtin_cards():
        if args.models and card.id not in args.models:
            continue
        card = with_inference_settings(card, args.inference)
        torch.manual_seed(0)
        networks = {role: build_network(config) for role, config in card.networks.items()}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        if device.type != "cpu":  # warm-up: cuDNN autotuning, allocator (the CPU needs none worth a whole run)
            segment(image, card, store, device=str(device), networks=networks, batch_size=args.batch_size, maps=False,
                    backend=args.backend)
        start = time.perf_counter()
        result = segment(image, card, store, device=str(device), networks=networks, batch_size=args.batch_size, maps=False,
                    backend=args.backend)
        total = time.perf_counter() - start
        row = {"model": card.id, "device": result.device, "total_s": round(total, 3),
               **{f"{k}_s": round(v, 3) for k, v in result.timings.items()}, "peak_mem_gib": round(peak_memory_gib(device), 2)}
        if card.inference["mode"] == "sliding_window":
            from MedSegAttentionLib.inference.sliding_window import window_starts
            from MedSegAttentionLib.inference.preprocessing import model_grid

            grid = model_grid(image, card.preprocessing.spacing_for(image))
            spatial = tuple(reversed(grid.GetSize()))
            patch = plan_window(spatial, patch_size_zyx(card.inference), card.inference, networks["main"].divisors())
            windows = int(np.prod([len(window_starts(max(s, p), p, card.inference.get("overlap", 0.5)))
                                   for s, p in zip(spatial, patch)]))
            row["window"], row["windows"] = list(patch), windows
            flops = flops_per_window(networks["main"], card.input_channels, patch, device) * windows
            row["tflops_effective"] = round(flops / result.timings["inference"] / 1e12, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
