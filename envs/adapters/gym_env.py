"""`MettaGridGymEnv`: a single-agent MettaGrid game as a `gymnasium.Env`."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from ..config import GameConfig
from ..mettagrid import MettaGrid
from .common import (agent_episode_infos, check_config, check_render_mode, check_seed, render_rgb,
                     reset_episode_stream)

__all__ = ["MettaGridGymEnv", "InvalidActionError", "GYM_ID"]


class InvalidActionError(gymnasium.error.InvalidAction, ValueError):
    """An action outside `action_space` (also a ValueError)."""


class MettaGridGymEnv(gymnasium.Env):
    """One game of `config` with exactly one agent.

    - `observation_space`: `Box(0, 255, (num_tokens, 3), uint8)` (the engine's tokens);
      `action_space`: `Discrete(num_actions)` over `action_names`.
    - `reset(seed=s)` plays episode 0 of base seed `s`; `reset()` without a seed starts the next episode
      of the same seed stream (so the same seeds and actions replay the same episodes). The reset info
      holds `seed` (the base seed) and `episode` (the episode's index in that stream).
    - On the step that ends an episode, `info["episode_stats"]` holds the engine's stats of it for the
      agent: `{"episode", "steps", "reward", "agent": {stat: value}, "game": {stat: value}}`.
    - `render()` (with `render_mode="rgb_array"`) returns the map as an RGB frame, `tile` pixels a cell.

    Errors: a game with more than one agent raises ValueError (use `MettaGridPettingZooEnv` or
    `MettaGridPufferEnv`); `step` before `reset` or after the episode ended raises
    `gymnasium.error.ResetNeeded`; an action outside the space raises `InvalidActionError`
    (a `gymnasium.error.InvalidAction` and a ValueError).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(self, config: GameConfig, seed: int = 0, render_mode: str | None = None, tile: int = 8):
        config = check_config(config, "MettaGridGymEnv")
        if config.num_agents != 1:
            raise ValueError(f"MettaGridGymEnv takes single-agent games; this game has {config.num_agents} agents. "
                             "Use envs.adapters.MettaGridPettingZooEnv or MettaGridPufferEnv for multi-agent games.")
        self.render_mode = check_render_mode(render_mode, "MettaGridGymEnv")
        self.tile = tile
        self._seed = check_seed(seed, "MettaGridGymEnv")
        self.engine = MettaGrid(config, num_envs=1, seed=self._seed, auto_reset=False)
        self.observation_space = spaces.Box(0, 255, self.engine.obs_shape, np.uint8)
        self.action_space = spaces.Discrete(self.engine.num_actions)
        self.action_names = self.engine.action_names
        self._actions = np.zeros(1, dtype=np.int32)
        self._reset_once = False
        self._needs_reset = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        seed = check_seed(seed, "MettaGridGymEnv.reset", allow_none=True)
        super().reset(seed=seed)
        if seed is not None:
            self._seed = seed
        reset_episode_stream(self.engine, seed, self._reset_once)
        self._reset_once = True
        self._needs_reset = False
        return self.engine.observations[0].copy(), {"seed": self._seed, "episode": self.engine.episode_index(0)}

    def step(self, action):
        if self._needs_reset:
            if not self._reset_once:
                raise gymnasium.error.ResetNeeded("MettaGridGymEnv: call reset() before step()")
            raise gymnasium.error.ResetNeeded("MettaGridGymEnv: step() after the episode ended (terminated or "
                                              "truncated); call reset() to start the next episode")
        self._actions[0] = self._check_action(action)
        obs, rewards, terminals, truncations = self.engine.step(self._actions)
        terminated, truncated = bool(terminals[0]), bool(truncations[0])
        info: dict[str, Any] = {}
        if terminated or truncated:
            self._needs_reset = True
            for stats in self.engine.episode_stats():
                info["episode_stats"] = agent_episode_infos(stats)[0]
        return obs[0].copy(), float(rewards[0]), terminated, truncated, info

    def _check_action(self, action) -> int:
        a = action
        if isinstance(a, np.ndarray) and a.shape in ((), (1,)):
            a = a.reshape(())[()]
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
            raise InvalidActionError(f"MettaGridGymEnv: action must be an int in [0, {self.action_space.n}) "
                                     f"(Discrete({self.action_space.n})), got {action!r} of type {type(action).__name__}")
        if not 0 <= a < self.action_space.n:
            raise InvalidActionError(f"MettaGridGymEnv: action {int(a)} is outside Discrete({self.action_space.n}) "
                                     f"(valid ids 0..{self.action_space.n - 1}: {', '.join(self.action_names)})")
        return int(a)

    def render(self):
        if self.render_mode is None:
            gymnasium.logger.warn("MettaGridGymEnv.render() without a render_mode: pass render_mode='rgb_array' "
                                  "to the constructor to get frames")
            return None
        return render_rgb(self.engine, 0, self.tile)

    def close(self) -> None:
        self.engine.close()


GYM_ID = "metta_lightning/MettaGrid-v0"
"""`gymnasium.make(GYM_ID, config=...)` builds a `MettaGridGymEnv` (registered when this module loads)."""

if GYM_ID not in gymnasium.registry:
    gymnasium.register(GYM_ID, entry_point=MettaGridGymEnv, nondeterministic=False)
