"""Replays: one zlib-compressed JSON file (`*.json.z`) per recorded episode, on any fsspec URL.

Every object field is either a constant or a change list `[[step, value], ...]` (the value from that
step on). Objects carry id, type, type_name, location [col, row, layer], orientation and inventory
[[item, count], ...]; agents also agent_id, action, action_success, current_reward, total_reward,
frozen, group, glyph; converters also recipe ({inputs, outputs} as [[item, count], ...}), converting,
cooling_down.

Optional header keys (older replays lack them; readers must not require them): `metadata` (free-form,
e.g. {"policy": ..., "simulation": ..., "controlled_agent": ...}) and `complete` (false when the episode
was saved before it ended, e.g. from `play`).
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import fsspec

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
        frame = []
        for o in self.env._core.grid_objects(g, dynamic_only):
            obj = {
                "id": o["id"],
                "type": o["type_id"],
                "type_name": o["type_name"],
                "location": [o["col"], o["row"], o["layer"]],
                "orientation": o.get("orientation", 0),
                "inventory": sorted([self._item_id[k], v] for k, v in o["inventory"].items()),
            }
            if o["layer"] == 0:
                obj.update(agent_id=o["agent_id"], action=o["last_action"], action_success=o["last_action_success"],
                           current_reward=o["current_reward"], total_reward=o["total_reward"],
                           frozen=o["frozen"], group=o["group"], glyph=o["glyph"])
            elif "converting" in o:
                obj.update(recipe={"inputs": sorted([self._item_id[k], v] for k, v in o["recipe_inputs"].items()),
                                   "outputs": sorted([self._item_id[k], v] for k, v in o["recipe_outputs"].items())},
                           converting=o["converting"], cooling_down=o["cooling_down"])
            frame.append(obj)
        return frame

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
            "config": env.config.model_dump(mode="json"),
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
