"""Gradient statistics every N optimizer updates: global norm and per-parameter norm, mean and variance.

Hooks ``on_before_optimizer_step``, which Lightning calls inside ``LightningOptimizer.step()`` in manual
optimization too (after ``self.manual_backward(loss)``, before the optimizer applies the gradients), so
it sees exactly the gradients of each update, after any clipping done before ``opt.step()``.

Metrics, written to the loggers at the sampled update's global step (``metta_lightning.loggers.log_now``:
through ``pl_module.log`` they would be repeated, stale, in every later row of the epoch):

- ``grad/global_norm``                      2-norm over all gradients
- ``grad/<param name>/norm|mean|var``        per parameter tensor (``per_layer=True``)
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from metta_lightning.loggers import log_now


@torch.no_grad()
def gradient_stats(module: torch.nn.Module, per_layer: bool = True) -> dict[str, float]:
    """``grad/*`` statistics of the gradients currently held by ``module``'s parameters."""
    named = [(n, p.grad) for n, p in module.named_parameters() if p.grad is not None]
    if not named:
        return {}
    norms = torch.stack([torch.linalg.vector_norm(g.detach().float()) for _, g in named])
    out: dict[str, torch.Tensor] = {"grad/global_norm": torch.linalg.vector_norm(norms)}
    if per_layer:
        for (name, g), norm in zip(named, norms):
            g = g.detach().float()
            out[f"grad/{name}/norm"] = norm
            out[f"grad/{name}/mean"] = g.mean()
            out[f"grad/{name}/var"] = g.var(unbiased=False)
    keys = list(out)
    values = torch.stack([out[k] for k in keys]).cpu().tolist()  # one device sync
    return dict(zip(keys, values))


class GradientStats(Callback):
    """Log gradient statistics every ``every_n_updates`` optimizer updates.

    Args:
        every_n_updates: log on updates 0, N, 2N, ... (counting ``optimizer.step()`` calls).
        per_layer: also log norm, mean and variance for each parameter tensor.
    """

    def __init__(self, every_n_updates: int = 50, per_layer: bool = True) -> None:
        if every_n_updates < 1:
            raise ValueError("every_n_updates must be >= 1")
        self.every_n_updates = every_n_updates
        self.per_layer = per_layer
        self.updates = 0
        self.last_stats: dict[str, float] = {}

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        n, self.updates = self.updates, self.updates + 1
        if n % self.every_n_updates or not trainer.is_global_zero:
            return
        stats = gradient_stats(pl_module, self.per_layer)
        if not stats:
            return
        self.last_stats = stats
        log_now(trainer, stats)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.updates = int(state_dict.get("updates", 0))
