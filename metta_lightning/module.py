"""`PPOModule`: PPO as a LightningModule with manual optimization.

`training_step` receives one rollout `[N, T]` from `RolloutDataModule`, computes advantages once,
then runs `update_epochs` x minibatches of whole BPTT segments, each segment starting from the
recurrent state the actor really had. Gradients go through `self.manual_backward` (which DDP
needs). Hyperparameters are stored as plain dicts so checkpoints load with `weights_only=True`.

Under DDP every rank trains on its own rollout with the same number of optimizer steps (equal per-rank
sizes; the `target_kl` early stop is decided on the mean over ranks), DDP averages the gradients, and
advantages are normalised with global statistics. Logged SPS, losses and episode stats are merged over
all ranks (one `all_gather_object` per rollout), so every rank logs the same numbers.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Literal

import lightning as L
import torch
import torch.distributed as dist
from tensordict import TensorDictBase

from envs.info import EnvInfo
from envs.torchrl_env import summarize_episode_stats
from models.base import Policy, build_policy, policy_spec

from . import ppo

__all__ = ["PPOModule"]


class PPOModule(L.LightningModule):
    """PPO on rollouts of a `models.Policy` (defaults: the original's trainer).

    Args:
        policy: the policy class and its init args (built as `cls(env_info, **init_args)`); default `models.Fast`.
        env_info: env-derived sizes and names; linked from the data module by the CLI.
        learning_rate: Adam learning rate.
        adam_eps: Adam epsilon.
        adam_betas: Adam betas.
        clip_coef: PPO policy ratio clip.
        ent_coef: entropy bonus coefficient.
        vf_coef: value loss coefficient.
        vf_clip_coef: value clip around the stored values (<= 0: no clipping).
        gamma: discount.
        gae_lambda: GAE lambda.
        vtrace_rho_clip: V-trace clip of the importance ratio in the TD error.
        vtrace_c_clip: V-trace clip of the importance ratio in the trace.
        norm_adv: normalise advantages (global statistics across ranks).
        max_grad_norm: gradient norm clip (<= 0: none).
        bptt_horizon: steps per training segment (must divide the rollout horizon).
        minibatch_size: agent-steps per minibatch (whole segments; must divide the rollout); per rank under
            DDP unless `data.batch_semantics` is "global" (then the total over ranks).
        update_epochs: passes over each rollout.
        target_kl: stop a rollout's epochs early when approx_kl exceeds this (None: never).
        lr_schedule: "constant", or anneal the learning rate from `learning_rate` to `lr_min` ("linear" or
            "cosine") over `lr_schedule_agent_steps`, then hold it. The rate is a function of the agent-step
            counter, which checkpoints keep, so a resumed run continues the schedule where it was.
        lr_schedule_agent_steps: agent-steps (all ranks) to anneal over; default: the run's length,
            trainer.max_epochs x data.rollouts_per_epoch x agent-steps per rollout.
        lr_min: the learning rate at the end of the schedule.
    """

    def __init__(
        self,
        policy: Callable[[EnvInfo], Policy] | None = None,
        env_info: EnvInfo | None = None,
        learning_rate: float = 0.00115,
        adam_eps: float = 3.19e-7,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        clip_coef: float = 0.264,
        ent_coef: float = 0.01,
        vf_coef: float = 0.898,
        vf_clip_coef: float = 0.1,
        gamma: float = 0.977,
        gae_lambda: float = 0.891,
        vtrace_rho_clip: float = 1.0,
        vtrace_c_clip: float = 1.0,
        norm_adv: bool = True,
        max_grad_norm: float = 0.5,
        bptt_horizon: int = 64,
        minibatch_size: int = 4096,
        update_epochs: int = 1,
        target_kl: float | None = None,
        lr_schedule: Literal["constant", "linear", "cosine"] = "constant",
        lr_schedule_agent_steps: int | None = None,
        lr_min: float = 0.0,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        if env_info is None:
            raise ValueError("PPOModule needs env_info (the CLI links it from data.env_info)")
        if isinstance(env_info, dict):
            env_info = EnvInfo.model_validate(env_info)
        self.env_info = env_info
        if policy is None:
            from models.fast import Fast

            policy = Fast
        self.policy: Policy = build_policy(policy, env_info) if isinstance(policy, dict) else policy(env_info)
        for name, value in (("bptt_horizon", bptt_horizon), ("minibatch_size", minibatch_size),
                            ("update_epochs", update_epochs)):
            if value < 1:
                raise ValueError(f"model.{name} must be >= 1, got {value}")
        self.learning_rate, self.adam_eps, self.adam_betas = learning_rate, adam_eps, tuple(adam_betas)
        self.clip_coef, self.ent_coef, self.vf_coef, self.vf_clip_coef = clip_coef, ent_coef, vf_coef, vf_clip_coef
        self.gamma, self.gae_lambda = gamma, gae_lambda
        self.vtrace_rho_clip, self.vtrace_c_clip = vtrace_rho_clip, vtrace_c_clip
        self.norm_adv, self.max_grad_norm = norm_adv, max_grad_norm
        self.bptt_horizon, self.minibatch_size, self.update_epochs = bptt_horizon, minibatch_size, update_epochs
        self.target_kl = target_kl
        if lr_schedule not in ("constant", "linear", "cosine"):
            raise ValueError(f"model.lr_schedule must be constant, linear or cosine, got {lr_schedule!r}")
        if lr_schedule_agent_steps is not None and lr_schedule_agent_steps < 1:
            raise ValueError(f"model.lr_schedule_agent_steps must be >= 1, got {lr_schedule_agent_steps}")
        self.lr_schedule, self.lr_schedule_agent_steps, self.lr_min = lr_schedule, lr_schedule_agent_steps, lr_min
        self._lr_span: int | None = lr_schedule_agent_steps
        self.agent_steps = 0
        self._batch_semantics = "per_rank"  # from the data module at fit start
        self._rank_minibatch = minibatch_size  # minibatch_size / world_size with global batch semantics
        self._last_step_time: float | None = None
        # Plain dicts only: checkpoints are loaded with weights_only=True.
        self.save_hyperparameters({
            "policy": policy_spec(self.policy), "env_info": env_info.model_dump(),
            "learning_rate": learning_rate, "adam_eps": adam_eps, "adam_betas": list(adam_betas),
            "clip_coef": clip_coef, "ent_coef": ent_coef, "vf_coef": vf_coef, "vf_clip_coef": vf_clip_coef,
            "gamma": gamma, "gae_lambda": gae_lambda, "vtrace_rho_clip": vtrace_rho_clip,
            "vtrace_c_clip": vtrace_c_clip, "norm_adv": norm_adv, "max_grad_norm": max_grad_norm,
            "bptt_horizon": bptt_horizon, "minibatch_size": minibatch_size, "update_epochs": update_epochs,
            "target_kl": target_kl, "lr_schedule": lr_schedule,
            "lr_schedule_agent_steps": lr_schedule_agent_steps, "lr_min": lr_min})

    # -- setup -------------------------------------------------------------------------------------
    def configure_optimizers(self):
        return torch.optim.Adam(self.policy.parameters(), lr=self.learning_rate, eps=self.adam_eps,
                                betas=self.adam_betas)

    def minibatch_per_rank(self, world_size: int = 1, batch_semantics: str = "per_rank") -> int:
        """Agent-steps per minibatch on each rank (see `RolloutDataModule.batch_semantics`)."""
        if batch_semantics != "global":
            return self.minibatch_size
        if self.minibatch_size % world_size:
            raise ValueError(f"model.minibatch_size={self.minibatch_size} is not divisible by the world size "
                             f"{world_size} (data.batch_semantics=global splits each minibatch among the ranks)")
        return self.minibatch_size // world_size

    def validate_sizes(self, num_rows: int, horizon: int, world_size: int = 1,
                       batch_semantics: str = "per_rank") -> None:
        """Raise ValueError naming the numbers unless (per-rank) rollouts `[num_rows, horizon]` fit
        bptt/minibatch; with world_size > 1 the message says the sizes are per rank."""
        try:
            ppo.validate_sizes(num_rows, horizon, self.bptt_horizon,
                               self.minibatch_per_rank(world_size, batch_semantics))
        except ValueError as e:
            if world_size > 1:
                raise ValueError(f"{e} (sizes per rank: world size {world_size}, "
                                 f"data.batch_semantics={batch_semantics})") from None
            raise

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        world, semantics = self.trainer.world_size, getattr(dm, "batch_semantics", "per_rank")
        if dm is not None and hasattr(dm, "num_rows") and hasattr(dm, "horizon"):
            self.validate_sizes(dm.num_rows, dm.horizon, world, semantics)
        self._batch_semantics, self._rank_minibatch = semantics, self.minibatch_per_rank(world, semantics)
        self._last_step_time = None
        if self.lr_schedule != "constant" and self.lr_schedule_agent_steps is None:
            epochs = self.trainer.max_epochs
            if dm is None or epochs is None or epochs < 0:
                raise ValueError(f"model.lr_schedule={self.lr_schedule} needs model.lr_schedule_agent_steps "
                                 "or a finite trainer.max_epochs")
            self._lr_span = epochs * dm.rollouts_per_epoch * dm.num_rows * dm.horizon * world

    def learning_rate_at(self, agent_steps: int) -> float:
        """The scheduled learning rate after `agent_steps` agent-steps."""
        if self.lr_schedule == "constant" or not self._lr_span:
            return self.learning_rate
        frac = min(agent_steps / self._lr_span, 1.0)
        shape = 1.0 - frac if self.lr_schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))
        return self.lr_min + (self.learning_rate - self.lr_min) * shape

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["agent_steps"] = int(self.agent_steps)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.agent_steps = int(checkpoint.get("agent_steps", 0))

    # -- PPO ---------------------------------------------------------------------------------------
    def _all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        return self.trainer.strategy.reduce(t, reduce_op="sum") if self.trainer.world_size > 1 else t

    def _gather(self, obj: Any) -> list[Any]:
        """`obj` of every rank, in rank order (every rank must call this, in the same order)."""
        if self.trainer.world_size == 1 or not dist.is_initialized():
            return [obj]
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out

    @torch.no_grad()
    def final_values(self, td: TensorDictBase) -> torch.Tensor:
        """`[N, T]`: V(true final obs) where an episode was truncated and at the last step; 0 elsewhere.
        Recurrent policies replay the step from the stored state, then evaluate the final obs."""
        truncated = td.get(("next", "truncated"))[..., 0]
        need = truncated.clone()
        need[:, -1] = True
        rows, steps = need.nonzero(as_tuple=True)
        out = torch.zeros(truncated.shape, device=truncated.device)
        obs, nxt = td.get("observation")[rows, steps], td.get(("next", "observation"))[rows, steps]
        if self.policy.is_recurrent:
            seq = torch.stack([obs, nxt], dim=1)
            is_init = torch.stack([td.get("is_init")[rows, steps, 0], torch.zeros_like(rows, dtype=torch.bool)], 1)
            _, values, _ = self.policy.forward_sequence(seq, td.get("recurrent_state")[rows, steps], is_init)
            out[rows, steps] = values[:, 1]
        else:
            _, values, _ = self.policy.forward_sequence(nxt.unsqueeze(1), None,
                                                        torch.ones(len(rows), 1, dtype=torch.bool, device=nxt.device))
            out[rows, steps] = values[:, 0]
        return out

    def training_step(self, td: TensorDictBase, batch_idx: int) -> None:
        now = time.perf_counter()
        n, t = td.batch_size
        self.validate_sizes(n, t, self.trainer.world_size, self._batch_semantics)
        opt = self.optimizers()
        lr = self.learning_rate_at(self.agent_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        rewards = td.get(("next", "reward"))[..., 0]
        terminated = td.get(("next", "terminated"))[..., 0]
        done = td.get(("next", "done"))[..., 0]
        values = td.get("state_value")
        old_log_prob = td.get("action_log_prob")
        next_vals = ppo.next_values(values, self.final_values(td), done)

        def compute_advantages(ratio):
            return ppo.advantages(rewards, values, next_vals, terminated, done, self.gamma, self.gae_lambda,
                                  ratio, self.vtrace_rho_clip, self.vtrace_c_clip)

        adv = compute_advantages(None)
        # Whole BPTT segments, each starting from the state the actor had at that step.
        bptt = self.bptt_horizon
        seg = lambda x: ppo.segment(x, bptt)  # noqa: E731
        obs, is_init = seg(td.get("observation")), seg(td.get("is_init")[..., 0])
        actions, old_lp, old_v = seg(td.get("action")), seg(old_log_prob), seg(values)
        state0 = seg(td.get("recurrent_state"))[:, 0] if self.policy.is_recurrent else None
        num_segments = obs.shape[0]
        ratio_buf = torch.ones(num_segments, bptt, device=values.device)
        stats_sum: dict[str, torch.Tensor] = {}
        updates = 0
        for epoch in range(self.update_epochs):
            if epoch > 0:  # V-trace: importance ratios of the current policy vs the behaviour policy
                adv = compute_advantages(ratio_buf.view(n, t))
            returns = seg(adv + values)
            adv_seg = seg(ppo.normalize_advantages(adv, self._all_reduce) if self.norm_adv else adv)
            stop = False
            for idx in ppo.minibatch_segments(num_segments, self._rank_minibatch // bptt):
                idx = idx.to(values.device)
                logits, new_v, _ = self.policy.forward_sequence(
                    obs[idx], state0[idx] if state0 is not None else None, is_init[idx])
                loss, stats, ratio = ppo.ppo_loss(logits, actions[idx], old_lp[idx], new_v, old_v[idx],
                                                  returns[idx], adv_seg[idx], self.clip_coef, self.vf_clip_coef,
                                                  self.ent_coef, self.vf_coef)
                opt.zero_grad(set_to_none=True)
                self.manual_backward(loss)
                if self.max_grad_norm > 0:
                    self.clip_gradients(opt, gradient_clip_val=self.max_grad_norm, gradient_clip_algorithm="norm")
                opt.step()
                ratio_buf[idx] = ratio
                updates += 1
                for k, v in stats.items():
                    stats_sum[k] = stats_sum.get(k, 0.0) + v
                # Decided on the mean over ranks: a rank stopping alone would leave the others waiting in
                # the next gradient all-reduce forever.
                if self.target_kl is not None and \
                        self._all_reduce(stats["approx_kl"].detach().clone()) / self.trainer.world_size > self.target_kl:
                    stop = True
                    break
            if stop:
                break

        frames = n * t
        train_s = time.perf_counter() - now
        dm = getattr(self.trainer, "datamodule", None)
        rollout_s = float(getattr(dm, "last_rollout_seconds", 0.0) or 0.0)
        episodes = dm.pop_episode_stats() if dm is not None and hasattr(dm, "pop_episode_stats") else []
        iteration_s = None if self._last_step_time is None else now + train_s - self._last_step_time
        self._last_step_time = now + train_s
        # One gather of every rank's numbers; all ranks then log the same merged values.
        ranks = self._gather({
            "frames": frames, "rollout_s": rollout_s, "train_s": train_s, "iteration_s": iteration_s,
            "episodes": len(episodes),
            "episode_means": summarize_episode_stats(episodes),
            "losses": {k: float(v) / updates for k, v in stats_sum.items()},
            "explained_variance": float(ppo.explained_variance(values.flatten(), (adv + values).flatten()))})
        total_frames = sum(r["frames"] for r in ranks)
        self.agent_steps += total_frames
        logs = {f"losses/{k}": sum(r["losses"][k] for r in ranks) / len(ranks) for k in ranks[0]["losses"]}
        logs["losses/explained_variance"] = sum(r["explained_variance"] for r in ranks) / len(ranks)
        logs["overview/agent_steps"] = float(self.agent_steps)
        logs["overview/learning_rate"] = lr
        if iteration_s is not None:  # whole iteration (collection + update + glue) of the slowest rank
            logs["overview/sps"] = total_frames / max(r["iteration_s"] for r in ranks)
        if all(r["rollout_s"] > 0 for r in ranks):  # ranks collect concurrently: their rates add up
            logs["overview/collect_sps"] = sum(r["frames"] / r["rollout_s"] for r in ranks)
        logs["overview/train_sps"] = sum(r["frames"] / r["train_s"] for r in ranks)
        logs["timing/rollout"], logs["timing/update"] = rollout_s, train_s  # this rank's seconds in this iteration
        actor = getattr(dm, "actor", None)
        if actor is not None and hasattr(actor, "timer"):
            logs.update(actor.timer.pop())  # timing/env_step, timing/policy_forward (this rank, summed over the rollout)
        logs.update(merge_episode_means([(r["episodes"], r["episode_means"]) for r in ranks]))
        self.log_dict({k: float(v) for k, v in logs.items()}, on_step=True, on_epoch=False, prog_bar=False,
                      batch_size=frames)
        if "overview/reward" in logs:
            self.log("reward", logs["overview/reward"], prog_bar=True, on_step=True, on_epoch=False,
                     logger=False, batch_size=frames)


def merge_episode_means(parts: list[tuple[int, dict[str, float]]]) -> dict[str, float]:
    """Means over all episodes from per-rank (episode count, per-key mean over that rank's episodes).

    Weighted by the counts; a key missing on a rank counts as 0 for its episodes, as it does within a rank
    (`summarize_episode_stats` divides every key's sum by the number of episodes)."""
    total = sum(n for n, _ in parts)
    if total == 0:
        return {}
    sums: dict[str, float] = {}
    for n, means in parts:
        for k, v in means.items():
            sums[k] = sums.get(k, 0.0) + v * n
    return {k: v / total for k, v in sums.items()}
