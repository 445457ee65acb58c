"""Replays: one zlib-compressed JSON file (`*.json.z`) per recorded episode, on any fsspec URL.

Every object field is either a constant or a change list `[[step, value], ...]` (the value from that
step on). Objects carry id, type, type_name, location [col, row, layer], orientation and inventory
[[item, count], ...]; agents also agent_id, action, action_success, current_reward, total_reward,
frozen, group, glyph; converters also recipe ({inputs, outputs} as [[item, count], ...}), converting,
cooling_down.

Optional header keys (older replays lack them; readers must not require them): `metadata` (free-form,
e.g. {"policy": ..., "simulation": ..., "controlled_agent": ...}), `complete` (false when the episode
was saved before it ended, e.g. from `play`), and `seed` and `first_step`: with `config`, `env` (the game's
index in its batch) and `episode` they let `demonstration` play the episode again through the engine and
recover what every agent observed (replays do not store observations: they would be ~100x larger).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np

REPLAY_VERSION = 1
# Keys every replay carries (GAME.md); a file without them is some other JSON.
REQUIRED_KEYS = ("version", "map_size", "num_agents", "max_steps", "objects")


class ReplayError(ValueError):
    """A replay path or URL that does not exist, or a file that is not a readable MettaGrid replay."""


class _Episode:
    """Change lists of one episode of one game, filled frame by frame."""

    def __init__(self, episode: int, first_step: int):
        self.episode = episode
        self.first_step = first_step
        self.last_step = first_step - 1
        self.objects: dict[int, dict[str, list]] = {}
        self.written = False

    def add_frame(self, step: int, frame: list[dict[str, Any]]) -> None:
        for obj in frame:
            fields = self.objects.setdefault(obj["id"], {})
            for key, value in obj.items():
                changes = fields.get(key)
                if changes is None:
                    fields[key] = [[step, value]]
                elif changes[-1][1] != value:
                    changes.append([step, value])
        self.last_step = step

    def changes_at(self, step: int) -> list[dict[str, Any]]:
        """The fields that took a new value at `step`, as `{"id": id, field: value, ...}` per changed object."""
        out = []
        for oid, fields in self.objects.items():
            changed = {k: ch[-1][1] for k, ch in fields.items() if ch[-1][0] == step and k != "id"}
            if changed:
                out.append({"id": oid, **changed})
        return out

    def objects_json(self) -> list[dict[str, Any]]:
        out = []
        for oid in sorted(self.objects):
            obj = {}
            for key, changes in self.objects[oid].items():
                obj[key] = changes[0][1] if len(changes) == 1 else changes
            out.append(obj)
        return out


def replay_frame(env, g: int, item_id: dict[str, int], dynamic_only: bool = False) -> list[dict[str, Any]]:
    """Game `g`'s objects now, in replay form (`item_id`: item name -> index in `env.item_names`)."""
    frame = []
    for o in env.grid_objects(g, dynamic_only):
        obj = {
            "id": o["id"],
            "type": o["type_id"],
            "type_name": o["type_name"],
            "location": [o["col"], o["row"], o["layer"]],
            "orientation": o.get("orientation", 0),
            "inventory": sorted([item_id[k], v] for k, v in o["inventory"].items()),
        }
        if o["layer"] == 0:
            obj.update(agent_id=o["agent_id"], action=o["last_action"], action_success=o["last_action_success"],
                       current_reward=o["current_reward"], total_reward=o["total_reward"],
                       frozen=o["frozen"], group=o["group"], glyph=o["glyph"])
        elif "converting" in o:
            obj.update(recipe={"inputs": sorted([item_id[k], v] for k, v in o["recipe_inputs"].items()),
                               "outputs": sorted([item_id[k], v] for k, v in o["recipe_outputs"].items())},
                       converting=o["converting"], cooling_down=o["cooling_down"])
        frame.append(obj)
    return frame


