"""What the three adapters share: spaces from the env's info, the RGB map frame, episode stats as infos."""

from __future__ import annotations

import zlib

import numpy as np

from ..config import GameConfig
from ..mettagrid import MettaGrid

TILE = 8
"""Pixels per map cell in rendered frames."""

# One colour per object type; types not listed get a stable colour derived from their name.
COLORS: dict[str, tuple[int, int, int]] = {
    "": (24, 24, 28),  # empty cell
    "wall": (110, 110, 118),
    "block": (150, 120, 80),
    "altar": (230, 200, 40),
    "mine_red": (150, 30, 30),
    "mine_blue": (30, 50, 150),
    "mine_green": (30, 120, 40),
    "generator_red": (240, 90, 90),
    "generator_blue": (90, 130, 240),
    "generator_green": (100, 220, 110),
    "lasery": (200, 60, 200),
    "armory": (60, 200, 200),
}
# Agents: one colour per group, brightened while the agent carries a heart; frozen agents are grey.
GROUP_COLORS = [(255, 255, 255), (255, 160, 40), (80, 220, 255), (255, 90, 180)]
FROZEN = (170, 170, 200)


def type_color(name: str) -> tuple[int, int, int]:
    if name in COLORS:
        return COLORS[name]
    h = zlib.crc32(name.encode())
    return (64 + (h & 0x7F), 64 + ((h >> 8) & 0x7F), 64 + ((h >> 16) & 0x7F))


def render_rgb(env: MettaGrid, game: int = 0, tile: int = TILE) -> np.ndarray:
    """uint8 `[height * tile, width * tile, 3]`: one coloured square per map cell of game `game`.

    Objects are drawn first, agents over them as a smaller square with a notch on the side they face."""
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise ValueError(f"tile must be a positive int (pixels per cell), got {tile!r}")
    h, w = env.map_size(game)
    frame = np.empty((h * tile, w * tile, 3), dtype=np.uint8)
    frame[:] = COLORS[""]
    agents = []
    for obj in env.grid_objects(game):
        if obj["type_name"] == "agent":
            agents.append(obj)
            continue
        r, c = obj["row"] * tile, obj["col"] * tile
        frame[r:r + tile, c:c + tile] = type_color(obj["type_name"])
    m = max(tile // 8, 0)  # margin around an agent's square
    for a in agents:
        r, c = a["row"] * tile, a["col"] * tile
        color = FROZEN if a.get("frozen", 0) else GROUP_COLORS[a.get("group", 0) % len(GROUP_COLORS)]
        frame[r + m:r + tile - m, c + m:c + tile - m] = color
        q = max(tile // 4, 1)  # the notch: a dark strip on the side the agent faces
        o = a.get("orientation", 0)
        if o == 0:
            frame[r + m:r + m + q, c + m:c + tile - m] = 0
        elif o == 1:
            frame[r + tile - m - q:r + tile - m, c + m:c + tile - m] = 0
        elif o == 2:
            frame[r + m:r + tile - m, c + m:c + m + q] = 0
        else:
            frame[r + m:r + tile - m, c + tile - m - q:c + tile - m] = 0
    return frame


def reset_episode_stream(engine: MettaGrid, seed: int | None, started: bool) -> None:
    """Start the next episode of a one-game engine: a given seed restarts the seeded stream; otherwise
    the first reset starts the engine's own stream and later ones continue it."""
    if seed is not None:
        engine.reset(seed)
    elif started:
        engine.reset_games(np.ones(1, dtype=np.bool_))  # the next episode of the stream
    else:
        engine.reset()


def check_config(config: object, who: str) -> GameConfig:
    if not isinstance(config, GameConfig):
        raise TypeError(f"{who}: config must be an envs.GameConfig (e.g. envs.presets.arena()), "
                        f"got {type(config).__name__}")
    return config


def check_seed(seed: object, who: str, allow_none: bool = False) -> int | None:
    if seed is None and allow_none:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{who}: seed must be a non-negative int{' or None' if allow_none else ''}, got {seed!r}")
    return int(seed)


def check_render_mode(render_mode: object, who: str) -> str | None:
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"{who}: render_mode must be None or 'rgb_array', got {render_mode!r}")
    return render_mode


def agent_episode_infos(stats: dict) -> list[dict]:
    """Each agent's view of a finished episode (one entry of `MettaGrid.episode_stats()`), in agent order:
    `{"episode": k, "steps": T, "reward": return, "agent": {stat: value}, "game": {stat: value}}`, plain
    Python numbers."""
    names = list(stats["agent"])
    per_agent = np.array([stats["agent"][k] for k in names], dtype=np.float64).T.tolist()  # [agents][stats]
    game = {k: float(v) for k, v in stats["game"].items()}
    episode, steps = int(stats["episode"]), int(stats["steps"])
    return [{"episode": episode, "steps": steps, "reward": r, "agent": dict(zip(names, values)), "game": dict(game)}
            for r, values in zip(np.asarray(stats["reward"], dtype=np.float64).tolist(), per_agent)]


def mean_episode_info(stats: dict) -> dict:
    """A finished episode as one PufferLib info entry: scalars averaged over the game's agents,
    `{"episode_return", "episode_length", "agent": {stat: mean}, "game": {stat}}` (PufferLib flattens the
    nested dicts to `agent/<stat>` and averages each key over the entries it receives)."""
    names = list(stats["agent"])
    means = np.array([stats["agent"][k] for k in names], dtype=np.float64).mean(axis=1).tolist()
    return {"episode_return": float(np.mean(stats["reward"])), "episode_length": int(stats["steps"]),
            "agent": dict(zip(names, means)),
            "game": {k: float(v) for k, v in stats["game"].items()}}
