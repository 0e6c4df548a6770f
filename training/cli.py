"""Command line: ``python -m training fit`` and ``python -m training evaluate``.

fit: ``--recipe NAME|PATH --data PATH --fold K|all [--out DIR] [--stage ROLE|all] [--max-steps N]
[--stop-after N] [--device D] [--resume] [--set section.key=value ...] [--dtype float16]``.
Options override the recipe's YAML values. After training (rank 0) the fold's best weights are
exported under ``<out>/fold_<k>/export/`` once every network of the card is trained.

evaluate: ``--card CARD --weights FILE`` or ``--model-dir DIR``, ``--data PATH --fold K
[--splits-dir DIR] [--out DIR]``: per-case metrics (CSV) and a summary (JSON, printed).
Multi-process: ``python -m torch.distributed.run --nproc-per-node N -m training fit ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main"]


def _fold(value: str) -> int | str:
    return value if value == "all" else int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description="Train and evaluate MedSegAttention models.")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="train one recipe on one fold, then export the best weights")
    fit.add_argument("--recipe", required=True, help="shipped recipe name (see --list) or path to a YAML file")
    fit.add_argument("--data", required=True, help="data set folder in MSD / nnU-Net layout")
    fit.add_argument("--fold", type=_fold, default=0, help="fold index, or 'all' (no validation)")
    fit.add_argument("--out", help="experiment folder (default runs/<recipe>)")
    fit.add_argument("--stage", help="role of a cascade to train (e.g. liver, axial) or 'all'")
    fit.add_argument("--max-steps", type=int, help="training steps (the schedule's length)")
    fit.add_argument("--stop-after", type=int, help="stop (with a checkpoint) after this step, as an interruption")
    fit.add_argument("--batch-size", type=int)
    fit.add_argument("--seed", type=int)
    fit.add_argument("--device", default="auto")
    fit.add_argument("--resume", action="store_true", help="continue from last.pt of this fold/stage")
    fit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    fit.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="dtype of the exported weights")
    fit.add_argument("--no-export", action="store_true")
    fit.add_argument("--no-progress", action="store_true")
    ev = sub.add_parser("evaluate", help="evaluate an exported model on a fold's validation cases")
    ev.add_argument("--card")
    ev.add_argument("--weights")
    ev.add_argument("--model-dir", help="export folder holding the card and its weights")
    ev.add_argument("--data", required=True)
    ev.add_argument("--fold", type=_fold, default=0)
    ev.add_argument("--splits-dir", help="experiment folder with splits.json (default: the validation cases "
                    "named in the card's provenance, else its split seed)")
    ev.add_argument("--label-mapping", help="preset name (default: the card's provenance)")
    ev.add_argument("--out", help="output folder (default: evaluation/ next to the card)")
    ev.add_argument("--device", default="auto")
    sub.add_parser("list", help="list the shipped recipes")
    return parser


def _fit(args: argparse.Namespace) -> int:
    from .distributed import cleanup, init_distributed
    from .exporting import export_fold, missing_roles
    from .loop import fit
    from .recipes import load_recipe

    overrides = list(args.overrides)
    for option, key in (("max_steps", "train.max_steps"), ("stop_after", "train.stop_after"),
                        ("batch_size", "sampling.batch_size"), ("seed", "train.seed"), ("dtype", "export.dtype")):
        if getattr(args, option) is not None:
            overrides.append(f"{key}={getattr(args, option)}")
    recipe = load_recipe(args.recipe, overrides)
    out = Path(args.out or Path("runs") / recipe.name)
    stages = recipe.roles if args.stage == "all" else [args.stage] if args.stage else [None]
    results = []
    for stage in stages:
        results.append(fit(recipe.for_stage(stage), args.data, args.fold, out, device=args.device,
                           resume=args.resume, progress=not args.no_progress))
    import torch.distributed as dist

    is_main = not dist.is_initialized() or dist.get_rank() == 0
    finished = all(r.step >= int(recipe.for_stage(s)["train"]["max_steps"]) for r, s in zip(results, stages))
    if is_main:
        for r in results:
            print(f"{recipe.name} [{r.role}] fold {args.fold}: step {r.step}, last loss {r.last_loss:.4f}, "
                  f"best validation Dice {r.best_dice:.4f} ({r.run_dir})")
        fold_dir = out / f"fold_{args.fold}"
        if not args.no_export and finished:
            extra = {"fold": args.fold, "folds": recipe["data"]["folds"], "split_seed": recipe["data"]["split_seed"],
                     "val_cases": results[-1].val_cases, "data": str(Path(args.data).resolve())}
            exported = export_fold(recipe, fold_dir, dtype=str(recipe["export"]["dtype"]), extra=extra)
            if exported is None:
                print(f"export waits for the other stages: train {', '.join(missing_roles(recipe, fold_dir))}")
            else:
                card_path, weights_path = exported
                print(f"exported {card_path} and {weights_path}\n"
                      f"install: medseg install-weights --card {card_path} {weights_path}")
    if dist.is_initialized():
        dist.barrier()
        cleanup(init_distributed("cpu"))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_model, find_model, format_summary

    if args.model_dir:
        card_path, weights_path = find_model(args.model_dir)
    elif args.card and args.weights:
        card_path, weights_path = Path(args.card), Path(args.weights)
    else:
        print("evaluate needs --card and --weights, or --model-dir", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(card_path).parent / f"evaluation_fold_{args.fold}"
    summary = evaluate_model(card_path, weights_path, args.data, args.fold, out, args.splits_dir, args.label_mapping, args.device)
    print(format_summary(summary))
    print(f"per-case table: {out / 'per_case.csv'}; summary: {out / 'summary.json'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "list":
        from .recipes import load_recipe, recipe_names

        for name in recipe_names():
            print(f"{name}: roles {', '.join(load_recipe(name).roles)}")
        return 0
    if args.command == "fit":
        return _fit(args)
    return _evaluate(args)


if __name__ == "__main__":
    raise SystemExit(main())
