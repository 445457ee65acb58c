"""Rollouts as a Lightning dataloader: a TorchRL `Collector` over `MettaGridEnv`.

Each item is one rollout TensorDict `[N, T]` (rows x time, time last) holding `observation`,
`is_init`, `recurrent_state` (recurrent policies: the state the actor used at that step),
`action`, `action_log_prob`, `state_value` and `("next", observation|reward|done|terminated|truncated)`.
The dataset has a `__len__`, so Lightning does not prefetch the next rollout before the update
(which would make PPO one update stale), and the collector is built once per process so the games
keep running across epochs.

Under DDP every rank builds its own games and collector: rank r seeds its games with
`seed + 1000 * r` (see `env_seed`) and its torch RNG (action sampling, minibatch order) with the run
seed + 1000 * r, so ranks never play the same games or draw the same actions. `batch_semantics` says
whether `num_envs` (and the model's `minibatch_size`) count per rank or in total.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Literal

import lightning as L
import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch.utils.data import DataLoader, IterableDataset
from torchrl.envs.utils import ExplorationType, exploration_type

from envs.config import GameConfig
from envs.curriculum import Curriculum, CurriculumConfig
from envs.presets import resolve_game
from envs.info import EnvInfo

from .timing import PhaseTimer, time_method
from .training import Rollout

__all__ = ["BatchSemantics", "CollectorDataset", "RolloutActor", "RolloutDataModule", "identity"]

BatchSemantics = Literal["per_rank", "global"]


def identity(x: Any) -> Any:
    """collate_fn for rollouts (the default collate would iterate over a TensorDict's first dim)."""
    return x


class RolloutActor(TensorDictModuleBase):
    """The acting side of a `models.Policy` for the collector (shares the policy's weights).

    Samples actions from the logits (argmax under a deterministic exploration type) and writes
    `action`, `action_log_prob`, `state_value` and, for recurrent policies, `recurrent_state`: the
    state used at this step (zeroed on rows whose episode starts, `is_init`). The live state is kept
    here between steps. `forward_context` wraps the policy's step (the trainer's precision, e.g. bf16
    autocast under `trainer.precision=bf16-mixed`, so acting computes as training does); what leaves
    the actor is float32 whatever the policy computed in."""

    def __init__(self, policy: torch.nn.Module, forward_context=contextlib.nullcontext) -> None:
        super().__init__()
        self.policy = policy
        self.forward_context = forward_context
        self.in_keys = ["observation", "is_init"]
        self.out_keys = ["action", "action_log_prob", "state_value"] + (
            ["recurrent_state"] if policy.is_recurrent else [])
        self.state: torch.Tensor | None = None
        self.timer = PhaseTimer()  # timing/policy_forward (and timing/env_step, see make_collector)

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        obs = td.get("observation")
        is_init = td.get("is_init").view(-1)
        state = None
        if self.policy.is_recurrent:
            if self.state is None or self.state.shape[0] != obs.shape[0] or self.state.device != obs.device:
                self.state = self.policy.initial_state(obs.shape[0], obs.device)
            state = self.state * (~is_init).view(-1, *([1] * (self.state.dim() - 1))).to(self.state.dtype)
            td.set("recurrent_state", state)
        with self.timer("policy_forward"), self.forward_context():
            out = self.policy.forward_step(obs, state, is_init)
        logits, value = out["logits"].float(), out["values"].float()
        log_probs = torch.log_softmax(logits, dim=-1)
        if exploration_type() in (ExplorationType.DETERMINISTIC, ExplorationType.MODE):
            action = logits.argmax(-1)
        else:  # Gumbel-max sampling
            u = torch.rand_like(logits).clamp_(1e-20, 1.0)
            action = (logits - torch.log(-torch.log(u))).argmax(-1)
        td.set("action", action)
        td.set("action_log_prob", log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1))
        td.set("state_value", value)
        self.state = out["state"].float() if "state" in out.keys() else None
        return td


def make_collector(env, actor: RolloutActor, frames_per_batch: int, device):
    """The rollout collector over a TorchRL env (`fit` and `api.TrainingComponents` alike): one
    `frames_per_batch` TensorDict `[rows, horizon]` per iteration, the env's step charged to
    `timing/env_step` of the actor's timer."""
    from torchrl.collectors import Collector

    time_method(env, "_step", actor.timer, "env_step")
    return Collector(env, actor, frames_per_batch=frames_per_batch, total_frames=-1, policy_device=device,
                     storing_device=device, env_device=env.device, track_traj_ids=False, return_same_td=True,
                     split_trajs=False)


