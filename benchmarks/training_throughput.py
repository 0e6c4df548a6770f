"""Training steps per second of a recipe on this machine, and what its schedule and a cross-validation cost.

Runs the real training loop (``training.loop.fit``: the recipe's sampler, augmentation, loss, optimizer,
mixed precision and data-loader workers) for ``--steps`` steps on seeded phantoms of the recipe's data
shape (``Testing/dataset_phantoms.py``; only the shapes matter for speed), with the schedule left at the
recipe's length (``train.stop_after``), validation off. Prints the steady rate (after ``--warmup``
steps), peak GPU memory, and the hours that the recipe's ``max_steps`` and a 5-fold cross-validation
would take at that rate.

    python benchmarks/training_throughput.py --recipe sipnet-left-atrium-mr --device cuda --steps 120
    python benchmarks/training_throughput.py --recipe sipnet-left-atrium-mr-compact --device cpu --steps 12 --warmup 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))
from dataset_phantoms import synthetic_dataset  # noqa: E402
from training.loop import fit  # noqa: E402
from training.recipes import load_recipe  # noqa: E402
from rows import emit  # noqa: E402


def phantom_data(root: Path, recipe, cases: int, shape_zyx: tuple[int, int, int]) -> Path:  # noqa: ANN001
    """Binary or multi-class phantoms matching the recipe's label count, at the recipe's target spacing."""
    spacing = recipe.card["preprocessing"].get("target_spacing") or (1.0, 1.0, 1.0)
    kind = "pancreas" if len(recipe.card["labels"]) == 1 else "liver"
    return synthetic_dataset(root, kind, cases, shape_zyx, spacing, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20, help="steps left out of the rate (start-up, cuDNN tuning)")
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 192, 192], help="phantom z y x voxels")
    parser.add_argument("--stage", help="role of a cascade (default: its first)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", help="append the row to this JSON-lines file")
    args = parser.parse_args()
    overrides = [*args.overrides, f"train.stop_after={args.steps}", "train.val_every=1000000000", "train.log_every=1"]
    recipe = load_recipe(args.recipe, overrides)
    recipe = recipe.for_stage(args.stage or recipe.roles[0])
    with tempfile.TemporaryDirectory() as tmp:
        data = phantom_data(Path(tmp) / "data", recipe, args.cases, tuple(args.shape))
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = fit(recipe, data, 0, Path(tmp) / "run", device=args.device, progress=False)
        wall = time.perf_counter() - start
        log = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    times = {row["step"]: row["time_s"] for row in log if "time_s" in row}
    first, last = max(min(times), args.warmup), max(times)
    rate = (last - first) / (times[last] - times[first])
    max_steps = int(recipe["train"]["max_steps"])
    row = {"recipe": recipe.name, "role": result.role, "device": args.device,
           "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "cpu",
           "torch": torch.__version__, "batch": recipe["sampling"].get("batch_size"),
           "patch": recipe["sampling"].get("patch_size"), "amp": recipe["train"].get("amp"),
           "workers": recipe["train"].get("num_workers"), "steps": result.step, "wall_s": round(wall, 1),
           "steps_per_s": round(rate, 3), "max_steps": max_steps,
           "schedule_h": round(max_steps / rate / 3600, 2), "five_folds_h": round(5 * max_steps / rate / 3600, 2),
           "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None}
    emit(row, args.json)


if __name__ == "__main__":
    main()
