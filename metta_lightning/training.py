"""The PPO update as phases, in loop order, composed by `PPOModule.training_step` (Lightning), by the
Python API's `TrainingComponents` and by the benchmark's hand loop alike:

    rollout = next(rollouts)                        # 1. collect: a `Rollout` (data.py's collector)
    update = PPOUpdate(policy, rollout, hp)
    update.compute_advantages()                     # 2. GAE with V-trace clipping over the rollout
    for mb in update.minibatches():                 # 3. whole BPTT segments, shuffled, update_epochs passes
        loss = update.loss(mb)                      # 4. policy forward + the configured losses (metrics kept)
        optimizer_step(policy, optimizer, loss)     # 5. backward, clip the gradient norm, step
    update.metrics()                                # mean losses over the minibatches

The math lives in `ppo.py`; this module holds the order and the bookkeeping between phases (the
importance ratios V-trace needs from one pass to the next, the early stop on `target_kl`), and says
what to call first when a phase is called out of order.

The loss of a minibatch is the sum of `coef x loss` over the configured `losses.LossSet` (default: PPO
alone, which is exactly the PPO loss). With `prio_alpha > 0` the segments of each pass are drawn with
probability proportional to |advantage|^prio_alpha (with replacement) and every loss is weighted by the
importance weights (S * P)^-beta; `prio_alpha = 0` keeps the uniform shuffle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence, Union

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
    prio_alpha: float = 0.0
    prio_beta0: float = 0.6


@dataclass
class Minibatch:
    """Segment indices into the update's `[segments, bptt]` tensors, the pass they belong to, and the
    importance weights `[B]` of prioritized sampling (None: uniform)."""

    index: Tensor
    epoch: int
    weights: Optional[Tensor] = None


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
        out[rows, steps] = policy.forward_sequence(seq, td.get("recurrent_state")[rows, steps],
                                                   is_init)["values"][:, 1].float()
    else:
        is_init = torch.ones(len(rows), 1, dtype=torch.bool, device=nxt.device)
        out[rows, steps] = policy.forward_sequence(nxt.unsqueeze(1), None, is_init)["values"][:, 0].float()
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
        losses: the configured `losses.LossSet` (None: PPO alone).
        agent_steps: agent-steps trained before this rollout (loss coefficient schedules).
        prio_beta: importance-weight exponent of prioritized sampling for this rollout (None: `hp.prio_beta0`).
    """

    def __init__(self, policy, rollout: Rollout | TensorDictBase, hp: PPOHyperparameters,
                 minibatch_size: Optional[int] = None, all_reduce: Optional[Callable[[Tensor], Tensor]] = None,
                 world_size: int = 1, losses=None, agent_steps: int = 0, prio_beta: Optional[float] = None) -> None:
        from .losses import LossSet

        self.policy, self.hp = policy, hp
        self.losses = losses if losses is not None else LossSet.default()
        self.agent_steps = agent_steps
        self.prio_beta = hp.prio_beta0 if prio_beta is None else prio_beta
        if hp.prio_alpha > 0 and self.losses.advantage_source is None:
            raise ValueError(f"prio_alpha={hp.prio_alpha} needs a loss with advantages (ppo or grpo)")
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
        for _, loss, _ in self.losses.items():
            loss.prepare(self)
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
        self.rewards, self.dones = seg(self._rewards), seg(self._done)
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
            if self.hp.prio_alpha > 0:
                batches = self._prioritized(per_minibatch, epoch)
            else:
                batches = (Minibatch(index.to(self.values.device), epoch)
                           for index in ppo.minibatch_segments(self.obs.shape[0], per_minibatch))
            for mb in batches:
                yield mb
                if self._stopped:
                    return

    def _prioritized(self, per_minibatch: int, epoch: int) -> Iterator[Minibatch]:
        """As many minibatches as a uniform pass, segments drawn with replacement by priority."""
        adv = self.losses.advantage_source.sampling_advantages(self).detach()
        probs = ppo.segment_priorities(adv, self.hp.prio_alpha)
        num = probs.shape[0]
        drawn = torch.multinomial(probs.cpu(), num, replacement=True).to(probs.device)
        for index in drawn.split(per_minibatch):
            yield Minibatch(index, epoch, ppo.importance_weights(probs, index, self.prio_beta))

    def record_ratio(self, index: Tensor, ratio: Tensor) -> None:
        """The importance ratios of the trained policy on these segments (V-trace in the next pass)."""
        self._ratio[index] = ratio

    # -- 4. loss ---------------------------------------------------------------------------------
    def loss(self, mb: Minibatch) -> Tensor:
        """The sum of coef x loss over the configured losses on one minibatch (PPO alone by default); their
        metrics are summed for `metrics()` (PPO's as `policy_loss`, ..., the others' as `<name>/<metric>`)."""
        if self.advantages is None:
            raise PhaseOrderError("loss() needs the advantages: call compute_advantages(), then take "
                                  "minibatches from minibatches()")
        from .losses import LossBatch

        i, hp = mb.index, self.hp
        outputs = self.policy.forward_sequence(self.obs[i], self.state0[i] if self.state0 is not None else None,
                                               self.is_init[i])
        # The losses compute in float32 even when the policy ran under bf16 autocast (`trainer.precision`).
        outputs = outputs.apply(lambda t: t.float() if t.is_floating_point() else t)
        batch = LossBatch(self, i, outputs, mb.weights, self.agent_steps)
        loss: Optional[Tensor] = None
        kl_stat = None
        for name, module, coef in self.losses.items():
            scale = coef * module.coefficient_scale(self.agent_steps)
            prefix = "" if name == "ppo" else f"{name}/"
            if name != "ppo":
                self._metric_sums[f"{prefix}coef"] = self._metric_sums.get(f"{prefix}coef", 0.0) + scale
            if scale == 0.0:
                continue  # annealed (or set) to zero: skip its forward
            value, stats = module(batch)
            term = value if scale == 1.0 else scale * value
            loss = term if loss is None else loss + term
            for k, v in stats.items():
                self._metric_sums[prefix + k] = self._metric_sums.get(prefix + k, 0.0) + v
            if kl_stat is None and "approx_kl" in stats:
                kl_stat = stats["approx_kl"]
        if loss is None:  # every coefficient is 0
            loss = outputs["logits"].sum() * 0.0
        self.updates += 1
        if hp.target_kl is not None and kl_stat is not None:
            kl = kl_stat.detach().clone()
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


def optimizer_step(policy, optimizer: Union[torch.optim.Optimizer, Sequence[torch.optim.Optimizer]], loss: Tensor,
                   max_grad_norm: float, backward: Optional[Callable[[Tensor], None]] = None,
                   clip: Optional[Callable[[float], None]] = None) -> None:
    """Zero the gradients, backpropagate `loss`, clip the global gradient norm (<= 0: no clip) and step.

    `optimizer` may be several (Muon + Adam): the norm is clipped over all their parameters together.
    `backward` and `clip` replace `loss.backward()` and `clip_grad_norm_` (Lightning's `manual_backward`
    and `clip_gradients`, which DDP and mixed precision need); the math is the same."""
    optimizers = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    (backward or Tensor.backward)(loss)
    if max_grad_norm > 0:
        if clip is not None:
            clip(max_grad_norm)
        else:
            torch.nn.utils.clip_grad_norm_([p for opt in optimizers for g in opt.param_groups for p in g["params"]],
                                           max_grad_norm)
    for opt in optimizers:
        opt.step()
