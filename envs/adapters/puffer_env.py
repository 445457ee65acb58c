"""`MettaGridPufferEnv`: MettaGrid games as a native PufferLib env (`pufferlib.PufferEnv`).

PufferLib's native interface is the engine's own: one set of observation, reward, terminal and
truncation buffers with every agent of every game as a row, written in place, auto-reset. The engine
writes straight into PufferLib's buffers (its own when built alone, the vector backend's slices when
built by `pufferlib.vector.make`), so a step costs what the engine's step costs.

Needs only `pufferlib`'s pure-Python parts (`pufferlib-core`, installed with `--no-deps`); its compiled
`_C` extension is never used.
"""

from __future__ import annotations

import numpy as np
import pufferlib
from gymnasium import spaces

from ..config import GameConfig
from ..mettagrid import MettaGrid
from .common import check_config, check_render_mode, check_seed, mean_episode_info, render_rgb

__all__ = ["MettaGridPufferEnv"]


class MettaGridPufferEnv(pufferlib.PufferEnv):
    """`num_envs` games of `config`, `num_agents = num_envs * agents per game` rows (row
    `g * agents_per_game + a` is agent `a` of game `g`).

    - `single_observation_space`: `Box(0, 255, (num_tokens, 3), uint8)`; `single_action_space`:
      `Discrete(num_actions)`.
    - `reset(seed)` restarts every game at episode 0 of base seed `seed` (the constructor's seed, or the
      last one given, when None) and returns `(observations, [])`.
    - `step(actions)`: integer actions `[num_agents]` -> `(observations, rewards, terminals, truncations,
      infos)`, the buffers themselves (overwritten by the next step). Finished games restart inside the
      step (the returned observations are the new episode's first). `infos` is a list with one dict per
      episode that finished in this step: `episode_return` and `episode_length`, `agent/<stat>` (mean over
      the game's agents) and `game/<stat>` once PufferLib flattens it (its trainer averages every key).
    - `render()` returns game 0's map as an RGB frame.

    Errors (`pufferlib.APIUsageError`, as PufferLib's own checks raise): `step` before `reset`, actions of
    the wrong shape, a non-integer dtype, or ids outside `[0, num_actions)`.

    Args:
        config: the game.
        num_envs: games in this env.
        seed: base seed (game `g`'s episode `k` is played from a seed derived from `(seed, g, k)`).
        buf: PufferLib's buffers for these rows (passed by `pufferlib.vector` backends); None allocates.
        render_mode: 'rgb_array' (the default) or None.
        tile: pixels per map cell in rendered frames.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(self, config: GameConfig, num_envs: int = 1, seed: int | None = 0, buf: dict | None = None,
                 render_mode: str | None = "rgb_array", tile: int = 8):
        config = check_config(config, "MettaGridPufferEnv")
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise pufferlib.APIUsageError(f"MettaGridPufferEnv: num_envs must be a positive int, got {num_envs!r}")
        self._seed = check_seed(0 if seed is None else seed, "MettaGridPufferEnv")
        self.render_mode = check_render_mode(render_mode, "MettaGridPufferEnv")
        self.tile = tile
        engine = MettaGrid(config, num_envs=int(num_envs), seed=self._seed)
        self.single_observation_space = spaces.Box(0, 255, engine.obs_shape, np.uint8)
        self.single_action_space = spaces.Discrete(engine.num_actions)
        self.num_agents = engine.num_rows
        super().__init__(buf)  # allocates self.observations, rewards, ... or takes the backend's slices
        # The engine writes into PufferLib's buffers from now on.
        engine._core.set_buffers(self.observations, self.rewards, self.terminals, self.truncations)
        engine.observations, engine.rewards = self.observations, self.rewards
        engine.terminals, engine.truncations = self.terminals, self.truncations
        engine.reset()
        self.engine = engine
        self.num_games = engine.num_envs
        self.agents_per_game = engine.num_agents
        self.action_names = engine.action_names
        self.num_actions = engine.num_actions
        self._started = False

    def reset(self, seed: int | None = None):
        if seed is not None:
            self._seed = check_seed(seed, "MettaGridPufferEnv.reset")
        self.engine.reset(self._seed)
        self._started = True
        return self.observations, []

    def step(self, actions):
        if not self._started:
            raise pufferlib.APIUsageError("MettaGridPufferEnv: call reset() before step()")
        acts = actions if isinstance(actions, np.ndarray) else np.asarray(actions)
        if acts.shape != (self.num_agents,):
            raise pufferlib.APIUsageError(f"MettaGridPufferEnv: actions must have shape ({self.num_agents},) "
                                          f"(one per agent row), got {acts.shape}")
        if acts.dtype.kind not in "iu":
            raise pufferlib.APIUsageError(f"MettaGridPufferEnv: actions must be integers, got dtype {acts.dtype}")
        # One reduction: negative ids become huge as unsigned integers.
        if acts.view(np.uint64 if acts.itemsize == 8 else np.uint32 if acts.itemsize == 4 else acts.dtype).max() \
                >= self.num_actions or (acts.itemsize < 4 and acts.min() < 0):
            rows = np.flatnonzero((acts < 0) | (acts >= self.num_actions))
            raise pufferlib.APIUsageError(
                f"MettaGridPufferEnv: action {acts[rows[0]]} at row {rows[0]} is outside "
                f"Discrete({self.num_actions}) (valid ids 0..{self.num_actions - 1}; {rows.size} bad rows)")
        self.engine.step(acts)
        infos = [mean_episode_info(stats) for stats in self.engine.episode_stats()]  # usually none
        return self.observations, self.rewards, self.terminals, self.truncations, infos

    def render(self, game: int = 0):
        if self.render_mode is None:
            return None
        if not 0 <= game < self.num_games:
            raise ValueError(f"MettaGridPufferEnv.render: game {game} out of range [0, {self.num_games})")
        return render_rgb(self.engine, game, self.tile)

    def close(self) -> None:
        self.engine.close()
