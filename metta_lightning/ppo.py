"""PPO as pure functions, in loop order (CleanRL style).

Rollouts are `[N, T]` (rows x time, time last). Per rollout:
  1. `next_values`: V(s_{t+1}) for every step: the next stored value inside an episode; at an
     episode end or the rollout's last step, the value of the true final observation
     (`final_values`), which `advantages` zeroes on termination (bootstrap on truncation only).
  2. `advantages`: GAE with V-trace clipping of the importance ratios (rho for the TD error,
     c for the trace); with ratios of 1 it is plain GAE.
  3. `normalize_advantages`: (A - mean) / std with batch (optionally global) statistics.
  4. per epoch, per minibatch of whole BPTT segments (`minibatch_segments`): `ppo_loss`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["advantages", "explained_variance", "minibatch_segments", "next_values", "normalize_advantages",
           "ppo_loss", "segment", "validate_sizes", "clipped_policy_loss", "returns_to_go",
           "group_relative_advantages", "segment_priorities", "importance_weights"]


def validate_sizes(num_rows: int, horizon: int, bptt: int, minibatch_size: int) -> None:
    """Raise ValueError, naming the numbers, unless the rollout `[num_rows, horizon]` splits into BPTT
    segments of `bptt` steps and minibatches of `minibatch_size` agent-steps (whole segments)."""
    batch = num_rows * horizon
    errors = []
    if bptt > horizon:
        errors.append(f"bptt_horizon={bptt} is longer than the rollout horizon={horizon}")
    elif horizon % bptt:
        errors.append(f"bptt_horizon={bptt} does not divide the rollout horizon={horizon}")
    if minibatch_size > batch:
        errors.append(f"minibatch_size={minibatch_size} is larger than the batch "
                      f"({num_rows} rows x horizon {horizon} = {batch} agent-steps)")
    elif batch % minibatch_size:
        errors.append(f"minibatch_size={minibatch_size} does not divide the batch "
                      f"({num_rows} rows x horizon {horizon} = {batch} agent-steps)")
    if minibatch_size % bptt:
        errors.append(f"minibatch_size={minibatch_size} is not a multiple of bptt_horizon={bptt} "
                      f"(minibatches hold whole segments)")
    if errors:
        raise ValueError("inconsistent PPO sizes: " + "; ".join(errors))


def next_values(values: Tensor, final_values: Tensor, done: Tensor) -> Tensor:
    """V(s_{t+1}) `[N, T]`: `values[:, t+1]` inside an episode; `final_values[:, t]` (the value of the
    true final observation) where the episode ended at t and at the last step."""
    nxt = torch.cat([values[:, 1:], final_values[:, -1:]], dim=1)
    return torch.where(done, final_values, nxt)


def advantages(rewards: Tensor, values: Tensor, next_vals: Tensor, terminated: Tensor, done: Tensor,
               gamma: float, gae_lambda: float, ratio: Tensor | None = None,
               rho_clip: float = 1.0, c_clip: float = 1.0) -> Tensor:
    """GAE with V-trace clipping, over `[N, T]`.

    delta_t = min(rho_t, rho_clip) * (r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t))
    A_t     = delta_t + gamma * lambda * min(rho_t, c_clip) * (1 - done_t) * A_{t+1}

    `ratio` = pi_current / pi_behaviour of the taken actions (None: all ones, i.e. plain GAE).
    Termination zeroes the bootstrap; truncation keeps it; both cut the trace.
    """
    not_term = (~terminated).to(values.dtype)
    not_done = (~done).to(values.dtype)
    deltas = rewards + gamma * not_term * next_vals - values
    if ratio is not None:
        deltas = ratio.clamp(max=rho_clip) * deltas
        trace = gamma * gae_lambda * ratio.clamp(max=c_clip) * not_done
    else:
        trace = gamma * gae_lambda * not_done
    adv = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    for t in range(values.shape[1] - 1, -1, -1):
        last = deltas[:, t] + trace[:, t] * last
        adv[:, t] = last
    return adv


def normalize_advantages(adv: Tensor, all_reduce: Callable[[Tensor], Tensor] | None = None,
                         eps: float = 1e-8) -> Tensor:
    """(A - mean) / (std + eps). With `all_reduce` (sums a tensor over ranks), the statistics are
    global: one all-reduce of [sum, sum of squares, count]."""
    stats = torch.stack([adv.sum(), (adv * adv).sum(), torch.tensor(float(adv.numel()), device=adv.device)])
    if all_reduce is not None:
        stats = all_reduce(stats)
    mean = stats[0] / stats[2]
    var = (stats[1] / stats[2] - mean * mean).clamp(min=0.0) * stats[2] / (stats[2] - 1).clamp(min=1.0)
    return (adv - mean) / (var.sqrt() + eps)


def segment(x: Tensor, bptt: int) -> Tensor:
    """`[N, T, ...]` -> `[N * T / bptt, bptt, ...]`: consecutive BPTT segments of each row."""
    n, t = x.shape[:2]
    return x.reshape(n * (t // bptt), bptt, *x.shape[2:])


def segment_priorities(segment_adv: Tensor, alpha: float) -> Tensor:
    """Sampling probabilities `[S]` of segments `[S, bptt]`: proportional to mean |advantage| ^ alpha
    (alpha 0: uniform)."""
    p = segment_adv.abs().mean(dim=1).pow(alpha) if alpha > 0 else torch.ones(segment_adv.shape[0],
                                                                               device=segment_adv.device)
    p = p + 1e-12 if bool((p.sum() <= 0)) else p  # every |advantage| 0: uniform
    return p / p.sum()


def importance_weights(probs: Tensor, index: Tensor, beta: float) -> Tensor:
    """(S * P(i)) ^ -beta for the drawn segments `index`: with beta 1, E_P[w f] equals the uniform mean of
    f exactly (the sampling bias undone); with alpha 0 (P = 1/S) every weight is 1."""
    return (probs.shape[0] * probs[index]).pow(-beta)


def minibatch_segments(num_segments: int, segments_per_minibatch: int,
                       generator: torch.Generator | None = None) -> list[Tensor]:
    """A random permutation of segment indices split into equal minibatches."""
    perm = torch.randperm(num_segments, generator=generator)
    return list(perm.split(segments_per_minibatch))


def ppo_loss(logits: Tensor, actions: Tensor, old_log_prob: Tensor, new_values: Tensor, old_values: Tensor,
             returns: Tensor, adv: Tensor, clip_coef: float, vf_clip_coef: float, ent_coef: float,
             vf_coef: float, weights: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """Clipped PPO objective on one minibatch (any matching shapes; logits have a trailing action dim).

    Returns (loss, detached stats, importance ratio). The value loss is clipped around the stored
    values (`vf_clip_coef` <= 0 disables that). `weights` `[B]` (prioritized sampling's importance
    weights, one per row) weight the policy and value terms; None is the plain mean."""
    policy_term, stats, ratio = clipped_policy_loss(logits, actions, old_log_prob, adv, clip_coef, ent_coef, weights)
    v_loss_unclipped = (new_values - returns) ** 2
    if vf_clip_coef > 0:
        v_clipped = old_values + (new_values - old_values).clamp(-vf_clip_coef, vf_clip_coef)
        v_loss = 0.5 * _mean(torch.max(v_loss_unclipped, (v_clipped - returns) ** 2), weights)
    else:
        v_loss = 0.5 * _mean(v_loss_unclipped, weights)
    stats["value_loss"] = v_loss.detach()
    return policy_term + vf_coef * v_loss, stats, ratio


def _mean(x: Tensor, weights: Tensor | None) -> Tensor:
    if weights is None:
        return x.mean()
    return (x * weights.view(-1, *([1] * (x.dim() - 1)))).mean()


def clipped_policy_loss(logits: Tensor, actions: Tensor, old_log_prob: Tensor, adv: Tensor, clip_coef: float,
                        ent_coef: float, weights: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """The clipped-ratio policy term and entropy bonus alone (no critic): GRPO's loss. Returns (loss,
    detached stats, importance ratio)."""
    log_probs = torch.log_softmax(logits, dim=-1)
    new_log_prob = log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1).mean()
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    pg_loss = _mean(torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_coef, 1 + clip_coef)), weights)
    with torch.no_grad():
        stats = {"policy_loss": pg_loss.detach(), "entropy": entropy.detach(),
                 "approx_kl": ((ratio - 1) - log_ratio).mean(),
                 "clipfrac": ((ratio - 1).abs() > clip_coef).float().mean()}
    return pg_loss - ent_coef * entropy, stats, ratio.detach()


def returns_to_go(rewards: Tensor, done: Tensor, gamma: float) -> Tensor:
    """`[N, T]`: discounted sum of the rewards from t to the episode's end or the rollout's last step
    (no bootstrap: no critic)."""
    out = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    not_done = (~done).to(rewards.dtype)
    for t in range(rewards.shape[1] - 1, -1, -1):
        last = rewards[:, t] + gamma * not_done[:, t] * last
        out[:, t] = last
    return out


def group_relative_advantages(rewards: Tensor, done: Tensor, gamma: float, groups: Tensor,
                              eps: float = 1e-8) -> Tensor:
    """GRPO's advantages `[N, T]`: each step's return-to-go (`returns_to_go`), normalised by the mean and
    standard deviation of the returns of its group (`groups` `[N]`: the group id of each row; rows of one
    group play the same game with the same policy)."""
    g = returns_to_go(rewards, done, gamma)
    adv = torch.empty_like(g)
    for gid in groups.unique():
        rows = groups == gid
        x = g[rows]
        std = x.std() if x.numel() > 1 else torch.zeros((), dtype=x.dtype, device=x.device)
        adv[rows] = (x - x.mean()) / (std + eps)
    return adv


def explained_variance(values: Tensor, returns: Tensor) -> Tensor:
    """1 - Var[returns - values] / Var[returns] (nan when returns are constant)."""
    var = returns.var()
    return 1 - (returns - values).var() / var if var > 0 else torch.tensor(float("nan"))
