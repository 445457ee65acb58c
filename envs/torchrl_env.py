"""TorchRL view of the batched C++ engine: one `EnvBase` over `envs.MettaGrid(auto_reset=False)`.

Agents are flattened into the batch: batch size `[num_envs * num_agents]`, row `g * num_agents + a`
is agent `a` of game `g`. Keys (all with the leading batch dim N):

- `observation` uint8 `[N, num_tokens, 3]`; `is_init` bool `[N, 1]` (True on the first obs of an
  episode, so recurrent policies know where to zero their state);
- `action` int64 `[N]` (flat Discrete over `action_names`);
- `reward` float32 `[N, 1]`; `done`, `terminated`, `truncated` bool `[N, 1]`, kept apart so that
  PPO can bootstrap on truncation and not on termination.

`_step` copies out of the engine's buffers (TorchRL keeps each step's tensordict until the rollout
is stacked, so live zero-copy views would alias). Finished games keep their true final observation
until TorchRL asks for a reset through the `_reset` mask; only those games are reset.

With a `curriculum` (`envs.curriculum`), every reset first reports the episodes that just finished to
the curriculum (score: their mean reward over the agents), then starts each game being reset on a
freshly sampled task, so the task sequence follows the scores in the order the games finish.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from .config import GameConfig

__all__ = ["MettaGridEnv"]


class MettaGridEnv(EnvBase):
    """TorchRL env over `num_envs` MettaGrid games; see the module docstring for the keys.

    Args:
        config: the game.
        num_envs: games stepped together (rows = num_envs * agents per game).
        seed: base seed of the engine.
        device: torch device of the returned tensors (the engine itself runs on the CPU).
        curriculum: an `envs.curriculum.Curriculum` whose tasks the games play (each compatible with
            `config`); None: every episode plays `config`.
    """

    def __init__(self, config: GameConfig, num_envs: int = 1, seed: int = 0, device: str | torch.device = "cpu",
                 curriculum=None):
        import envs  # the compiled engine is imported only when an env is built

        self.engine = envs.MettaGrid(config, num_envs=num_envs, seed=seed, auto_reset=False)
        self.curriculum_games = None
        self._finished: list[dict] = []  # episodes drained at resets (curriculum), not yet handed out
        if curriculum is not None:
            from .curriculum import CurriculumGames

            self.curriculum_games = CurriculumGames(curriculum, self.engine)
        self.num_games = num_envs
        self.agents_per_game = self.engine.num_agents
        n = self.engine.num_rows
        super().__init__(device=device, batch_size=torch.Size([n]))
        num_tokens, token_size = self.engine.obs_shape
        self.observation_spec = Composite(
            observation=Bounded(low=0, high=255, shape=(n, num_tokens, token_size), dtype=torch.uint8,
                                device=self.device),
            is_init=Categorical(2, shape=(n, 1), dtype=torch.bool, device=self.device),
            shape=(n,), device=self.device)
        self.action_spec = Categorical(len(self.engine.action_names), shape=(n,), dtype=torch.int64,
                                       device=self.device)
        self.reward_spec = Unbounded(shape=(n, 1), dtype=torch.float32, device=self.device)
        self.done_spec = Composite(
            done=Categorical(2, shape=(n, 1), dtype=torch.bool, device=self.device),
            terminated=Categorical(2, shape=(n, 1), dtype=torch.bool, device=self.device),
            truncated=Categorical(2, shape=(n, 1), dtype=torch.bool, device=self.device),
            shape=(n,), device=self.device)
        # Zero-copy views of the engine's buffers (read only; copied before they leave `_step`).
        self._obs = torch.from_numpy(self.engine.observations)
        self._rew = torch.from_numpy(self.engine.rewards)
        self._term = torch.from_numpy(self.engine.terminals)
        self._trunc = torch.from_numpy(self.engine.truncations)
        self._started = False

    # -- TorchRL hooks -------------------------------------------------------------------------
    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        actions = tensordict.get("action")
        self.engine.step(actions.to("cpu", torch.int32).numpy())
        term = self._term.view(-1, 1).to(self.device, copy=True)
        trunc = self._trunc.view(-1, 1).to(self.device, copy=True)
        return TensorDict(
            {"observation": self._obs.to(self.device, copy=True),
             "is_init": torch.zeros_like(term),
             "reward": self._rew.view(-1, 1).to(self.device, copy=True),
             "terminated": term, "truncated": trunc, "done": term | trunc},
            batch_size=self.batch_size, device=self.device)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask = tensordict.get("_reset", None) if tensordict is not None else None
        if mask is None or not self._started:
            self._start_tasks(range(self.num_games))
            self.engine.reset()
            self._started = True
        else:
            games = mask.reshape(self.num_games, self.agents_per_game).any(dim=1).cpu().numpy()
            if games.any():
                self._start_tasks(games.nonzero()[0])
                self.engine.reset_games(games)
        # Fresh tensors every call: TorchRL merges reset outputs in place (`where(..., out=)`).
        n = self.batch_size[0]
        zeros = lambda: torch.zeros(n, 1, dtype=torch.bool, device=self.device)  # noqa: E731
        return TensorDict(
            {"observation": self._obs.to(self.device, copy=True),
             "is_init": torch.ones(n, 1, dtype=torch.bool, device=self.device),
             "terminated": zeros(), "truncated": zeros(), "done": zeros()},
            batch_size=self.batch_size, device=self.device)

    def _set_seed(self, seed: int | None) -> None:
        if seed is not None:
            self._start_tasks(range(self.num_games))
            self.engine.reset(seed=int(seed))
            self._started = True

    def _start_tasks(self, games) -> None:
        """Curriculum: score the episodes that just finished, then queue a sampled task for each of `games`."""
        if self.curriculum_games is None:
            return
        finished = self.engine.episode_stats()
        self.curriculum_games.scored(finished)
        self._finished.extend(finished)
        self.curriculum_games.start(games)

    # -- extras ----------------------------------------------------------------------------------
    def episode_stats(self) -> list[dict]:
        """Finished episodes since the last call (drains `MettaGrid.episode_stats()`); with a curriculum
        each also carries its `task_name`."""
        fresh = self.engine.episode_stats()
        out, self._finished = self._finished + fresh, []
        if self.curriculum_games is not None:
            self.curriculum_games.scored(fresh)  # finished but not reset yet: scored now
            curriculum = self.curriculum_games.curriculum
            for ep in out:
                ep["task_name"] = curriculum.task(int(ep["task"])).name
        return out
