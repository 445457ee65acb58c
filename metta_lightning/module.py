"""`PPOModule`: PPO as a LightningModule with manual optimization.

`training_step` receives one `Rollout` (`[N, T]`, with its episode stats and timings) from
`RolloutDataModule` and composes the phases of `metta_lightning.training`: advantages once, then
`update_epochs` x minibatches of whole BPTT segments, each segment starting from the recurrent state the
actor really had, each followed by an optimizer step. Gradients go through `self.manual_backward` (which
DDP needs). Hyperparameters are stored as plain dicts so checkpoints load with `weights_only=True`.

Under DDP every rank trains on its own rollout with the same number of optimizer steps (equal per-rank
sizes; the `target_kl` early stop is decided on the mean over ranks), DDP averages the gradients, and
advantages are normalised with global statistics. Logged SPS, losses and episode stats are merged over
all ranks (one `all_gather_object` per rollout), so every rank logs the same numbers.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Literal

import lightning as L
import numpy as np
import torch
import torch.distributed as dist

from envs.info import EnvInfo
from models.base import Policy, build_policy, policy_spec

from . import ppo
from .losses import build_losses, normalize_specs
from .optimizers import OPTIMIZER_TYPES, build_optimizers
from .training import PPOHyperparameters, PPOUpdate, Rollout, optimizer_step

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
        losses: the training losses and their coefficients, a list of `{name, coef, args}` (see
            `metta_lightning.losses`: ppo, grpo, kickstarter, action_supervised, contrastive, dynamics); None:
            PPO alone. Their heads are trained and kept in the training state; teachers are reloaded from
            their URIs.
        prio_alpha: prioritized segment sampling: probability proportional to mean |advantage|^prio_alpha
            (0: the uniform shuffle).
        prio_beta0: importance-weight exponent at the start, annealed linearly to 1 over
            `prio_beta_agent_steps`.
        prio_beta_agent_steps: agent-steps (all ranks) over which the exponent reaches 1; default: the run's
            length (as for `lr_schedule_agent_steps`; set it when a run is resumed with another max_epochs).
        optimizer_type: "adam", "adamw", or "muon" (Muon on the hidden 2-D weights, Adam for the rest;
            `metta_lightning.optimizers`).
        weight_decay: weight decay of the optimizers.
        muon_momentum: Muon's momentum.
        muon_exclude: name fragments of 2-D weights kept on Adam under Muon (None: embed, bilinear, head).
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
        losses: list[dict[str, Any]] | None = None,
        prio_alpha: float = 0.0,
        prio_beta0: float = 0.6,
        prio_beta_agent_steps: int | None = None,
        optimizer_type: Literal["adam", "adamw", "muon"] = "adam",
        weight_decay: float = 0.0,
        muon_momentum: float = 0.95,
        muon_exclude: list[str] | None = None,
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
        if prio_alpha < 0 or not 0 <= prio_beta0 <= 1:
            raise ValueError(f"model.prio_alpha must be >= 0 and model.prio_beta0 in [0, 1], got {prio_alpha}, "
                             f"{prio_beta0}")
        if optimizer_type not in OPTIMIZER_TYPES:
            raise ValueError(f"model.optimizer_type must be one of {', '.join(OPTIMIZER_TYPES)}, got "
                             f"{optimizer_type!r}")
        if weight_decay < 0:
            raise ValueError(f"model.weight_decay must be >= 0, got {weight_decay}")
        if prio_beta_agent_steps is not None and prio_beta_agent_steps < 1:
            raise ValueError(f"model.prio_beta_agent_steps must be >= 1, got {prio_beta_agent_steps}")
        self.prio_alpha, self.prio_beta0, self.prio_beta_agent_steps = prio_alpha, prio_beta0, prio_beta_agent_steps
        self.optimizer_type, self.weight_decay, self.muon_momentum = optimizer_type, weight_decay, muon_momentum
        self.muon_exclude = None if muon_exclude is None else list(muon_exclude)
        self.loss_specs = normalize_specs(losses)
        self.loss_set = build_losses(self.loss_specs, env_info, self.policy, prio_alpha)
        self.loss_modules = self.loss_set.modules  # their heads: trained, and saved in the training state
        self._run_span: int | None = prio_beta_agent_steps
        self.agent_steps = 0
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
            "lr_schedule_agent_steps": lr_schedule_agent_steps, "lr_min": lr_min,
            "losses": None if losses is None else self.loss_specs, "prio_alpha": prio_alpha,
            "prio_beta0": prio_beta0, "prio_beta_agent_steps": prio_beta_agent_steps, "optimizer_type": optimizer_type, "weight_decay": weight_decay,
            "muon_momentum": muon_momentum, "muon_exclude": self.muon_exclude})

    # -- setup -------------------------------------------------------------------------------------
    def configure_optimizers(self):
        opts = build_optimizers(self.policy, self.loss_modules.parameters(), self.optimizer_type, self.learning_rate,
                                self.adam_betas, self.adam_eps, self.weight_decay, self.env_info.num_actions,
                                self.muon_momentum, self.muon_exclude)
        return opts[0] if len(opts) == 1 else opts

    def prio_beta_at(self, agent_steps: int) -> float:
        """The importance-weight exponent after `agent_steps`: prio_beta0 rising linearly to 1 over the run
        (held at prio_beta0 when the run's length is unknown)."""
        if not self._run_span:
            return self.prio_beta0
        return self.prio_beta0 + (1.0 - self.prio_beta0) * min(agent_steps / self._run_span, 1.0)

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
        self._last_step_time = None
        if self.lr_schedule != "constant" and self.lr_schedule_agent_steps is None:
            epochs = self.trainer.max_epochs
            if epochs is None or epochs < 0:
                raise ValueError(f"model.lr_schedule={self.lr_schedule} needs model.lr_schedule_agent_steps "
                                 "or a finite trainer.max_epochs")
            self._lr_span = None  # the run's length, once the first rollout tells its size

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

    def hyperparameters(self) -> PPOHyperparameters:
        """This module's PPO hyperparameters, for `training.PPOUpdate`."""
        return PPOHyperparameters(**{f.name: getattr(self, f.name) for f in dataclasses.fields(PPOHyperparameters)})

    def training_step(self, rollout: Rollout, batch_idx: int) -> None:
        now = time.perf_counter()
        world = self.trainer.world_size
        n, t = rollout.data.batch_size
        self.validate_sizes(n, t, world, rollout.batch_semantics)
        if self.lr_schedule != "constant" and self._lr_span is None:
            self._lr_span = self.trainer.max_epochs * self.trainer.num_training_batches * rollout.agent_steps * world
        if self._run_span is None and self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            self._run_span = self.trainer.max_epochs * self.trainer.num_training_batches * rollout.agent_steps * world
        opt = self.optimizers()
        opts = opt if isinstance(opt, list) else [opt]
        lr = self.learning_rate_at(self.agent_steps)
        for o in opts:
            for group in o.param_groups:
                group["lr"] = lr
        update = PPOUpdate(self.policy, rollout, self.hyperparameters(),
                           minibatch_size=self.minibatch_per_rank(world, rollout.batch_semantics),
                           all_reduce=self._all_reduce if self.trainer.world_size > 1 else None,
                           world_size=self.trainer.world_size, losses=self.loss_set, agent_steps=self.agent_steps,
                           prio_beta=self.prio_beta_at(self.agent_steps))
        update.compute_advantages()
        # One optimizer: Lightning's clip (precision-aware); several (Muon + Adam): one norm over all of them.
        clip = (lambda v: self.clip_gradients(opt, gradient_clip_val=v, gradient_clip_algorithm="norm")) \
            if len(opts) == 1 else None
        for minibatch in update.minibatches():
            optimizer_step(self.policy, opts if len(opts) > 1 else opt, update.loss(minibatch), self.max_grad_norm,
                           backward=self.manual_backward, clip=clip)
        self.log_dict(self._iteration_metrics(rollout, update.metrics(), now, lr), on_step=True, on_epoch=False,
                      prog_bar=False, batch_size=rollout.agent_steps)

    def _iteration_metrics(self, rollout: Rollout, losses: dict[str, float], started: float, lr: float) -> dict:
        """Losses, throughput, timings and episode stats of this iteration, merged over ranks (every rank
        logs the same numbers)."""
        frames = rollout.agent_steps
        train_s = time.perf_counter() - started
        iteration_s = None if self._last_step_time is None else started + train_s - self._last_step_time
        self._last_step_time = started + train_s
        # One gather of every rank's numbers; all ranks then log the same merged values.
        ranks = self._gather({
            "frames": frames, "rollout_s": rollout.seconds, "train_s": train_s, "iteration_s": iteration_s,
            "episodes": len(rollout.episodes), "episode_means": summarize_episode_stats(rollout.episodes),
            "losses": losses})
        total_frames = sum(r["frames"] for r in ranks)
        self.agent_steps += total_frames
        logs = {f"losses/{k}": sum(r["losses"][k] for r in ranks) / len(ranks) for k in ranks[0]["losses"]}
        logs["overview/agent_steps"] = float(self.agent_steps)
        logs["overview/learning_rate"] = lr
        if iteration_s is not None:  # whole iteration (collection + update + glue) of the slowest rank
            logs["overview/sps"] = total_frames / max(r["iteration_s"] for r in ranks)
        if all(r["rollout_s"] > 0 for r in ranks):  # ranks collect concurrently: their rates add up
            logs["overview/collect_sps"] = sum(r["frames"] / r["rollout_s"] for r in ranks)
        logs["overview/train_sps"] = sum(r["frames"] / r["train_s"] for r in ranks)
        logs["timing/rollout"], logs["timing/update"] = rollout.seconds, train_s  # this rank's, this iteration
        logs.update(rollout.timings)  # timing/env_step, timing/policy_forward (this rank, summed over the rollout)
        logs.update(merge_episode_means([(r["episodes"], r["episode_means"]) for r in ranks]))
        if "overview/reward" in logs:
            self.log("reward", logs["overview/reward"], prog_bar=True, on_step=True, on_epoch=False,
                     logger=False, batch_size=frames)
        return {k: float(v) for k, v in logs.items()}


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


def summarize_episode_stats(episodes: list[dict]) -> dict[str, float]:
    """Mean over finished episodes of: `overview/reward` (mean agent return), `overview/episode_length`,
    `env_agent/<stat>` (mean over the episode's agents) and `env_game/<stat>`."""
    if not episodes:
        return {}
    sums: dict[str, float] = {}
    for ep in episodes:
        items = [("overview/reward", float(np.mean(ep["reward"]))),
                 ("overview/episode_length", float(ep["steps"]))]
        items += [(f"env_agent/{k}", float(np.mean(v))) for k, v in ep["agent"].items()]
        items += [(f"env_game/{k}", float(v)) for k, v in ep["game"].items()]
        for k, v in items:
            sums[k] = sums.get(k, 0.0) + v
    return {k: v / len(episodes) for k, v in sums.items()}
