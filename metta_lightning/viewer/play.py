"""Play in the browser: a person controls one agent from the keyboard while a policy plays the others.

    python -m metta_lightning play train_dir/arena/checkpoints/:latest --game arena_basic --agent 0
    python -m metta_lightning play --suite-sim arena/combat --others random     # no policy: random others
    python -m metta_lightning play run:v12 --game my_game.yaml --seed 3 --port 8000 --no-browser

The server (127.0.0.1 only) runs one game with the engine and serves the replay viewer in live mode. The
page sends the person's action (`POST api/play/step`); the server asks the policy for every other agent's
action (sampled from its logits, recurrent state carried), overrides the controlled agent's row, steps
the engine and answers with what changed, in the replay format, so the page holds the episode as a
replay that grows step by step (the step slider scrubs back through it). `api/play/save` writes the
episode so far as a `*.json.z` replay that `python -m metta_lightning replay` opens.

The page pings the server while it is open; when the pings stop (tab closed) the server says so and
keeps running, and reopening the URL resumes the same game.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np

from . import _Handler, _Server, bind_http_server, open_in_browser, serve_until_interrupted

__all__ = ["PlayError", "PlaySession", "PlayServer", "key_map", "resolve_play_game", "serve_play", "main"]

# Bodies of POST requests are a few bytes of JSON; anything larger is refused unread.
MAX_BODY = 64 * 1024
POST_ENDPOINTS = ("api/play/step", "api/play/restart", "api/play/agent", "api/play/save", "api/play/ping",
                  "api/play/bye")


class PlayError(ValueError):
    """A bad play request or setup (game, policy, agent, action, port), with a message for the user."""


def key_map(action_names: list[str]) -> list[dict[str, str]]:
    """Keys -> actions for this game's action list (only the actions the game has). The page shows it."""
    keys: list[tuple[str, str, str]] = []
    for d, arrow, wasd in (("north", "ArrowUp", "w"), ("south", "ArrowDown", "s"), ("west", "ArrowLeft", "a"),
                           ("east", "ArrowRight", "d")):
        keys.append((f"{arrow} {wasd.upper()}", f"move_{d}", f"move {d} (turns even if the move fails)"))
        keys.append((f"Shift+{arrow} Shift+{wasd.upper()}", f"rotate_{d}", f"turn {d} without moving"))
    keys += [("E", "get_items", "take the output of the faced converter"),
             ("R", "put_items", "give the faced converter its recipe's inputs"),
             ("F", "attack_0", "attack the nearest agent ahead (1 laser)")]
    keys += [(str(i + 1), f"attack_{i}", f"attack the {i + 1}th agent ahead") for i in range(9)]
    keys += [("X .", "noop", "do nothing"), ("G", "swap", "swap with the faced block")]
    keys += [(f"Alt+{i + 1}", f"change_glyph_{i}", f"show glyph {i}") for i in range(10)]
    names = set(action_names)
    return [{"keys": k, "action": a, "help": h} for k, a, h in keys if a in names]


