"""The PPO update as phases, in loop order, composed by `PPOModule.training_step` (Lightning), by the
Python API's `TrainingComponents` and by the benchmark's hand loop alike:

    rollout = next(rollouts)                        # 1. collect: a `Rollout` (data.py's collector)
    update = PPOUpdate(policy, rollout, hp)
    update.compute_advantages()                     # 2. GAE with V-trace clipping over the rollout
    for mb in update.minibatches():                 # 3. whole BPTT segments, shuffled, update_epochs passes
        loss = update.loss(mb)                      # 4. policy forward + PPO loss (metrics kept)
        optimizer_step(policy, optimizer, loss)     # 5. backward, clip the gradient norm, step
    update.metrics()                                # mean losses over the minibatches

The math lives in `ppo.py`; this module holds the order and the bookkeeping between phases (the
importance ratios V-trace needs from one pass to the next, the early stop on `target_kl`), and says
what to call first when a phase is called out of order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch
from tensordict import TensorDictBase
from torch import Tensor

from . import ppo

__all__ = ["Minibatch", "PPOHyperparameters", "PPOUpdate", "PhaseOrderError", "Rollout", "final_values",
           "optimizer_step"]


class PhaseOrderError(RuntimeError):
    """A training phase called before the phase it needs; the message says what to call first."""


@dataclass
class Rollout:
    """One rollout and the facts collected with it.

    `data` is the collector's TensorDict `[N, T]` (see `metta_lightning.data`); `episodes` the stats of the
    episodes that finished while collecting it (`envs.MettaGrid.episode_stats`); `seconds` the wall time of
    the collection; `timings` the summed seconds of its phases (`timing/env_step`, `timing/policy_forward`);
    `batch_semantics` whether the run's sizes count per DDP rank or in total (`RolloutDataModule`).
    """

    data: TensorDictBase
    episodes: list = field(default_factory=list)
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)
    batch_semantics: str = "per_rank"

    @property
    def agent_steps(self) -> int:
        return int(self.data.batch_size.numel())


@dataclass(frozen=True)
class PPOHyperparameters:
    """What one PPO update needs (`PPOModule`'s arguments of the same names)."""

    clip_coef: float = 0.264
    ent_coef: float = 0.01
    vf_coef: float = 0.898
    vf_clip_coef: float = 0.1
    gamma: float = 0.977
    gae_lambda: float = 0.891
    vtrace_rho_clip: float = 1.0
    vtrace_c_clip: float = 1.0
    norm_adv: bool = True
    bptt_horizon: int = 64
    minibatch_size: int = 4096
    update_epochs: int = 1
    target_kl: Optional[float] = None


@dataclass
class Minibatch:
    """Segment indices into the update's `[segments, bptt]` tensors, and the pass they belong to."""

    index: Tensor
    epoch: int


@torch.no_grad()
def final_values(policy, td: TensorDictBase) -> Tensor:
    """`[N, T]`: V(true final obs) where an episode was truncated and at the last step; 0 elsewhere.
    Recurrent policies replay the step from the stored state, then evaluate the final obs."""
    truncated = td.get(("next", "truncated"))[..., 0]
    need = truncated.clone()
    need[:, -1] = True
    rows, steps = need.nonzero(as_tuple=True)
    out = torch.zeros(truncated.shape, device=truncated.device)
    obs, nxt = td.get("observation")[rows, steps], td.get(("next", "observation"))[rows, steps]
    if policy.is_recurrent:
        seq = torch.stack([obs, nxt], dim=1)
        is_init = torch.stack([td.get("is_init")[rows, steps, 0], torch.zeros_like(rows, dtype=torch.bool)], 1)
        out[rows, steps] = policy.forward_sequence(seq, td.get("recurrent_state")[rows, steps], is_init)["values"][:, 1]
    else:
        is_init = torch.ones(len(rows), 1, dtype=torch.bool, device=nxt.device)
        out[rows, steps] = policy.forward_sequence(nxt.unsqueeze(1), None, is_init)["values"][:, 0]
    return out


class PPOUpdate:
    """The PPO update of one rollout, phase by phase (see the module doc).

    Args:
        policy: the `models.Policy` being trained.
        rollout: the rollout (a `Rollout`, or its TensorDict `[N, T]`).
        hp: the hyperparameters.
        minibatch_size: agent-steps per minibatch on this process (default `hp.minibatch_size`; DDP with
            global batch semantics passes its share).
        all_reduce: sums a tensor over the processes of a DDP run (advantage statistics, the `target_kl`
            decision); None on one process.
        world_size: processes taking part (the `target_kl` decision uses the mean over them).
    """

    def __init__(self, policy, rollout: Rollout | TensorDictBase, hp: PPOHyperparameters,
                 minibatch_size: Optional[int] = None, all_reduce: Optional[Callable[[Tensor], Tensor]] = None,
                 world_size: int = 1) -> None:
        self.policy, self.hp = policy, hp
        self.td = rollout.data if isinstance(rollout, Rollout) else rollout
        self.n, self.t = self.td.batch_size
        self.minibatch_size = minibatch_size or hp.minibatch_size
        ppo.validate_sizes(self.n, self.t, hp.bptt_horizon, self.minibatch_size)
        self.all_reduce, self.world_size = all_reduce, world_size
        self.values = self.td.get("state_value")
        self.advantages: Optional[Tensor] = None
        self._ratio = torch.ones(self.n * self.t // hp.bptt_horizon, hp.bptt_horizon, device=self.values.device)
        self._epoch = -1
        self._stopped = False
        self._metric_sums: dict[str, Tensor] = {}
        self.updates = 0

    # -- 2. advantages ---------------------------------------------------------------------------
    def compute_advantages(self) -> Tensor:
        """GAE with V-trace clipping (plain GAE with the behaviour policy's ratios of 1) `[N, T]`; later
        passes recompute it with the ratios of the policy being trained."""
        td = self.td
        rewards, done = td.get(("next", "reward"))[..., 0], td.get(("next", "done"))[..., 0]
        self._terminated = td.get(("next", "terminated"))[..., 0]
        self._rewards, self._done = rewards, done
        self._next_values = ppo.next_values(self.values, final_values(self.policy, td), done)
        self._segments()
        self._set_advantages(None)
        return self.advantages

    def _set_advantages(self, ratio: Optional[Tensor]) -> None:
        hp = self.hp
        self.advantages = ppo.advantages(self._rewards, self.values, self._next_values, self._terminated, self._done,
                                         hp.gamma, hp.gae_lambda, ratio, hp.vtrace_rho_clip, hp.vtrace_c_clip)
        seg = self._seg
        self.returns = seg(self.advantages + self.values)
        adv = ppo.normalize_advantages(self.advantages, self.all_reduce) if hp.norm_adv else self.advantages
        self.segment_advantages = seg(adv)

    def _seg(self, x: Tensor) -> Tensor:
        return ppo.segment(x, self.hp.bptt_horizon)

    def _segments(self) -> None:
        """Whole BPTT segments, each starting from the state the actor had at that step."""
        td, seg = self.td, self._seg
        self.obs, self.is_init = seg(td.get("observation")), seg(td.get("is_init")[..., 0])
        self.actions, self.old_log_prob = seg(td.get("action")), seg(td.get("action_log_prob"))
        self.old_values = seg(self.values)
        self.state0 = seg(td.get("recurrent_state"))[:, 0] if self.policy.is_recurrent else None

    # -- 3. minibatches --------------------------------------------------------------------------
    def minibatches(self) -> Iterator[Minibatch]:
        """`update_epochs` passes over the rollout, each a fresh shuffle of its segments into minibatches;
        stops early once `target_kl` is exceeded (decided on the mean over processes)."""
        if self.advantages is None:
            raise PhaseOrderError("minibatches() needs the advantages: call compute_advantages() first")
        per_minibatch = self.minibatch_size // self.hp.bptt_horizon
        for epoch in range(self.hp.update_epochs):
            if epoch > 0:  # V-trace: importance ratios of the policy being trained vs the behaviour policy
                self._set_advantages(self._ratio.view(self.n, self.t))
            self._epoch = epoch
            for index in ppo.minibatch_segments(self.obs.shape[0], per_minibatch):
                yield Minibatch(index.to(self.values.device), epoch)
                if self._stopped:
                    return

    # -- 4. loss ---------------------------------------------------------------------------------
    def loss(self, mb: Minibatch) -> Tensor:
        """The PPO loss of one minibatch (its metrics are summed for `metrics()`)."""
        if self.advantages is None:
            raise PhaseOrderError("loss() needs the advantages: call compute_advantages(), then take "
                                  "minibatches from minibatches()")
        i, hp = mb.index, self.hp
        outputs = self.policy.forward_sequence(self.obs[i], self.state0[i] if self.state0 is not None else None,
                                               self.is_init[i])
        loss, stats, ratio = ppo.ppo_loss(outputs["logits"], self.actions[i], self.old_log_prob[i], outputs["values"],
                                          self.old_values[i], self.returns[i], self.segment_advantages[i],
                                          hp.clip_coef, hp.vf_clip_coef, hp.ent_coef, hp.vf_coef)
        self._ratio[i] = ratio
        self.updates += 1
        for k, v in stats.items():
            self._metric_sums[k] = self._metric_sums.get(k, 0.0) + v
        if hp.target_kl is not None:
            kl = stats["approx_kl"].detach().clone()
            if self.all_reduce is not None:
                kl = self.all_reduce(kl) / self.world_size
            self._stopped = bool(kl > hp.target_kl)
        return loss

    # -- results ---------------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """Mean of each loss metric over the minibatches trained, and the explained variance."""
        if not self.updates:
            raise PhaseOrderError("metrics() needs at least one loss(): iterate minibatches() first")
        out = {k: float(v) / self.updates for k, v in self._metric_sums.items()}
        out["explained_variance"] = float(ppo.explained_variance(self.values.flatten(),
                                                                 (self.advantages + self.values).flatten()))
        return out


def optimizer_step(policy, optimizer: torch.optim.Optimizer, loss: Tensor, max_grad_norm: float,
                   backward: Optional[Callable[[Tensor], None]] = None,
                   clip: Optional[Callable[[float], None]] = None) -> None:
    """Zero the gradients, backpropagate `loss`, clip the global gradient norm (<= 0: no clip) and step.

    `backward` and `clip` replace `loss.backward()` and `clip_grad_norm_` (Lightning's `manual_backward`
    and `clip_gradients`, which DDP and mixed precision need); the math is the same."""
    optimizer.zero_grad(set_to_none=True)
    (backward or Tensor.backward)(loss)
    if max_grad_norm > 0:
        if clip is not None:
            clip(max_grad_norm)
        else:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_grad_norm)
    optimizer.step()
