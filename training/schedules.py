"""Optimisers and learning-rate schedules of the papers, built from a recipe's ``optimizer`` / ``scheduler``.

* ``sgd`` (``momentum``, ``nesterov``, ``weight_decay``) and ``adam`` / ``adamw``.
* Schedules, stepped once per training step:
  ``constant``; ``poly``: lr (1 - t / T)^power (ConResNet Sec. IV-A, power 0.9);
  ``inverse_time``: lr / (1 + decay t), Keras' ``decay`` argument (SIP-Net Sec. 4.1, RA-UNet code);
  ``multistep``: lr x ``gamma`` at each of ``milestones`` (RSTN's stage-J fine-tuning lr).
All are ``LambdaLR`` or built-in schedulers whose state dicts hold numbers only (weights-only loadable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch

__all__ = ["build_optimizer", "build_scheduler"]


def build_optimizer(cfg: Mapping[str, Any], params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    name = str(cfg.get("name", "adam")).lower()
    lr, wd = float(cfg.get("lr", 1e-3)), float(cfg.get("weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(cfg.get("momentum", 0.9)),
                               nesterov=bool(cfg.get("nesterov", False)), weight_decay=wd)
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        betas = tuple(float(b) for b in cfg.get("betas", (0.9, 0.999)))
        return cls(params, lr=lr, betas=betas, eps=float(cfg.get("eps", 1e-8)), weight_decay=wd)  # type: ignore[arg-type]
    raise ValueError(f"unknown optimizer {name!r}; use sgd, adam or adamw")


@dataclass
class _Poly:
    total: int
    power: float

    def __call__(self, step: int) -> float:
        return max(0.0, 1.0 - min(step, self.total) / max(self.total, 1)) ** self.power


@dataclass
class _InverseTime:
    decay: float

    def __call__(self, step: int) -> float:
        return 1.0 / (1.0 + self.decay * step)


def build_scheduler(cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, max_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The schedule named in ``cfg``; ``total_steps`` (poly) defaults to the run's ``max_steps``."""
    name = str(cfg.get("name", "constant")).lower()
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if name == "poly":
        total = int(cfg.get("total_steps") or max_steps)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _Poly(total, float(cfg.get("power", 0.9))))
    if name == "inverse_time":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _InverseTime(float(cfg.get("decay", 1e-6))))
    if name == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(m) for m in cfg["milestones"]], float(cfg.get("gamma", 0.1)))
    raise ValueError(f"unknown scheduler {name!r}; use constant, poly, inverse_time or multistep")