class CollectorDataset(IterableDataset):
    """`rollouts_per_epoch` rollouts from a collector built on first use and kept for later epochs; each
    item is a `training.Rollout` (the TensorDict with the facts `describe(td, seconds)` adds)."""

    def __init__(self, make_collector, rollouts_per_epoch: int, describe) -> None:
        self.make_collector = make_collector
        self.rollouts_per_epoch = rollouts_per_epoch
        self.describe = describe
        self.collector = None
        self._it = None

    def __len__(self) -> int:  # a length turns off Lightning's one-batch prefetch (stale PPO data)
        return self.rollouts_per_epoch

    def restart(self) -> None:
        """Drop the collector (and its games); the next rollout builds a fresh one."""
        if self.collector is not None:
            self.collector.shutdown()
        self.collector, self._it = None, None

    def __iter__(self):
        if self._it is None:
            self.collector = self.make_collector()
            self._it = iter(self.collector)
        for _ in range(self.rollouts_per_epoch):
            start = time.perf_counter()
            td = next(self._it)
            yield self.describe(td, time.perf_counter() - start)


def _gather(trainer, obj) -> list:
    """`obj` of every rank, in rank order (just `[obj]` without DDP)."""
    import torch.distributed as dist

    if trainer is None or trainer.world_size <= 1 or not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class CurriculumStats(L.Callback):
    """Logs the data module's `curriculum/*` figures after every rollout, merged over the ranks: counts
    summed, the rest averaged over the ranks that have them. Added by `RolloutDataModule` itself when it
    has a curriculum."""

    SUMMED = ("curriculum/tasks_sampled", "curriculum/episodes_scored", "curriculum/evictions")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        curriculum = getattr(trainer.datamodule, "curriculum", None)
        if curriculum is None:
            return
        merged: dict[str, list[float]] = {}
        for stats in _gather(trainer, curriculum.stats()):
            for k, v in stats.items():
                merged.setdefault(k, []).append(v)
        logs = {k: float(sum(v)) if k in self.SUMMED else float(sum(v) / len(v)) for k, v in merged.items()}
        pl_module.log_dict(logs, on_step=True, on_epoch=False, batch_size=1)


