"""`MettaGrid`: N arena games stepped by the C++ engine into numpy buffers owned here (zero copy).

Rows are game-major: row `g * num_agents + a` is agent `a` of game `g`. See cpp/README.md for the
contract (attributes, auto-reset, seeding, episode statistics, snapshots and replays).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from . import _mettagrid
from .config import GameConfig, incompatibility


class MettaGrid:
    """A batch of `num_envs` games of `config`, each with `config.num_agents` agents."""

    def __init__(self, config: GameConfig, num_envs: int = 1, seed: int = 0, auto_reset: bool = True):
        if not isinstance(config, GameConfig):
            raise TypeError(f"config must be an envs.GameConfig, got {type(config).__name__}")
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.config = config
        self.configs: list[GameConfig] = [config]
        """The config of each slot (slot 0: `config`; see `add_config`)."""
        self.auto_reset = bool(auto_reset)
        self._core = _mettagrid.Engine(config.engine_spec(), int(num_envs), int(seed))
        self.num_envs: int = self._core.num_envs
        self.num_agents: int = self._core.num_agents
        self.num_rows: int = self.num_envs * self.num_agents
        self.action_names: list[str] = list(config.action_names)
        self.num_actions: int = len(self.action_names)
        self.item_names: list[str] = list(config.items)
        self.feature_names: list[str] = config.feature_names
        self.feature_normalizations: list[float] = config.feature_normalizations
        self.type_names: list[str] = list(self._core.type_names)
        self.obs_shape: tuple[int, int] = (config.num_observation_tokens, 3)
        self.observations = np.zeros((self.num_rows, *self.obs_shape), dtype=np.uint8)
        self.rewards = np.zeros(self.num_rows, dtype=np.float32)
        self.terminals = np.zeros(self.num_rows, dtype=np.bool_)
        self.truncations = np.zeros(self.num_rows, dtype=np.bool_)
        self._core.set_buffers(self.observations, self.rewards, self.terminals, self.truncations)
        self._core.reset(None)
        self._recorder = None

    # ------------------------------------------------------------------ stepping
    def reset(self, seed: int | None = None) -> np.ndarray:
        """Restart every game at its episode 0 (under a new base seed if given); returns the obs buffer."""
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        self._core.reset(None if seed is None else int(seed))
        if self._recorder is not None:
            self._recorder.observe()
        return self.observations

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every game with `actions` (integer array [num_rows]); returns the (obs, rewards,
        terminals, truncations) buffers, overwritten by the next call."""
        acts = self._check_actions(actions)
        if self._recorder is None:
            self._core.step(acts, self.auto_reset)
        else:
            # Step without auto-reset so the final frame of a finished episode can be captured.
            self._core.step(acts, False)
            self._recorder.observe()
            if self.auto_reset:
                done = self._core.games_done()
                if done.any():
                    self._core.reset_games(done)
                    self._recorder.observe()
        return self.observations, self.rewards, self.terminals, self.truncations

    def reset_games(self, mask) -> np.ndarray:
        """Start the next episode of the games where `mask` (bool [num_envs]) is true; returns the obs buffer."""
        m = np.asarray(mask)
        if m.shape != (self.num_envs,):
            raise ValueError(f"mask: expected shape ({self.num_envs},), got {m.shape}")
        if m.dtype.kind not in "biu":
            raise TypeError(f"mask: expected a bool array, got dtype {m.dtype}")
        self._core.reset_games(np.ascontiguousarray(m, dtype=np.bool_))
        if self._recorder is not None:
            self._recorder.observe()
        return self.observations

    def _check_actions(self, actions) -> np.ndarray:
        if not isinstance(actions, np.ndarray):
            if hasattr(actions, "numpy"):  # a CPU torch tensor
                actions = actions.numpy()
            else:
                actions = np.asarray(actions)
        if actions.dtype.kind not in "iu":
            raise TypeError(f"actions: expected an integer array of shape ({self.num_rows},), got dtype {actions.dtype}")
        if actions.shape != (self.num_rows,):
            raise ValueError(f"actions: expected shape ({self.num_rows},) (num_envs * num_agents), "
                             f"got {actions.shape}")
        if (actions.dtype == np.int32 or actions.dtype == np.int64) and actions.flags.c_contiguous:
            return actions  # the engine reads both (int64 is narrowed in C++, out-of-range ids kept invalid)
        if actions.dtype.itemsize >= 4:  # keep out-of-range ids out of range after narrowing
            actions = np.clip(actions, -1, self.num_actions)
        return np.ascontiguousarray(actions, dtype=np.int32)

    # ------------------------------------------------------------------ game configs
    # Slot 0 is the constructor's config. Every game of the batch may run its own config as long as the
    # agents, the actions, the items and the observation features are the same (the policy's inputs and
    # outputs); a config takes effect at the game's next reset, so a finished game starts its next
    # episode under a new config without rebuilding the batch.
    def add_config(self, config: GameConfig) -> int:
        """Register `config` for this batch; returns its slot (for `set_next_config`)."""
        self._check_compatible(config)
        slot = self._core.add_config(config.engine_spec())
        self.configs.append(config)
        return slot

    def set_config(self, slot: int, config: GameConfig) -> None:
        """Put `config` in slot `slot` (>= 1) instead of its config; games already running the old one keep
        it until their next reset."""
        self._check_compatible(config)
        self._core.set_config(int(slot), config.engine_spec())
        self.configs[int(slot)] = config

    def set_next_config(self, game: int, slot: int, task: int | None = None) -> None:
        """Game `game`'s next reset runs slot `slot`; its episodes carry `task` (default: the slot) in
        `episode_stats()` under "task" (and the slot under "config")."""
        self._core.set_next_config(int(game), int(slot), int(slot if task is None else task))

    def set_next_episode(self, game: int, episode: int) -> None:
        """Game `game`'s next reset (`reset_games`, auto-reset) starts episode `episode`: the map and the
        agents' shuffled order are those of (seed, game, episode), so a replay's episode can be played again."""
        self._core.set_next_episode(int(game), int(episode))

    @property
    def seed(self) -> int:
        """The base seed every game's episodes derive from (the constructor's, or the last `reset(seed)`)."""
        return self._core.seed

    def game_config(self, game: int = 0) -> tuple[int, int]:
        """(slot, task) that game `game`'s current episode runs."""
        return tuple(self._core.game_config(int(game)))

    @property
    def num_configs(self) -> int:
        return self._core.num_configs

    def _check_compatible(self, config: GameConfig) -> None:
        if not isinstance(config, GameConfig):
            raise TypeError(f"config must be an envs.GameConfig, got {type(config).__name__}")
        why = incompatibility(self.config, config)
        if why:
            raise ValueError(f"config cannot join this batch: {why}")

    # ------------------------------------------------------------------ inspection
    def episode_stats(self) -> list[dict]:
        """Episodes finished since the last call: {env, episode, config, task, steps, reward,
        agent: {stat: [A]}, game: {stat}} (config: the slot the episode ran; task: its tag)."""
        return self._core.episode_stats()

    def grid_objects(self, game: int = 0, dynamic_only: bool = False) -> list[dict]:
        """Snapshot of every object of game `game` (see cpp/README.md for the keys); with `dynamic_only`, only
        the objects that can change (agents, converters)."""
        return self._core.grid_objects(int(game), bool(dynamic_only))

    def current_step(self, game: int = 0) -> int:
        return self._core.current_step(int(game))

    def episode_index(self, game: int = 0) -> int:
        return self._core.episode_index(int(game))

    def map_size(self, game: int = 0) -> tuple[int, int]:
        """(height, width) of game `game`'s current map."""
        return tuple(self._core.map_size(int(game)))

    def games_done(self) -> np.ndarray:
        """bool [num_envs]: games whose episode has ended and that have not been reset yet."""
        return self._core.games_done()

    # ------------------------------------------------------------------ replays
    def record_replays(self, games: int | Iterable[int] | None = (0,), directory: str = "replays"):
        """Write each episode of `games` that finishes from now on as a zlib JSON replay under
        `directory` (any fsspec URL). `games=None` or `[]` stops recording. Returns the recorder
        (its `paths` lists the files written)."""
        from .replay import ReplayRecorder

        if games is None:
            self._recorder = None
            return None
        games = [int(games)] if isinstance(games, (int, np.integer)) else [int(g) for g in games]
        for g in games:
            if not 0 <= g < self.num_envs:
                raise ValueError(f"record_replays: game {g} out of range [0, {self.num_envs})")
        if not games:
            self._recorder = None
            return None
        self._recorder = ReplayRecorder(self, games, directory)
        self._recorder.observe()
        return self._recorder

    def close(self) -> None:
        self._recorder = None