class ReplayRecorder:
    """Follows chosen games of a `MettaGrid` and writes each of their finished episodes."""

    def __init__(self, env, games: list[int], directory: str, metadata: dict | None = None):
        self.env = env
        self.games = list(games)
        self.directory = str(directory).rstrip("/")
        self.metadata = dict(metadata or {})
        """Written under `metadata` in every replay (JSON-serialisable; e.g. policy and simulation names)."""
        self.paths: list[str] = []
        self._episodes: dict[int, _Episode] = {}
        self._item_id = {name: i for i, name in enumerate(env.item_names)}
        self._fs, self._root = fsspec.core.url_to_fs(self.directory)
        self._fs.makedirs(self._root, exist_ok=True)

    def observe(self) -> None:
        """Record the current frame of every followed game; write the episodes that have ended."""
        core = self.env._core
        done = core.games_done()
        for g in self.games:
            episode, step = core.episode_index(g), core.current_step(g)
            rec = self._episodes.get(g)
            if rec is not None and rec.episode == episode and step == rec.last_step:
                continue  # nothing new
            if rec is None or rec.episode != episode or step < rec.last_step:
                rec = self._episodes[g] = _Episode(episode, step)
            rec.add_frame(step, self.frame(g, dynamic_only=bool(rec.objects)))
            if done[g] and not rec.written:
                self._write(g, rec)

    def frame(self, g: int, dynamic_only: bool = False) -> list[dict[str, Any]]:
        """Game `g`'s objects now, in replay form (with `dynamic_only`, only those that can change)."""
        return replay_frame(self.env, g, self._item_id, dynamic_only)

    def changes(self, g: int, step: int) -> list[dict[str, Any]]:
        """What changed in game `g`'s current episode at `step` (see `_Episode.changes_at`): the delta a
        live viewer appends to the replay it already holds."""
        rec = self._episodes.get(g)
        if rec is None:
            raise ValueError(f"game {g} is not recorded (recorded games: {self.games})")
        return rec.changes_at(step)

    def replay(self, g: int) -> dict[str, Any]:
        """The replay of game `g`'s current episode so far (what `save` writes), as a dict."""
        rec = self._episodes.get(g)
        if rec is None:
            raise ValueError(f"game {g} is not recorded (recorded games: {self.games})")
        return self._replay(g, rec)

    def save(self, g: int, path: str | None = None) -> str:
        """Write game `g`'s current episode so far (marked `complete: false` unless it has ended) to `path`
        (default `<directory>/game<g>_episode<e>_step<s>.json.z`); returns the written path or URL."""
        rec = self._episodes.get(g)
        if rec is None:
            raise ValueError(f"game {g} is not recorded (recorded games: {self.games})")
        if path is None:
            path = f"{self._root}/game{g}_episode{rec.episode}_step{rec.last_step}.json.z"
            fs = self._fs
        else:
            fs, path = fsspec.core.url_to_fs(str(path))
            parent = path.rsplit("/", 1)[0] if "/" in path else ""
            if parent:
                fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write(zlib.compress(json.dumps(self._replay(g, rec), separators=(",", ":")).encode()))
        return fs.unstrip_protocol(path) if "://" in self.directory or "://" in str(path) else path

    def _replay(self, g: int, rec: _Episode) -> dict[str, Any]:
        env = self.env
        height, width = env.map_size(g)
        slot = env.game_config(g)[0]
        replay = {
            "version": REPLAY_VERSION,
            "action_names": env.action_names,
            "item_names": env.item_names,
            "type_names": env.type_names,
            "map_size": [width, height],
            "num_agents": env.num_agents,
            "max_steps": rec.last_step,
            "env": g,
            "episode": rec.episode,
            "seed": env.seed,
            "first_step": rec.first_step,
            "config": env.configs[slot].model_dump(mode="json"),
            "objects": rec.objects_json(),
            "complete": bool(env.games_done()[g]),
        }
        if self.metadata:
            replay["metadata"] = self.metadata
        return replay

    def _write(self, g: int, rec: _Episode) -> None:
        replay = self._replay(g, rec)
        name = f"game{g}_episode{rec.episode}.json.z"
        path = f"{self._root}/{name}"
        with self._fs.open(path, "wb") as f:
            f.write(zlib.compress(json.dumps(replay, separators=(",", ":")).encode()))
        rec.written = True
        self.paths.append(self._fs.unstrip_protocol(path) if "://" in self.directory else path)