class RolloutDataModule(L.LightningDataModule):
    """Rollouts from MettaGrid games for PPO.

    Args:
        game: a game preset name (see `envs.presets.PRESETS`), or a whole game given as GameConfig fields (in
            YAML: a mapping, e.g. `{max_steps: 100, map_builder: {kind: ascii, lines: [...]}}`; see
            `configs/custom_game.yaml`), or a GameConfig object (Python).
        game_overrides: GameConfig fields merged (recursively) over `game`, e.g. {max_steps: 100}.
        num_envs: games stepped together (rows = num_envs x agents per game); per rank or in total over
            all ranks, see batch_semantics.
        horizon: environment steps per rollout (T); one rollout = rows x horizon agent-steps.
        rollouts_per_epoch: rollouts per Lightning epoch (how often epoch-end callbacks run).
        seed: base seed of the games; rank r uses seed + 1000 * r.
        env_device: device of the env's tensors; None = CPU.
        batch_semantics: how sizes scale with DDP's world size W. "per_rank" (default): every rank runs
            num_envs games and trains on minibatches of model.minibatch_size agent-steps, so one update
            uses W x the rollout and averages the gradients of W minibatches (a bigger batch as W grows).
            "global": num_envs and model.minibatch_size are totals; each rank runs num_envs / W games and
            minibatches of minibatch_size / W (both must divide), so a config learns alike on any W.
        curriculum: tasks the games play instead of `game` alone (`envs.curriculum.CurriculumConfig`: kind
            single / random / bucketed / learning_progress, tasks or buckets over `game`); every finished game
            is reset into `curriculum.sample()` and its episode's mean reward is reported with `update`.
            Checked against `game` here, before training. Rank r's curriculum is seeded with seed + 1000 * r;
            its state is in the `.ckpt`. None: every episode plays `game`.
    """

    def __init__(self, game: str | dict[str, Any] | GameConfig = "arena_basic_easy_shaped", game_overrides: dict | None = None,
                 num_envs: int = 4, horizon: int = 64,
                 rollouts_per_epoch: int = 10, seed: int = 0, env_device: str | None = None,
                 batch_semantics: BatchSemantics = "per_rank", curriculum: CurriculumConfig | None = None) -> None:
        super().__init__()
        for name, value in (("num_envs", num_envs), ("horizon", horizon), ("rollouts_per_epoch", rollouts_per_epoch)):
            if value < 1:
                raise ValueError(f"data.{name} must be >= 1, got {value}")
        if batch_semantics not in ("per_rank", "global"):
            raise ValueError(f"data.batch_semantics must be 'per_rank' or 'global', got {batch_semantics!r}")
        self.game = resolve_game(game, game_overrides)
        self.num_envs, self.horizon, self.rollouts_per_epoch = num_envs, horizon, rollouts_per_epoch
        self.seed, self.env_device, self.batch_semantics = seed, env_device, batch_semantics
        self.env_info = EnvInfo.from_config(self.game)
        self.curriculum_config = CurriculumConfig.model_validate(curriculum) if curriculum is not None else None
        # Built now so that a bad path, value or task fails before training; rebuilt per rank in setup.
        self.curriculum: Curriculum | None = (
            self.curriculum_config.build(self.game, seed=seed) if self.curriculum_config is not None else None)
        self.env_epoch = 0  # games are seeded from (seed, rank, env_epoch); see restart_envs
        self.env = None
        self.actor: RolloutActor | None = None
        self._dataset: CollectorDataset | None = None

    @property
    def world_size(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1

    def envs_per_rank(self, world_size: int) -> int:
        """Games each of `world_size` ranks runs (see batch_semantics)."""
        if self.batch_semantics == "per_rank":
            return self.num_envs
        if self.num_envs % world_size:
            raise ValueError(f"data.num_envs={self.num_envs} is not divisible by the world size {world_size} "
                             "(data.batch_semantics=global splits the games among the ranks)")
        return self.num_envs // world_size

    def rows_per_rank(self, world_size: int) -> int:
        """Agents each of `world_size` ranks steps together."""
        return self.envs_per_rank(world_size) * self.env_info.num_agents

    @property
    def num_rows(self) -> int:
        """Agents stepped together in this process."""
        return self.rows_per_rank(self.world_size)

    @property
    def batch_size(self) -> int:
        """Agent-steps per rollout in this process."""
        return self.num_rows * self.horizon

    def make_env(self, seed: int):
        from envs.torchrl_env import MettaGridEnv

        return MettaGridEnv(self.game, num_envs=self.envs_per_rank(self.world_size), seed=seed,
                            device=self.env_device or "cpu", curriculum=self.curriculum)

    def _make_collector(self):
        module = self.trainer.lightning_module
        self.env = self.make_env(self.env_seed(self.trainer.global_rank))
        self.actor = RolloutActor(module.policy, forward_context=self.trainer.precision_plugin.forward_context)
        return make_collector(self.env, self.actor, self.batch_size, module.device)

    def setup(self, stage: str) -> None:
        rank = self.trainer.global_rank
        if rank > 0:
            # seed_everything gave every rank the same torch seed: without this the ranks would draw the same
            # Gumbel noise for their actions and the same minibatch orders. Rank 0 keeps the run's stream.
            torch.manual_seed((torch.initial_seed() + 1000 * rank) % 2**63)
            if self.curriculum_config is not None:  # each rank its own task sequence
                self.curriculum = self.curriculum_config.build(self.game, seed=self.seed + 1000 * rank)
        if self.curriculum is not None and not any(isinstance(cb, CurriculumStats) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(CurriculumStats())

    def state_dict(self) -> dict[str, Any]:
        """The curriculum's state on every rank (gathered under DDP; rank r resumes from entry r)."""
        if self.curriculum is None:
            return {}
        return {"curriculum_by_rank": _gather(self.trainer, self.curriculum.state_dict())}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        by_rank = state_dict.get("curriculum_by_rank")
        if self.curriculum is None or not by_rank:
            return
        rank = self.trainer.global_rank if self.trainer is not None else 0
        if rank < len(by_rank):  # a rank the state does not know (more ranks now) keeps its fresh curriculum
            self.curriculum.load_state_dict(by_rank[rank])

    def env_seed(self, rank: int) -> int:
        """Seed of rank `rank`'s games: `seed + 1000 * rank` at first, a fresh derived one per restart."""
        return (self.seed + 1000 * rank + 1_000_003 * self.env_epoch) % 2**31

    def restart_envs(self, epoch: int) -> None:
        """Restart the games at the next rollout, seeded for `epoch` (resume; see callbacks.checkpoint)."""
        self.env_epoch = int(epoch)
        if self._dataset is not None:
            self._dataset.restart()

    def _describe(self, td: TensorDictBase, seconds: float) -> Rollout:
        """The rollout with what was learnt while collecting it: finished episodes and phase timings."""
        return Rollout(td, episodes=self.env.episode_stats(), seconds=seconds, timings=self.actor.timer.pop(),
                       batch_semantics=self.batch_semantics)

    def train_dataloader(self) -> DataLoader:
        if self._dataset is None:
            self._dataset = CollectorDataset(self._make_collector, self.rollouts_per_epoch, self._describe)
        # Own generator: each epoch's iter() would otherwise draw a base seed from the global torch RNG,
        # which makes the first epoch after a resume draw differently from the uninterrupted run.
        return DataLoader(self._dataset, batch_size=None, collate_fn=identity, num_workers=0,
                          generator=torch.Generator())

    def teardown(self, stage: str) -> None:
        if self._dataset is not None and self._dataset.collector is not None:
            self._dataset.collector.shutdown()
        self._dataset = None
