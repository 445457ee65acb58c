"""Self-supervised auxiliary losses with their own heads (trained with the policy, kept in the training state):
`contrastive` (InfoNCE over time) and `dynamics` (next reward and next inventory)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Loss, LossBatch, LossError, weighted_mean

__all__ = ["Contrastive", "Dynamics"]


class Contrastive(Loss):
    """InfoNCE between the projected encoder features at step t and t+k of the same segment: the row's own
    step t+k is the positive, the other rows' steps t+k of the minibatch are the negatives. Pairs across an
    episode start are left out.

    Args:
        k: steps ahead (must be below bptt_horizon).
        temperature: softmax temperature of the similarities.
        projection_dim: size of the projection head's output.
    """

    needs = ("features",)

    def __init__(self, env_info, name: str, feature_dim: int, k: int = 4, temperature: float = 0.1,
                 projection_dim: int = 64) -> None:
        super().__init__(env_info, name)
        if k < 1 or temperature <= 0 or projection_dim < 1:
            raise LossError(f"losses.{name}: k and projection_dim must be >= 1 and temperature > 0 "
                            f"(got {k}, {projection_dim}, {temperature})")
        self.k, self.temperature = k, temperature
        self.projection = nn.Sequential(nn.Linear(feature_dim, projection_dim), nn.ReLU(),
                                        nn.Linear(projection_dim, projection_dim))

    def forward(self, batch: LossBatch) -> tuple[Tensor, dict[str, Tensor]]:
        feats = batch.outputs["features"]
        b, t = feats.shape[:2]
        k = self.k
        if k >= t:
            raise LossError(f"losses.{self.loss_name}.args.k={k} must be below bptt_horizon={t}")
        z = F.normalize(self.projection(feats), dim=-1)
        anchors, positives = z[:, :-k].transpose(0, 1), z[:, k:].transpose(0, 1)  # [t-k, B, D]
        logits = anchors @ positives.transpose(1, 2) / self.temperature         # [t-k, B, B]
        labels = torch.arange(b, device=z.device).expand(t - k, b)
        ce = F.cross_entropy(logits.reshape(-1, b), labels.reshape(-1), reduction="none").view(t - k, b).T
        starts = batch.take("is_init").to(torch.int32).cumsum(1)                 # [B, t]
        valid = (starts[:, k:] == starts[:, :-k]).to(ce.dtype)                   # no episode start in (t, t+k]
        w = valid if batch.weights is None else valid * batch.weights.view(-1, 1)
        loss = (ce * w).sum() / valid.sum().clamp(min=1.0)
        with torch.no_grad():
            acc = ((logits.argmax(-1) == labels).to(ce.dtype).T * valid).sum() / valid.sum().clamp(min=1.0)
        return loss, {"infonce": loss.detach(), "accuracy": acc}


class Dynamics(Loss):
    """A world-model head on the policy's features and the action taken predicts the reward of that step and
    the agent's inventory at the next step (the inventory features, `inv:*`, at the observation's centre);
    squared errors, the inventory term only inside an episode.

    Args:
        hidden_size: width of the head's hidden layer.
        reward_coef: weight of the reward term.
        inventory_coef: weight of the next-inventory term (0: reward only).
    """

    needs = ("features",)

    def __init__(self, env_info, name: str, feature_dim: int, hidden_size: int = 128, reward_coef: float = 1.0,
                 inventory_coef: float = 1.0) -> None:
        super().__init__(env_info, name)
        if hidden_size < 1 or reward_coef < 0 or inventory_coef < 0:
            raise LossError(f"losses.{name}: hidden_size must be >= 1 and the coefficients >= 0")
        names = list(env_info.feature_names)
        inv = [i for i, f in enumerate(names) if f.startswith("inv:")]
        self.reward_coef, self.inventory_coef = reward_coef, inventory_coef if inv else 0.0
        self.num_actions = len(env_info.action_names)
        self.register_buffer("inv_ids", torch.tensor(inv, dtype=torch.int64), persistent=False)
        norms = torch.tensor([env_info.feature_normalizations[i] for i in inv], dtype=torch.float32)
        self.register_buffer("inv_norm", norms, persistent=False)
        self.center = ((env_info.obs_height // 2) << 4) | (env_info.obs_width // 2)
        self.head = nn.Sequential(nn.Linear(feature_dim + self.num_actions, hidden_size), nn.ReLU(),
                                  nn.Linear(hidden_size, 1 + len(inv)))

    def inventory(self, obs: Tensor) -> Tensor:
        """`[..., inv]`: the agent's own inventory (tokens at the window's centre), normalised."""
        at_center = obs[..., 0] == self.center                                     # [..., tokens]
        match = (obs[..., 1].long().unsqueeze(-1) == self.inv_ids) & at_center.unsqueeze(-1)
        return (match * obs[..., 2].float().unsqueeze(-1)).sum(-2) / self.inv_norm

    def forward(self, batch: LossBatch) -> tuple[Tensor, dict[str, Tensor]]:
        feats, actions = batch.outputs["features"], batch.take("actions")
        pred = self.head(torch.cat([feats, F.one_hot(actions, self.num_actions).to(feats.dtype)], dim=-1))
        reward = weighted_mean((pred[..., 0] - batch.take("rewards")) ** 2, batch.weights)
        stats = {"reward_mse": reward.detach()}
        loss = self.reward_coef * reward
        if self.inventory_coef > 0 and feats.shape[1] > 1:
            obs, is_init = batch.take("obs"), batch.take("is_init")
            target = self.inventory(obs[:, 1:])
            keep = (~is_init[:, 1:]).to(feats.dtype)
            if batch.weights is not None:
                keep = keep * batch.weights.view(-1, 1)
            err = ((pred[:, :-1, 1:] - target) ** 2).mean(-1)
            inv = (err * keep).sum() / (~is_init[:, 1:]).sum().clamp(min=1)
            stats["inventory_mse"] = inv.detach()
            loss = loss + self.inventory_coef * inv
        return loss, stats