def resolve_play_game(game: str | None = None, suite_sim: str | None = None, max_steps: int | None = None):
    """The GameConfig to play and a label for it: a preset name or a GameConfig YAML/JSON file (`game`), or a
    simulation of a suite (`suite_sim`, e.g. `arena/basic`); `max_steps` overrides the episode length."""
    from envs.presets import resolve_game

    from ..simulation import SimulationError, resolve_suite

    if game and suite_sim:
        raise PlayError("give --game or --suite-sim, not both")
    if suite_sim:
        try:
            suite = resolve_suite(suite_sim)
        except SimulationError as e:
            raise PlayError(f"--suite-sim {suite_sim}: {e}") from None
        if len(suite.simulations) != 1:
            raise PlayError(f"--suite-sim {suite_sim}: names {len(suite.simulations)} simulations "
                            f"({', '.join(suite.simulations)}); name one, e.g. {suite.name}/"
                            f"{next(iter(suite.simulations))}")
        short, sim = next(iter(suite.simulations.items()))
        try:
            cfg = sim.game_config()
        except SimulationError as e:
            raise PlayError(f"--suite-sim {suite_sim}: {e}") from None
        label = f"{suite.name}/{short}"
    else:
        game = game or "arena_basic"
        label = game
        source: Any = game
        if game.endswith((".yaml", ".yml", ".json")) or os.path.isfile(game):
            if not os.path.isfile(game):
                raise PlayError(f"--game {game}: file not found")
            import yaml

            try:
                source = yaml.safe_load(Path(game).read_text())
            except yaml.YAMLError as e:
                raise PlayError(f"--game {game}: not valid YAML/JSON ({e})") from None
            if not isinstance(source, dict):
                raise PlayError(f"--game {game}: expected a mapping of GameConfig fields, got "
                                f"{type(source).__name__}")
            label = Path(game).stem
            if "game" in source:  # a simulation's fields: a preset (or GameConfig fields) plus game_overrides
                from ..simulation import SimulationConfig

                try:
                    cfg = SimulationConfig.model_validate(source).game_config()
                except (SimulationError, ValueError) as e:
                    raise PlayError(f"--game {game}: {e}") from None
                source = None
        if source is not None:
            try:
                cfg = resolve_game(source, where="--game")
            except ValueError as e:
                raise PlayError(str(e)) from None
    if max_steps is not None:
        if max_steps < 1:
            raise PlayError(f"--max-steps must be >= 1, got {max_steps}")
        cfg = cfg.model_copy(update={"max_steps": int(max_steps)})
    # A played episode runs to max_steps; the training env's random first-episode cut would end it early.
    return cfg.model_copy(update={"random_first_episode_cut": False}), label


@dataclass
class _Policy:
    module: Any
    label: str
    uri: str | None
    remap: Any


