"""Helpers shared by the engine tests: hand-drawn maps, named actions, copied step results."""

from __future__ import annotations

import numpy as np

from envs import MettaGrid, presets

ACTIONS = presets.arena().action_names
A = {name: i for i, name in enumerate(ACTIONS)}
ITEMS = presets.arena().items
EMPTY_TOKEN = (0xFF, 0xFF, 0xFF)


def make(lines, num_envs=1, seed=0, auto_reset=True, **overrides) -> MettaGrid:
    """An env on an ASCII map (episodes of 1000 steps unless overridden), already reset."""
    overrides.setdefault("max_steps", 1000)
    env = MettaGrid(presets.ascii(lines, **overrides), num_envs=num_envs, seed=seed, auto_reset=auto_reset)
    env.reset()
    return env


def step(env: MettaGrid, *actions):
    """One step with the given actions (names or ids), one per row; returns copies of the buffers."""
    ids = np.array([A[a] if isinstance(a, str) else a for a in actions], dtype=np.int32)
    obs, rewards, terminals, truncations = env.step(ids)
    return obs.copy(), rewards.copy(), terminals.copy(), truncations.copy()


def agents(env: MettaGrid, game: int = 0) -> list[dict]:
    """The agents of one game, by agent id (all of them: ids run 0..num_agents-1)."""
    found = sorted((o for o in env.grid_objects(game) if o["type_name"] == "agent"), key=lambda o: o["agent_id"])
    assert [o["agent_id"] for o in found] == list(range(env.num_agents))
    return found
