"""The loss interface: every training objective is a `Loss` listed with a coefficient in `model.losses`.

    model:
      losses:
        - {name: ppo}                                  # the default when the list is absent
        - {name: contrastive, coef: 0.1, args: {k: 4}}

A `Loss` is an `nn.Module` (its own heads are trained with the policy and kept in the training state).
`needs` names the policy outputs it reads (`models.base.policy_outputs`: logits, values, state, features);
`prepare(update)` runs once per rollout after the advantages; `forward(batch)` returns a scalar and its
metrics for one minibatch. `training.PPOUpdate.loss` sums `coef x loss` over the list (PPO alone: exactly
today's PPO loss) and logs each loss's metrics under `losses/<name>/*` (PPO's under `losses/*`, as before).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from tensordict import TensorDictBase
from torch import Tensor, nn

if TYPE_CHECKING:
    from ..training import PPOUpdate

__all__ = ["Loss", "LossBatch", "LossError"]


class LossError(ValueError):
    """A loss list, a loss argument or a teacher that cannot train; raised before training starts."""


@dataclass
class LossBatch:
    """What a loss sees of one minibatch.

    `update`: the rollout's `training.PPOUpdate` (segmented tensors `[segments, bptt, ...]`: `obs`,
    `is_init`, `actions`, `old_log_prob`, `old_values`, `returns`, `segment_advantages`, `rewards`,
    `dones`); `index`: the minibatch's segment indices into them; `outputs`: the policy's named outputs on
    those segments (`[B, bptt, ...]`); `weights`: per-segment importance weights `[B]` of prioritized
    sampling (None: uniform, weight 1); `agent_steps`: agent-steps trained before this rollout."""

    update: "PPOUpdate"
    index: Tensor
    outputs: TensorDictBase
    weights: Optional[Tensor]
    agent_steps: int

    def take(self, name: str) -> Tensor:
        """The update's segmented tensor `name`, rows of this minibatch."""
        return getattr(self.update, name)[self.index]


class Loss(nn.Module):
    """Base of every loss (see the module doc). Subclasses set `needs` and implement `forward`."""

    needs: tuple[str, ...] = ("logits",)
    uses_advantages: bool = False  # sampling priorities can come from this loss's advantages

    def __init__(self, env_info: Any, name: str) -> None:
        super().__init__()
        self.env_info, self.loss_name = env_info, name

    def prepare(self, update: "PPOUpdate") -> None:
        """Once per rollout, after `compute_advantages` (e.g. GRPO's group-relative advantages)."""

    def coefficient_scale(self, agent_steps: int) -> float:
        """Multiplies the configured coefficient (kickstarting anneals it to 0); 1 by default."""
        return 1.0

    def forward(self, batch: LossBatch) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError


def weighted_mean(x: Tensor, weights: Optional[Tensor]) -> Tensor:
    """Mean of `x` `[B, ...]`, each row weighted by `weights` `[B]` (None: the plain mean, bit for bit)."""
    if weights is None:
        return x.mean()
    return (x * weights.view(-1, *([1] * (x.dim() - 1)))).mean()