class PlaySession:
    """One game (`num_envs=1`) of `config`: agent `agent` takes the person's actions, every other agent the
    policy's (or `others`: "noop" / "random" without a policy). Thread-safe: one request at a time."""

    def __init__(self, config, policy: Any = None, agent: int = 0, seed: int = 0, others: str = "noop",
                 replay_dir: str = "play_replays", game_label: str = "game", deterministic: bool = False):
        import torch

        from envs import MettaGrid
        from envs.info import EnvInfo

        if others not in ("noop", "random"):
            raise PlayError(f"--others must be noop or random, got {others!r}")
        self.config = config
        self.game_label = game_label
        self.others = others
        self.deterministic = deterministic
        self.seed = int(seed)
        self.replay_dir = str(replay_dir)
        self.lock = threading.RLock()
        self.env = MettaGrid(config, num_envs=1, seed=self.seed, auto_reset=False)
        self.num_agents = self.env.num_agents
        self.action_names = list(self.env.action_names)
        self._check_agent(agent)
        self.agent = int(agent)
        self.policy = self._load_policy(policy, EnvInfo.from_config(config)) if policy is not None else None
        self._torch = torch
        self._gen = torch.Generator().manual_seed(self.seed)
        self._rng = np.random.default_rng(self.seed)
        self.saved: list[str] = []
        self.last_actions = np.zeros(self.num_agents, dtype=np.int32)
        self.recorder = self.env.record_replays([0], self.replay_dir)
        self._start_episode(first=True)

    # ------------------------------------------------------------------ setup
    def _check_agent(self, agent: Any) -> None:
        if isinstance(agent, bool) or not isinstance(agent, (int, np.integer)):
            raise PlayError(f"agent must be an integer in [0, {self.num_agents - 1}], got {agent!r}")
        if not 0 <= agent < self.num_agents:
            raise PlayError(f"agent {agent} out of range: {self.game_label} has {self.num_agents} agents "
                            f"(0-{self.num_agents - 1})")

    def _load_policy(self, policy: Any, played) -> _Policy:
        from models.base import FeatureRemap

        from ..checkpoint import CheckpointError
        from ..simulation import load_policy_handle

        try:
            handle = load_policy_handle(policy, device="cpu")  # one game: the CPU is fast enough
        except CheckpointError as e:
            raise PlayError(f"policy: {e}") from None
        module = handle.policy.eval()
        trained_on = getattr(module, "env_info", None)
        remap = None
        if trained_on is not None:
            what = handle.uri or handle.label
            if list(trained_on.action_names) != list(played.action_names):
                raise PlayError(f"policy {what} does not fit game {self.game_label}: it was trained with actions "
                                f"{list(trained_on.action_names)}, the game has {list(played.action_names)}")
            if (trained_on.obs_height, trained_on.obs_width) != (played.obs_height, played.obs_width):
                raise PlayError(f"policy {what} does not fit game {self.game_label}: it sees "
                                f"{trained_on.obs_height}x{trained_on.obs_width} observations, the game gives "
                                f"{played.obs_height}x{played.obs_width}")
            remap = FeatureRemap.between(trained_on, played)
        return _Policy(module, handle.label, handle.uri, remap)

    def _update_metadata(self) -> None:
        self.recorder.metadata = {
            "mode": "play", "simulation": self.game_label, "controlled_agent": self.agent,
            "controlled_agents": self._controlled,
            "policy": self.policy.label if self.policy else f"none ({self.others})",
            "policy_uri": self.policy.uri if self.policy else None,
            "agent_policies": ["person" if a == self.agent else (self.policy.label if self.policy else self.others)
                               for a in range(self.num_agents)],
        }

    def _start_episode(self, first: bool = False) -> None:
        if not first:
            self.env.reset_games(np.ones(1, dtype=np.bool_))
        self.state = None
        if self.policy is not None and hasattr(self.policy.module, "initial_state"):
            self.state = self.policy.module.initial_state(self.num_agents, "cpu")
        self.is_init = self._torch.ones(self.num_agents, dtype=self._torch.bool)
        self.last_actions[:] = 0
        # [[step, agent], ...]: from that step on the person plays that agent (imitation learns each step
        # from the agent the person played then)
        self._controlled = [[0, self.agent]]
        self._update_metadata()

    # ------------------------------------------------------------------ requests
    def action_id(self, action: Any) -> int:
        """An action name (`move_north`) or id, checked against this game's actions."""
        if isinstance(action, str):
            if action in self.action_names:
                return self.action_names.index(action)
            raise PlayError(f"unknown action {action!r}; this game's actions: {', '.join(self.action_names)}")
        if isinstance(action, bool) or not isinstance(action, int):
            raise PlayError(f"action must be an action name or id, got {action!r}")
        if not 0 <= action < len(self.action_names):
            raise PlayError(f"action id {action} out of range [0, {len(self.action_names)})")
        return action

    def info(self) -> dict[str, Any]:
        with self.lock:
            return {"mode": "play", "game": self.game_label, "agent": self.agent, "num_agents": self.num_agents,
                    "policy": self.policy.label if self.policy else None,
                    "policy_uri": self.policy.uri if self.policy else None, "others": self.others,
                    "action_names": self.action_names, "keys": key_map(self.action_names),
                    "step": self.env.current_step(0), "episode": self.env.episode_index(0),
                    "done": bool(self.env.games_done()[0]), "saved": list(self.saved)}

    def replay(self) -> dict[str, Any]:
        """The episode so far, as a replay dict, with the session's `play` info."""
        with self.lock:
            r = self.recorder.replay(0)
            r["play"] = self.info()
            return r

    def _policy_actions(self) -> np.ndarray:
        torch = self._torch
        n = self.num_agents
        if self.policy is None:
            if self.others == "random":
                return self._rng.integers(0, len(self.action_names), n).astype(np.int32)
            return np.zeros(n, dtype=np.int32)
        with torch.inference_mode():
            obs = torch.from_numpy(self.env.observations)
            if self.policy.remap is not None:
                obs = self.policy.remap(obs)
            out = self.policy.module.forward_step(obs, self.state, self.is_init)
            self.state = out.get("state", None)
            logits = out["logits"].float()
            if self.deterministic:
                acts = logits.argmax(-1)
            else:
                acts = torch.multinomial(torch.softmax(logits, -1), 1, generator=self._gen).squeeze(-1)
        return acts.to(torch.int32).numpy()

    def step(self, action: Any = "noop") -> dict[str, Any]:
        """One engine step with the person's `action` for the controlled agent; returns the delta."""
        a = self.action_id(action)
        with self.lock:
            if self.env.games_done()[0]:
                raise PlayError(f"episode {self.env.episode_index(0)} is over (step {self.env.current_step(0)}); "
                                "restart to play the next one")
            actions = self._policy_actions()
            actions[self.agent] = a
            self.env.step(actions)
            self.is_init[:] = False
            self.last_actions = actions.copy()
            step = self.env.current_step(0)
            done = bool(self.env.games_done()[0])
            out = {"step": step, "episode": self.env.episode_index(0), "done": done, "actions": actions.tolist(),
                   "changes": self.recorder.changes(0, step)}
            if done and self.recorder.paths and self.recorder.paths[-1] not in self.saved:
                self.saved.append(self.recorder.paths[-1])  # the recorder wrote the finished episode
                out["saved"] = self.recorder.paths[-1]
            return out

    def restart(self) -> dict[str, Any]:
        """Start the next episode (a fresh map from the next episode's seed)."""
        with self.lock:
            self._start_episode()
            return self.replay()

    def set_agent(self, agent: Any) -> dict[str, Any]:
        with self.lock:
            self._check_agent(agent)
            self.agent = int(agent)
            step = self.env.current_step(0)
            if self._controlled[-1][0] == step:
                self._controlled.pop()
            self._controlled.append([step, self.agent])
            self._update_metadata()
            return self.info()

    def save(self) -> str:
        """Write the episode so far as a replay under `replay_dir`; returns its path."""
        with self.lock:
            try:
                path = self.recorder.save(0)
            except OSError as e:
                raise PlayError(f"cannot write the replay under {self.replay_dir}: {e}") from None
            self.saved.append(path)
            return path

    def engine_agents(self) -> list[dict[str, Any]]:
        """The engine's own view of every agent (agent_id order): for tests and debugging."""
        with self.lock:
            agents = [o for o in self.env.grid_objects(0) if o["layer"] == 0]
        return sorted(agents, key=lambda o: o["agent_id"])


