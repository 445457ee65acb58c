"""The optimizers `PPOModule` and the API build: Adam (default), AdamW, or Muon on the hidden 2-D weight
matrices with Adam for the rest.

The Muon split (`muon_split`): a parameter goes to Muon when it is a 2-D weight of a layer inside the
network: not an `nn.Embedding`, not a head (an output layer with one row, the value, or one row per action),
and its name contains none of `exclude` (default `DEFAULT_MUON_EXCLUDE`: embeddings and the bilinear actor
head). Everything else (convolutions, embeddings, heads, norms, biases, the losses' own heads) goes to Adam.
Muon uses `adjust_lr_fn="match_rms_adamw"`, so the same learning rate (and its schedule) drives both.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch
from torch import nn

__all__ = ["DEFAULT_MUON_EXCLUDE", "OPTIMIZER_TYPES", "build_optimizers", "muon_split"]

OPTIMIZER_TYPES = ("adam", "adamw", "muon")
DEFAULT_MUON_EXCLUDE = ("embed", "bilinear", "head")


def muon_split(policy: nn.Module, num_actions: int, exclude: Optional[Sequence[str]] = None
               ) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    """(Muon's, Adam's) named parameters of `policy` (see the module doc)."""
    exclude = tuple(DEFAULT_MUON_EXCLUDE if exclude is None else exclude)
    embedding = {id(m.weight) for m in policy.modules() if isinstance(m, nn.Embedding)}
    muon, adam = [], []
    for name, p in policy.named_parameters():
        if not p.requires_grad:
            continue
        hidden = (p.ndim == 2 and id(p) not in embedding and p.shape[0] not in (1, num_actions)
                  and min(p.shape) > 1 and not any(e in name for e in exclude))
        (muon if hidden else adam).append((name, p))
    return muon, adam


def build_optimizers(policy: nn.Module, extra_params: Iterable[nn.Parameter], optimizer_type: str, lr: float,
                     betas: tuple[float, float], eps: float, weight_decay: float = 0.0, num_actions: int = 0,
                     muon_momentum: float = 0.95, muon_exclude: Optional[Sequence[str]] = None
                     ) -> list[torch.optim.Optimizer]:
    """The optimizers for `policy` and `extra_params` (the losses' heads): [Adam], [AdamW] or [Muon, Adam]."""
    extra = [p for p in extra_params if p.requires_grad]
    if optimizer_type not in OPTIMIZER_TYPES:
        raise ValueError(f"model.optimizer_type must be one of {', '.join(OPTIMIZER_TYPES)}, got {optimizer_type!r}")
    if optimizer_type == "adam":
        params = list(policy.parameters()) + extra
        return [torch.optim.Adam(params, lr=lr, eps=eps, betas=betas, weight_decay=weight_decay)]
    if optimizer_type == "adamw":
        params = list(policy.parameters()) + extra
        return [torch.optim.AdamW(params, lr=lr, eps=eps, betas=betas, weight_decay=weight_decay)]
    muon, adam = muon_split(policy, num_actions, muon_exclude)
    if not muon:
        raise ValueError(f"model.optimizer_type=muon: {type(policy).__name__} has no hidden 2-D weight for Muon "
                         f"(muon_exclude={list(muon_exclude or DEFAULT_MUON_EXCLUDE)})")
    return [torch.optim.Muon([p for _, p in muon], lr=lr, weight_decay=weight_decay, momentum=muon_momentum,
                             adjust_lr_fn="match_rms_adamw"),
            torch.optim.Adam([p for _, p in adam] + extra, lr=lr, eps=eps, betas=betas, weight_decay=weight_decay)]
