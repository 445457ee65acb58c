"""`MettaGridPettingZooEnv`: one MettaGrid game as a PettingZoo `ParallelEnv`."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from ..config import GameConfig
from ..mettagrid import MettaGrid
from .common import (agent_episode_infos, check_config, check_render_mode, check_seed, render_rgb,
                     reset_episode_stream)

__all__ = ["MettaGridPettingZooEnv"]


class MettaGridPettingZooEnv(ParallelEnv):
    """One game of `config`; its agents are `agent_0` ... `agent_{n-1}` (agent id order of the engine).

    - Every agent has `Box(0, 255, (num_tokens, 3), uint8)` observations and `Discrete(num_actions)`
      actions (`observation_space(agent)` / `action_space(agent)` return the same objects every call).
    - All agents' episodes end together (the game ends): on that step every agent is terminated or
      truncated, `agents` becomes empty, and `infos[agent]["episode_stats"]` holds the engine's stats for
      that agent: `{"episode", "steps", "reward", "agent": {stat: value}, "game": {stat: value}}`.
    - `reset(seed=s)` plays episode 0 of base seed `s`; `reset()` without a seed starts the next episode
      of the same stream. Reset infos hold `seed` and `episode` for every agent.
    - `render()` (with `render_mode="rgb_array"`) returns the map as an RGB frame.

    Errors: `step` before `reset` or after the episode ended raises AssertionError (as PettingZoo's own
    order checks do); actions that are not a dict, miss a live agent, name an unknown or finished agent, or
    lie outside the action space raise ValueError naming the agent.
    """

    metadata = {"render_modes": ["rgb_array"], "name": "mettagrid_v0", "is_parallelizable": True, "render_fps": 8}

    def __init__(self, config: GameConfig, seed: int = 0, render_mode: str | None = None, tile: int = 8):
        config = check_config(config, "MettaGridPettingZooEnv")
        self.render_mode = check_render_mode(render_mode, "MettaGridPettingZooEnv")
        self.tile = tile
        self._seed = check_seed(seed, "MettaGridPettingZooEnv")
        self.engine = MettaGrid(config, num_envs=1, seed=self._seed, auto_reset=False)
        self.possible_agents = [f"agent_{i}" for i in range(self.engine.num_agents)]
        self.agents: list[str] = []
        self.action_names = self.engine.action_names
        self.num_actions = self.engine.num_actions
        obs_space = spaces.Box(0, 255, self.engine.obs_shape, np.uint8)
        act_space = spaces.Discrete(self.num_actions)
        self.observation_spaces = {a: obs_space for a in self.possible_agents}
        self.action_spaces = {a: act_space for a in self.possible_agents}
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        self._actions = np.zeros(self.engine.num_rows, dtype=np.int64)
        self._reset_once = False

    def observation_space(self, agent: str) -> spaces.Box:
        try:
            return self.observation_spaces[agent]
        except KeyError:
            raise KeyError(f"unknown agent {agent!r}; agents are {self.possible_agents[0]!r}.."
                           f"{self.possible_agents[-1]!r}") from None

    def action_space(self, agent: str) -> spaces.Discrete:
        try:
            return self.action_spaces[agent]
        except KeyError:
            raise KeyError(f"unknown agent {agent!r}; agents are {self.possible_agents[0]!r}.."
                           f"{self.possible_agents[-1]!r}") from None

    def reset(self, seed: int | None = None, options: dict | None = None):
        seed = check_seed(seed, "MettaGridPettingZooEnv.reset", allow_none=True)
        if seed is not None:
            self._seed = seed
        reset_episode_stream(self.engine, seed, self._reset_once)
        self._reset_once = True
        self.agents = list(self.possible_agents)
        obs = self.engine.observations.copy()
        episode = self.engine.episode_index(0)
        return (dict(zip(self.agents, obs)),
                {a: {"seed": self._seed, "episode": episode} for a in self.agents})

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise AssertionError("MettaGridPettingZooEnv: reset() needs to be called before step()"
                                 + (" (the episode has ended)" if self._reset_once else ""))
        self._check_actions(actions)
        obs, rewards, terminals, truncations = self.engine.step(self._actions)
        agents = self.agents
        obs_d = dict(zip(agents, obs.copy()))
        rew_d = dict(zip(agents, rewards.tolist()))
        term_d = dict(zip(agents, terminals.tolist()))
        trunc_d = dict(zip(agents, truncations.tolist()))
        infos: dict[str, dict] = {a: {} for a in agents}
        if self.engine.games_done()[0]:  # the game ended: every agent's episode with it
            for stats in self.engine.episode_stats():
                for a, info in zip(agents, agent_episode_infos(stats)):
                    infos[a]["episode_stats"] = info
            self.agents = []
        return obs_d, rew_d, term_d, trunc_d, infos

    def _check_actions(self, actions) -> None:
        """Validates `actions` and writes them into `self._actions` (agent order)."""
        if not isinstance(actions, dict):
            raise ValueError(f"MettaGridPettingZooEnv: actions must be a dict {{agent: action}}, "
                             f"got {type(actions).__name__}")
        agents = self.agents
        try:
            values = [actions[a] for a in agents]
        except KeyError:
            values = None
        if values is None or len(actions) != len(agents):
            missing = [a for a in agents if a not in actions]
            extra = [a for a in actions if a not in self._index or a not in agents]
            parts = []
            if missing:
                parts.append(f"missing actions for live agents {missing}")
            if extra:
                parts.append(f"actions for unknown or finished agents {extra}")
            raise ValueError(f"MettaGridPettingZooEnv: {'; '.join(parts)} (live agents: {len(agents)})")
        if not set(map(type, values)) <= _INT_TYPES:  # the slow path: find the offender, accept 0-d int arrays
            for a, v in zip(agents, values):
                if not _is_int(v):
                    raise ValueError(f"MettaGridPettingZooEnv: action for {a} must be an int in "
                                     f"Discrete({self.num_actions}), got {v!r} of type {type(v).__name__}")
        if min(values) < 0 or max(values) >= self.num_actions:
            a = next(a for a, v in zip(agents, values) if not 0 <= v < self.num_actions)
            raise ValueError(f"MettaGridPettingZooEnv: action {actions[a]!r} for {a} is outside "
                             f"Discrete({self.num_actions}) (valid ids 0..{self.num_actions - 1})")
        self._actions[:] = values

    def render(self):
        if self.render_mode is None:
            return None
        return render_rgb(self.engine, 0, self.tile)

    def close(self) -> None:
        self.engine.close()


_INT_TYPES = {int, np.int64, np.int32, np.int16, np.int8, np.uint64, np.uint32, np.uint16, np.uint8}


def _is_int(v) -> bool:
    return (isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))) or (
        isinstance(v, np.ndarray) and v.shape == () and v.dtype.kind in "iu")