class _PlayHandler(_Handler):
    server: "_PlayHttpServer"

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, msg: str) -> None:
        self._json(status, {"error": msg})

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].lstrip("/")
        session = self.server.session
        try:
            if path == "api/info":
                return self._json(HTTPStatus.OK, session.info())
            if path == "api/play/replay":
                return self._json(HTTPStatus.OK, session.replay())
        except Exception as e:  # noqa: BLE001 - answer, never die
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(e).__name__}: {e}")
        if path in POST_ENDPOINTS:
            return self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes POST")
        return super().do_GET()

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].lstrip("/")
        if path not in POST_ENDPOINTS:
            return self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: POST /{path}")
        try:
            body = self._read_json()
        except PlayError as e:
            return self._error(HTTPStatus.BAD_REQUEST, str(e))
        session = self.server.session
        try:
            if path == "api/play/step":
                if not isinstance(body, dict):
                    raise PlayError('step: expected a JSON object like {"action": "move_north"}')
                out = session.step(body.get("action", "noop"))
                self.server.heartbeat()
                return self._json(HTTPStatus.OK, out)
            if path == "api/play/restart":
                return self._json(HTTPStatus.OK, session.restart())
            if path == "api/play/agent":
                if not isinstance(body, dict) or "agent" not in body:
                    raise PlayError('agent: expected a JSON object like {"agent": 3}')
                return self._json(HTTPStatus.OK, session.set_agent(body["agent"]))
            if path == "api/play/save":
                saved = session.save()
                self.server.say(f"saved the episode: {saved}  (open it with: python -m metta_lightning replay {saved})")
                return self._json(HTTPStatus.OK, {"path": saved, "url": f"replays/{len(self.server.replays) - 1}"})
            if path == "api/play/bye":
                self.server.tab_closed("the browser tab was closed")
                return self._send(HTTPStatus.NO_CONTENT, b"", "text/plain")
            self.server.heartbeat()
            return self._json(HTTPStatus.OK, {"ok": True})
        except PlayError as e:
            return self._error(HTTPStatus.BAD_REQUEST, str(e))
        except Exception as e:  # noqa: BLE001 - a bug must not take the game down; report it
            self.server.say(f"error answering POST /{path}: {type(e).__name__}: {e}")
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(e).__name__}: {e}")

    def _read_json(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None:
            if self.headers.get("Transfer-Encoding"):
                raise PlayError("chunked request bodies are not accepted; send Content-Length")
            return {}
        try:
            n = int(length)
        except ValueError:
            raise PlayError(f"bad Content-Length {length!r}") from None
        if n < 0 or n > MAX_BODY:
            self.close_connection = True  # the unread body must not be parsed as the next request
            raise PlayError(f"request body of {n} bytes refused (at most {MAX_BODY})")
        raw = self.rfile.read(n) if n else b""
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PlayError(f"request body is not valid JSON ({e})") from None


class _PlayHttpServer(_Server):
    session: PlaySession
    tab_timeout: float = 5.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.messages: list[str] = []
        self.last_seen: float | None = None
        self.tab_open = False
        self._msg_lock = threading.Lock()

    def say(self, msg: str) -> None:
        with self._msg_lock:
            self.messages.append(msg)
        print(f"[play] {msg}", file=sys.stderr, flush=True)

    def heartbeat(self) -> None:
        self.last_seen = time.monotonic()
        if not self.tab_open:
            self.tab_open = True
            self.say("a browser tab is connected")

    def tab_closed(self, why: str) -> None:
        if self.tab_open:
            self.tab_open = False
            host, port = self.server_address[:2]
            self.say(f"{why}; the server keeps running: reopen http://{host}:{port}/ to continue "
                     "(Ctrl-C stops it)")

    def handle_error(self, request, client_address) -> None:  # a dropped connection is not worth a traceback
        self.say(f"connection from {client_address[0]}:{client_address[1]} failed: "
                 f"{sys.exc_info()[0].__name__}: {sys.exc_info()[1]}")


class PlayServer:
    """The viewer in live mode for `session` on `host:port` (0: any free port), in background threads."""

    def __init__(self, session: PlaySession, host: str = "127.0.0.1", port: int = 0, verbose: bool = False,
                 tab_timeout: float = 5.0):
        self.httpd = bind_http_server(_PlayHttpServer, _PlayHandler, host, port, PlayError)
        self.httpd.session = session
        self.httpd.replays = session.saved  # the episodes saved so far, served at replays/<i>
        self.httpd.verbose = verbose
        self.httpd.tab_timeout = float(tab_timeout)
        self.session = session
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None
        self._watch: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def messages(self) -> list[str]:
        return list(self.httpd.messages)

    def _watchdog(self) -> None:
        # The page pings every second; silence for tab_timeout means the tab is gone (or asleep).
        while not self._stop.wait(0.25):
            seen = self.httpd.last_seen
            if self.httpd.tab_open and seen is not None and time.monotonic() - seen > self.httpd.tab_timeout:
                self.httpd.tab_closed(f"no word from the browser tab for {self.httpd.tab_timeout:g} s (closed?)")

    def start(self) -> "PlayServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="play-server", daemon=True)
        self.thread.start()
        self._watch = threading.Thread(target=self._watchdog, name="play-watchdog", daemon=True)
        self._watch.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for t in (self.thread, self._watch):
            if t is not None:
                t.join(timeout=5)

    def __enter__(self) -> "PlayServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_play(policy: str | None = None, game: str | None = None, suite_sim: str | None = None, agent: int = 0,
               seed: int = 0, others: str = "noop", host: str = "127.0.0.1", port: int = 0,
               replay_dir: str = "play_replays", max_steps: int | None = None, open_browser: bool = True,
               block: bool = True, deterministic: bool = False, tab_timeout: float = 5.0) -> PlayServer:
    """Build the game and session, start the server, print (and open) the URL; block until Ctrl-C."""
    config, label = resolve_play_game(game, suite_sim, max_steps)
    session = PlaySession(config, policy=policy, agent=agent, seed=seed, others=others, replay_dir=replay_dir,
                          game_label=label, deterministic=deterministic)
    server = PlayServer(session, host=host, port=port, tab_timeout=tab_timeout).start()
    url = server.url
    who = session.policy.label if session.policy else f"no policy ({others} actions)"
    print(f"Play {label}: you are agent {agent} of {session.num_agents}; the others: {who}.\n"
          f"Open {url}  (Ctrl-C to stop; replays saved under {replay_dir})", flush=True)
    if open_browser:
        open_in_browser(url)
    if block:
        serve_until_interrupted(server)
    return server


def main(argv: list[str] | None = None) -> int:
    """The `play` command (`metta_lightning.commands.play`)."""
    from ..commands import run_command

    return run_command(["play", *(sys.argv[1:] if argv is None else argv)])