def load(path_or_url: str) -> dict[str, Any]:
    """Read one replay (`*.json.z`) from a local path or any fsspec URL (file://, memory://, s3://...).

    Raises `ReplayError` (a `ValueError`) naming the path when the file is missing, is not
    zlib-compressed JSON, or lacks the replay keys."""
    src = str(path_or_url)
    try:
        with fsspec.open(src, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ReplayError(f"{src}: replay not found") from None
    try:
        text = zlib.decompress(data)
    except zlib.error as e:  # truncated files fail here too ("incomplete or truncated stream")
        raise ReplayError(f"{src}: not a zlib-compressed .json.z replay ({e})") from None
    try:
        replay = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReplayError(f"{src}: not a MettaGrid replay: invalid JSON ({e})") from None
    if not isinstance(replay, dict):
        raise ReplayError(f"{src}: not a MettaGrid replay: expected a JSON object, got {type(replay).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in replay]
    if missing:
        raise ReplayError(f"{src}: not a MettaGrid replay: missing keys {', '.join(missing)}")
    return replay


# ---------------------------------------------------------------------------------------------- demonstrations
@dataclass
class Demonstration:
    """One recorded episode played again through the engine: what each agent saw and what it did next.

    `obs[t, a]` is agent `a`'s observation before step `t + 1` and `actions[t, a]` the action it took from
    it; `acted[t, a]` is False where the agent was frozen during that step (its action had no effect)."""

    source: str
    config: Any  # envs.GameConfig
    obs: np.ndarray  # [T, A, tokens, 3] uint8
    actions: np.ndarray  # [T, A] int64
    acted: np.ndarray  # [T, A] bool


def _is_changes(field: Any, value_is_list: bool) -> bool:
    """Whether a replay field is a change list `[[step, value], ...]` rather than one constant value."""
    if not isinstance(field, list) or not field:
        return False
    if not value_is_list:
        return True
    first = field[0]
    return isinstance(first, list) and len(first) == 2 and isinstance(first[1], list)


def values_per_step(field: Any, steps: int, value_is_list: bool = False) -> list:
    """A replay field's value (a constant, or a change list `[[step, value], ...]`: the value from that step
    on) at each step 0..steps-1."""
    if not _is_changes(field, value_is_list):
        return [field] * steps
    out, i = [], 0
    for step in range(steps):
        while i + 1 < len(field) and field[i + 1][0] <= step:
            i += 1
        out.append(field[i][1])
    return out


def demonstration(replay: dict[str, Any], source: str = "replay") -> Demonstration:
    """Play a replay's episode again through the engine, feeding every agent its recorded actions, and
    return the observations it recovers with those actions (see `Demonstration`).

    The game is rebuilt from the replay's config, seed, game index and episode, so its map and the agents'
    shuffled order are the recorded ones; after every step the agents' positions and inventories are
    compared with the replay. Raises `ReplayError` naming `source` for a replay that cannot be played again
    (recorded before replays carried their seed, recorded from mid-episode, or one that diverges)."""
    from .config import GameConfig
    from .mettagrid import MettaGrid

    missing = [k for k in ("seed", "first_step", "config", "env", "episode") if k not in replay]
    if missing:
        raise ReplayError(f"{source}: cannot be played again: it lacks {', '.join(missing)} (written before "
                          f"replays carried their seed); record the episode again")
    if replay["first_step"] != 0:
        raise ReplayError(f"{source}: cannot be played again: its recording starts at step {replay['first_step']}, "
                          f"not at the start of the episode")
    config = GameConfig.model_validate(replay["config"])
    game, steps = int(replay["env"]), int(replay["max_steps"])
    agents = sorted((o for o in replay["objects"] if "agent_id" in o), key=lambda o: o["agent_id"])
    num_agents = config.num_agents
    if [o["agent_id"] for o in agents] != list(range(num_agents)):
        raise ReplayError(f"{source}: expected agents 0..{num_agents - 1}, found ids {[o['agent_id'] for o in agents]}")
    frames = steps + 1
    actions = np.array([values_per_step(o["action"], frames) for o in agents], dtype=np.int64).T  # [frames, A]
    frozen = np.array([values_per_step(o["frozen"], frames) for o in agents], dtype=np.int64).T
    locations = [values_per_step(o["location"], frames, value_is_list=True) for o in agents]
    inventories = [values_per_step(o["inventory"], frames, value_is_list=True) for o in agents]

    env = MettaGrid(config, num_envs=game + 1, seed=int(replay["seed"]), auto_reset=False)
    if replay["episode"] != 0:
        env.set_next_episode(game, int(replay["episode"]))
        env.reset_games(np.arange(game + 1) == game)
    rows = slice(game * num_agents, (game + 1) * num_agents)
    obs = np.empty((steps, num_agents, *env.obs_shape), dtype=np.uint8)
    step_actions = np.zeros(env.num_rows, dtype=np.int32)
    item_id = {name: i for i, name in enumerate(env.item_names)}
    for t in range(steps):
        obs[t] = env.observations[rows]
        step_actions[rows] = actions[t + 1]
        env.step(step_actions)
        for o in replay_frame(env, game, item_id, dynamic_only=True):
            if "agent_id" not in o:
                continue
            a, where, held = o["agent_id"], o["location"], o["inventory"]
            if where != locations[a][t + 1] or held != inventories[a][t + 1]:
                raise ReplayError(f"{source}: played again, step {t + 1} differs from the recording (agent {a}: "
                                  f"at {where} holding {held}, recorded at {locations[a][t + 1]} holding "
                                  f"{inventories[a][t + 1]}); was it written by another engine version?")
    return Demonstration(source, config, obs, actions[1:], frozen[1:] == 0)
