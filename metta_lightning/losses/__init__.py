"""Training losses behind one interface (`base.Loss`), listed with coefficients in `model.losses`.

    model:
      losses:                      # absent: [{name: ppo}], exactly the PPO training of before
        - {name: ppo}
        - {name: kickstarter, coef: 1.0, args: {teacher_uri: ./teacher.mpt, anneal_agent_steps: 200000}}

Each entry: `name` (one of `LOSSES`), `coef` (>= 0, default 1) and `args` (the loss's own arguments, see its
class). `build_losses` checks the whole list (unknown names or args, negative coefficients, ppo and grpo
together, outputs the policy does not offer, a teacher on another game) before training starts.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import torch
from torch import nn

from .auxiliary import Contrastive, Dynamics
from .base import Loss, LossBatch, LossError, weighted_mean
from .policy_gradient import GRPOLoss, PPOLoss
from .teacher import ActionSupervised, Kickstarter, check_teacher_game

__all__ = ["LOSSES", "ActionSupervised", "Contrastive", "Dynamics", "GRPOLoss", "Kickstarter", "Loss",
           "LossBatch", "LossError", "LossSet", "PPOLoss", "build_losses", "check_teacher_game",
           "normalize_specs", "weighted_mean"]

LOSSES: dict[str, type[Loss]] = {"ppo": PPOLoss, "grpo": GRPOLoss, "kickstarter": Kickstarter,
                                 "action_supervised": ActionSupervised, "contrastive": Contrastive,
                                 "dynamics": Dynamics}
_INJECTED = ("env_info", "name", "feature_dim", "teacher")  # given by build_losses, not by YAML


def normalize_specs(specs: Optional[Iterable[Any]]) -> list[dict[str, Any]]:
    """`model.losses` as plain `{"name", "coef", "args"}` dicts (None: `[{"name": "ppo"}]`); raises
    LossError naming the entry at fault."""
    if specs is None:
        return [{"name": "ppo", "coef": 1.0, "args": {}}]
    out, seen = [], set()
    for i, spec in enumerate(specs):
        where = f"model.losses[{i}]"
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, dict):
            raise LossError(f"{where}: expected a mapping with name, coef and args, got {spec!r}")
        unknown = set(spec) - {"name", "coef", "args"}
        if unknown:
            raise LossError(f"{where}: unknown keys {sorted(unknown)} (expected name, coef, args)")
        name = spec.get("name")
        if name not in LOSSES:
            raise LossError(f"{where}: unknown loss {name!r} (known: {', '.join(LOSSES)})")
        coef = spec.get("coef", 1.0)
        if isinstance(coef, bool) or not isinstance(coef, (int, float)) or coef < 0 or coef != coef:
            raise LossError(f"{where} ({name}): coef must be a number >= 0, got {coef!r}")
        args = dict(spec.get("args") or {})
        accepted = [p for p in inspect.signature(LOSSES[name].__init__).parameters if p not in ("self", *_INJECTED)]
        bad = sorted(set(args) - set(accepted))
        if bad:
            raise LossError(f"{where} ({name}): unknown args {bad} (accepted: {accepted or 'none'})")
        if name in seen:
            raise LossError(f"{where}: loss {name!r} listed twice")
        seen.add(name)
        out.append({"name": name, "coef": float(coef), "args": args})
    if not out:
        raise LossError("model.losses: empty (omit it for PPO alone)")
    if {"ppo", "grpo"} <= seen:
        raise LossError("model.losses: ppo and grpo are alternatives; list one of them")
    return out


@dataclass
class LossSet:
    """The configured losses in order: `modules` (an `nn.ModuleDict`: their heads are trained and saved)
    and `coefs`."""

    modules: nn.ModuleDict
    coefs: dict[str, float]

    def items(self):
        return [(name, self.modules[name], self.coefs[name]) for name in self.modules]

    @property
    def advantage_source(self) -> Optional[Loss]:
        """The first loss whose advantages prioritized sampling can use (ppo, grpo), or None."""
        return next((m for m in self.modules.values() if m.uses_advantages), None)

    @classmethod
    def default(cls) -> "LossSet":
        return cls(nn.ModuleDict({"ppo": PPOLoss(None, "ppo")}), {"ppo": 1.0})


def _output_shapes(policy, env_info) -> dict[str, tuple]:
    """The named outputs of `policy` on one empty observation, and their trailing shapes."""
    obs = torch.full((1, 2, env_info.num_tokens, 3), 0xFF, dtype=torch.uint8,
                     device=next(policy.parameters()).device)
    is_init = torch.ones(1, 2, dtype=torch.bool, device=obs.device)
    with torch.no_grad():
        out = policy.forward_sequence(obs, policy.initial_state(1, obs.device), is_init)
    return {k: tuple(v.shape[2:]) for k, v in out.items() if k != "state"}


def build_losses(specs: Optional[Iterable[Any]], env_info, policy, prio_alpha: float = 0.0,
                 teachers: Optional[dict[str, Any]] = None) -> LossSet:
    """The `LossSet` of `model.losses` for `policy` on `env_info`, checked before training (see module doc).
    `teachers` maps a loss name to a policy object to use as its teacher instead of `args.teacher_uri`."""
    specs = normalize_specs(specs)
    if specs == normalize_specs(None) and prio_alpha == 0:
        return LossSet.default()
    shapes = _output_shapes(policy, env_info) if any(
        set(LOSSES[s["name"]].needs) - {"logits", "values"} for s in specs) else {}
    modules, coefs = {}, {}
    for i, spec in enumerate(specs):
        cls, name = LOSSES[spec["name"]], spec["name"]
        missing = [k for k in cls.needs if k not in ("logits", "values") and k not in shapes]
        if missing:
            raise LossError(f"model.losses[{i}] ({name}): needs the policy output(s) {missing}, which "
                            f"{type(policy).__name__} does not give (it gives {sorted(shapes)})")
        extra: dict[str, Any] = {}
        params = inspect.signature(cls.__init__).parameters
        if "feature_dim" in params:
            extra["feature_dim"] = shapes["features"][-1]
        if "teacher" in params and teachers and name in teachers:
            extra["teacher"] = teachers[name]
        try:
            modules[name] = cls(env_info, name, **extra, **spec["args"])
        except TypeError as e:
            raise LossError(f"model.losses[{i}] ({name}): {e}") from None
        coefs[name] = spec["coef"]
    result = LossSet(nn.ModuleDict(modules), coefs)
    if prio_alpha > 0 and result.advantage_source is None:
        raise LossError(f"model.prio_alpha={prio_alpha} samples segments by |advantage|, but none of the losses "
                        f"({', '.join(modules)}) computes advantages: add ppo or grpo, or set prio_alpha: 0")
    return result
