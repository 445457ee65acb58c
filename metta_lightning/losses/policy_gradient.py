"""PPO (the default) and GRPO (group-relative advantages, no critic): the two losses that own advantages."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import ppo
from .base import Loss, LossBatch

__all__ = ["GRPOLoss", "PPOLoss"]


class PPOLoss(Loss):
    """The clipped PPO objective with value clipping and the entropy bonus, on the update's GAE / V-trace
    advantages (hyperparameters: `PPOModule`'s clip_coef, vf_coef, ...). Takes no args."""

    needs = ("logits", "values")
    uses_advantages = True

    def sampling_advantages(self, update) -> Tensor:
        return update.segment_advantages

    def forward(self, batch: LossBatch) -> tuple[Tensor, dict[str, Tensor]]:
        u, i, hp, out = batch.update, batch.index, batch.update.hp, batch.outputs
        loss, stats, ratio = ppo.ppo_loss(out["logits"], u.actions[i], u.old_log_prob[i], out["values"],
                                          u.old_values[i], u.returns[i], u.segment_advantages[i],
                                          hp.clip_coef, hp.vf_clip_coef, hp.ent_coef, hp.vf_coef, batch.weights)
        u.record_ratio(i, ratio)
        return loss, stats


class GRPOLoss(Loss):
    """GRPO: the clipped-ratio policy loss and entropy bonus (clip_coef, ent_coef) on group-relative
    advantages, no critic: each step's discounted return-to-go (to the episode's end or the rollout's last
    step, `gamma`, no bootstrap) normalised by the mean and std of the returns of its group. Use it instead
    of `ppo`.

    Args:
        group_size: rows (agents) per group, consecutive rows of the rollout (an env's agents are
            consecutive); None: every row of the rollout is one group (one game, one policy).
    """

    needs = ("logits",)
    uses_advantages = True

    def __init__(self, env_info, name: str, group_size: Optional[int] = None) -> None:
        super().__init__(env_info, name)
        if group_size is not None and group_size < 1:
            from .base import LossError

            raise LossError(f"losses.{name}.args.group_size must be >= 1, got {group_size}")
        self.group_size = group_size

    def group_ids(self, num_rows: int, device) -> Tensor:
        size = self.group_size or num_rows
        if num_rows % size:
            from .base import LossError

            raise LossError(f"losses.{self.loss_name}.args.group_size={size} does not divide the rollout's "
                            f"{num_rows} rows")
        return torch.arange(num_rows, device=device) // size

    def prepare(self, update) -> None:
        adv = ppo.group_relative_advantages(update._rewards, update._done, update.hp.gamma,
                                            self.group_ids(update.n, update._rewards.device))
        update.grpo_advantages = update._seg(adv)

    def sampling_advantages(self, update) -> Tensor:
        return update.grpo_advantages

    def forward(self, batch: LossBatch) -> tuple[Tensor, dict[str, Tensor]]:
        u, i, hp = batch.update, batch.index, batch.update.hp
        loss, stats, ratio = ppo.clipped_policy_loss(batch.outputs["logits"], u.actions[i], u.old_log_prob[i],
                                                     u.grpo_advantages[i], hp.clip_coef, hp.ent_coef, batch.weights)
        u.record_ratio(i, ratio)
        return loss, stats
