"""Run a policy on suites of named simulations; record per-agent episode stats, rewards and replays.

A simulation is a game (a preset name or a GameConfig dict, plus overrides), a number of episodes and a
time limit; a suite is a named set of them. Built-in suites (`SUITES`):

    arena   arena/basic (no combat), arena/combat (lasers and armor): the full 24-agent arena
    smoke   smoke/basic, smoke/combat: a 4-agent 12x12 room, 30-step episodes (CI-sized)

`resolve_suite` also accepts one simulation (`arena/combat` -> the `arena` suite with only that one),
a comma-separated list of either, or a YAML file `{name, simulations: {<sim>: {game, game_overrides,
num_episodes, max_time_s, ...}}}`.

The policy is an `nn.Module` with the `models` interface (`forward_step`, `initial_state`) or a checkpoint
URI (`metta_lightning.checkpoint.load_policy`). It runs in eval mode under `torch.inference_mode` on env
instances of its own (never the training envs), sampling actions from its logits (or argmax with
`deterministic`). Observation features are remapped by name when the simulation's env numbers them
differently from the policy's training env. Each finished episode's `MettaGrid.episode_stats()` goes to
the `StatsDB` (one `simulations` row per policy and simulation), and the first `replay_episodes`
episodes of each simulation are recorded as replays under `<replay_dir>/<policy>/<suite>/<sim>/`.

Cross-play (`run_match`, `play_pair`, `cross_play`; `evaluate --cross-play`): several policies in one game,
each acting for its own agents with its own recurrent state. `assign_agents` splits a game's agents by
shares (seats rotate with the game index, so no policy keeps a lucky spawn point) or gives the first
policy a fixed team of agent ids. The NPC policies `random` and `noop` (`NPCPolicy`) are opponents that
need no checkpoint. A match is one `simulations` row under the first policy; `agent_policies` names each
agent's policy and `agent_groups` its side, and the stats queries score it apart from solo play.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from envs.config import GameConfig
from envs.info import EnvInfo
from models.base import FeatureRemap

from .stats_db import StatsDB, flatten_config

log = logging.getLogger(__name__)

__all__ = ["SimulationConfig", "SuiteConfig", "SimulationError", "SimulationResult", "SuiteResult", "SUITES",
           "PolicyHandle", "load_policy_handle", "resolve_suite", "run_simulation", "run_suite", "evaluate",
           "NPCPolicy", "NPC_POLICIES", "MatchResult", "assign_agents", "run_match", "play_pair", "cross_play",
           "format_matches", "write_result"]


class SimulationError(RuntimeError):
    """An unknown suite or simulation, a bad suite file, or a simulation that finished no episode."""


class SimulationConfig(BaseModel):
    """One named simulation: a game, how many episodes to play and how long it may take."""

    model_config = ConfigDict(extra="forbid")

    game: str | dict = "arena_basic"
    """A preset name (`envs.presets.PRESETS`) or GameConfig fields."""
    game_overrides: dict = Field(default_factory=dict)
    """GameConfig fields merged over `game` (e.g. {max_steps: 200})."""
    num_episodes: PositiveInt = 1
    max_time_s: PositiveFloat = 600.0
    """Wall-clock limit; episodes not finished by then are dropped (with a warning)."""
    num_envs: PositiveInt | None = None
    """Games stepped together (default: min(num_episodes, 4))."""
    seed: int = 0

    def game_config(self) -> GameConfig:
        from envs.presets import resolve_game

        try:
            cfg = resolve_game(self.game, self.game_overrides)
        except ValueError as e:
            raise SimulationError(f"bad game for simulation: {e}") from None
        # Evaluation episodes run to their end: no random cut of the first episode.
        return cfg.model_copy(update={"random_first_episode_cut": False})


class SuiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    simulations: dict[str, SimulationConfig]
    """Simulations by short name; their full name is `<suite>/<short name>`."""


_SMOKE_MAP = {"num_agents": 4, "rooms": [1, 1], "room_size": 12, "border": 1,
              "objects": {"wall": 4, "altar": 1, "mine_red": 2, "generator_red": 1, "lasery": 1, "armory": 1}}

SUITES: dict[str, SuiteConfig] = {
    "arena": SuiteConfig(name="arena", simulations={
        "basic": SimulationConfig(game="arena_basic", num_episodes=2, max_time_s=300),
        "combat": SimulationConfig(game="arena_combat", num_episodes=2, max_time_s=300),
    }),
    "smoke": SuiteConfig(name="smoke", simulations={
        "basic": SimulationConfig(game="arena_basic", game_overrides={"max_steps": 30, "map_builder": _SMOKE_MAP},
                                  num_episodes=2, max_time_s=60),
        "combat": SimulationConfig(game="arena_combat", game_overrides={"max_steps": 30, "map_builder": _SMOKE_MAP},
                                   num_episodes=2, max_time_s=60),
    }),
}


def _known() -> str:
    sims = [f"{s}/{n}" for s, cfg in SUITES.items() for n in cfg.simulations]
    return f"suites: {', '.join(SUITES)}; simulations: {', '.join(sims)}; or a suite YAML file"


def resolve_suite(spec: str | SuiteConfig | dict) -> SuiteConfig:
    """A suite name, a simulation name (`arena/combat`), a comma-separated list of those (of one suite),
    a YAML file path, a dict or a `SuiteConfig`."""
    if isinstance(spec, SuiteConfig):
        return spec
    if isinstance(spec, dict):
        try:
            return SuiteConfig.model_validate(spec)
        except Exception as e:  # noqa: BLE001
            raise SimulationError(f"bad suite config: {e}") from None
    spec = str(spec).strip()
    if spec.endswith((".yaml", ".yml")) or Path(spec).is_file():
        import yaml

        path = Path(spec)
        if not path.is_file():
            raise SimulationError(f"suite file {spec!r} not found")
        try:
            data = yaml.safe_load(path.read_text())
            return SuiteConfig.model_validate(data)
        except Exception as e:  # noqa: BLE001
            raise SimulationError(f"{spec}: bad suite file: {e}") from None
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise SimulationError(f"empty suite name ({_known()})")
    suite_name, sims = None, {}
    for part in parts:
        name, _, sim = part.partition("/")
        if name not in SUITES:
            raise SimulationError(f"unknown suite {name!r} in {spec!r} ({_known()})")
        if suite_name not in (None, name):
            raise SimulationError(f"{spec!r} mixes suites {suite_name!r} and {name!r}; evaluate them separately")
        suite_name = name
        if not sim:
            sims.update(SUITES[name].simulations)
        elif sim in SUITES[name].simulations:
            sims[sim] = SUITES[name].simulations[sim]
        else:
            raise SimulationError(f"unknown simulation {part!r} ({_known()})")
    return SuiteConfig(name=suite_name, simulations=sims)


# ---------------------------------------------------------------------------------------------- policies


@dataclass
class PolicyHandle:
    """A policy to evaluate and how the database names it (`policy_key`, `policy_version`)."""

    policy: torch.nn.Module
    key: str
    version: int = 0
    uri: str | None = None

    @property
    def label(self) -> str:
        return f"{self.key}:v{self.version}"


def load_policy_handle(policy: torch.nn.Module | str | PolicyHandle, key: str | None = None,
                       version: int | None = None, device: str | torch.device = "cpu") -> PolicyHandle:
    """Wrap an in-memory policy, name an NPC (`random`, `noop`), or load a checkpoint URI (`<run>:v<epoch>.mpt`,
    `<dir>/:latest`, run name, any fsspec URL); the key defaults to the artifact's run and the version to its
    epoch."""
    if isinstance(policy, PolicyHandle):
        return policy
    if isinstance(policy, torch.nn.Module):
        return PolicyHandle(policy, key or "policy", int(version or 0))
    if str(policy) in NPC_POLICIES:  # a built-in opponent, named as itself in the database
        return PolicyHandle(NPCPolicy(str(policy)), key or str(policy), int(version or 0), uri=str(policy))
    from .checkpoint import load_artifact  # only needed for URIs

    module, spec, url = load_artifact(str(policy), device=device)
    if key is None:
        key = spec.get("run") or Path(str(url)).name.split(":")[0].removesuffix(".mpt")
    if version is None:
        version = int(spec.get("epoch", 0) or 0)
    return PolicyHandle(module, key, int(version), uri=str(url))


NPC_POLICIES = ("random", "noop")


class NPCPolicy(torch.nn.Module):
    """A fixed, untrained opponent: `random` (uniform over the actions) or `noop` (always the noop action).
    It picks its own actions (`actions` in its outputs), so deterministic evaluation does not turn
    `random` into a constant."""

    def __init__(self, kind: str, seed: int = 0) -> None:
        super().__init__()
        if kind not in NPC_POLICIES:
            raise SimulationError(f"unknown NPC policy {kind!r} (NPC policies: {', '.join(NPC_POLICIES)})")
        self.kind = kind
        self.seed = int(seed)
        self.num_actions: int | None = None
        self.noop_index: int | None = None
        self._gen = torch.Generator().manual_seed(self.seed)

    def bind(self, env_info: EnvInfo) -> None:
        """Learn the game's actions (every simulation calls this before playing)."""
        names = list(env_info.action_names)
        if self.kind == "noop" and "noop" not in names:
            raise SimulationError(f"NPC policy 'noop': the game has no noop action (actions: {names})")
        self.num_actions = len(names)
        self.noop_index = names.index("noop") if "noop" in names else None

    def forward_step(self, obs: torch.Tensor, state, is_init: torch.Tensor) -> dict:
        if self.num_actions is None:
            raise SimulationError(f"NPC policy {self.kind!r} used before bind(env_info)")
        rows = obs.shape[0]
        logits = torch.zeros(rows, self.num_actions, device=obs.device)
        if self.kind == "random":
            actions = torch.randint(self.num_actions, (rows,), generator=self._gen).to(obs.device)
        else:
            actions = torch.full((rows,), self.noop_index, dtype=torch.int64, device=obs.device)
            logits[:, self.noop_index] = 1e4
        return {"logits": logits, "actions": actions}


def _policy_env_info(policy: torch.nn.Module) -> EnvInfo | None:
    info = getattr(policy, "env_info", None)
    return info if isinstance(info, EnvInfo) else None


def _device_of(policy: torch.nn.Module) -> torch.device:
    for p in policy.parameters():
        return p.device
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------- running


@dataclass
class SimulationResult:
    name: str
    """Full name, `<suite>/<sim>`."""
    suite: str
    episodes: list[dict]
    """`MettaGrid.episode_stats()` dicts, plus `replay_url` when recorded."""
    config: GameConfig
    seconds: float
    timed_out: bool = False
    env: str = ""
    """What the game was built from (a preset name, or `custom`)."""

    @property
    def mean_reward(self) -> float:
        """Mean episode return per agent-episode (the simulation's score)."""
        if not self.episodes:
            return float("nan")
        return float(np.mean(np.concatenate([np.asarray(e["reward"], dtype=np.float64) for e in self.episodes])))

    def mean_metric(self, metric: str) -> float:
        vals = [np.asarray(e["agent"][metric], dtype=np.float64) for e in self.episodes if metric in e["agent"]]
        return float(np.mean(np.concatenate(vals))) if vals else float("nan")


@dataclass
class SuiteResult:
    suite: str
    policy: str
    simulations: dict[str, SimulationResult] = field(default_factory=dict)
    """By short name."""

    @property
    def scores(self) -> dict[str, float]:
        return {name: r.mean_reward for name, r in self.simulations.items()}

    @property
    def score(self) -> float:
        vals = [v for v in self.scores.values() if not math.isnan(v)]
        return float(np.mean(vals)) if vals else float("nan")

    def log_dict(self, prefix: str = "eval") -> dict[str, float]:
        """`{eval/<suite>/score, eval/<suite>/<sim>}`."""
        out = {f"{prefix}/{self.suite}/score": self.score}
        out.update({f"{prefix}/{self.suite}/{name}": v for name, v in self.scores.items()})
        return out


def run_simulation(policy: torch.nn.Module, sim: SimulationConfig, name: str = "sim", suite: str = "",
                   replay_dir: str | None = None, replay_episodes: int = 1, deterministic: bool = False,
                   seed: int | None = None) -> SimulationResult:
    """Play `sim.num_episodes` episodes with `policy` (every agent) on a fresh env."""
    return run_match([policy], sim, name=name, suite=suite, replay_dir=replay_dir, replay_episodes=replay_episodes,
                     deterministic=deterministic, seed=seed)


def assign_agents(num_agents: int, num_envs: int, shares: Sequence[float] | None = None,
                  team: Sequence[int] | None = None) -> np.ndarray:
    """Which policy plays each agent of each game: int `[num_envs, num_agents]` of policy indices.

    `team` (agent ids) gives policy 0 those agents and policy 1 the rest, in every game. Otherwise `shares`
    (one per policy, summing to 1; default equal) sets how many agents each policy plays (at least one
    each), and the seats rotate with the game index, so over several games every seat is played by every
    policy and no side keeps a lucky spawn point."""
    if team is not None:
        ids = sorted({int(a) for a in team})
        bad = [a for a in ids if not 0 <= a < num_agents]
        if bad or not ids or len(ids) == num_agents:
            raise SimulationError(f"cross-play team {list(team)}: needs agent ids in 0..{num_agents - 1}, "
                                  f"leaving at least one agent to the opponent")
        row = np.ones(num_agents, dtype=np.int64)
        row[ids] = 0
        return np.tile(row, (num_envs, 1))
    shares = [1.0] if shares is None else [float(x) for x in shares]
    k = len(shares)
    if any(x <= 0 for x in shares) or not math.isclose(sum(shares), 1.0, abs_tol=1e-6):
        raise SimulationError(f"cross-play shares {shares}: each must be > 0 and they must sum to 1")
    if k > num_agents:
        raise SimulationError(f"{k} policies cannot share a game of {num_agents} agent(s)")
    counts = [max(1, int(round(x * num_agents))) for x in shares]
    while sum(counts) > num_agents:  # rounding up the small shares took agents from the big ones
        counts[int(np.argmax(counts))] -= 1
    counts[int(np.argmax(counts))] += num_agents - sum(counts)
    seats = np.repeat(np.arange(k), counts)
    return np.stack([np.roll(seats, g * counts[0]) for g in range(num_envs)])


def run_match(policies: Sequence[torch.nn.Module], sim: SimulationConfig, name: str = "sim", suite: str = "",
              replay_dir: str | None = None, replay_episodes: int = 1, deterministic: bool = False,
              seed: int | None = None, shares: Sequence[float] | None = None,
              team: Sequence[int] | None = None) -> SimulationResult:
    """Play `sim.num_episodes` episodes in which the agents are split among `policies` (see
    `assign_agents`); each policy acts for its own agents with its own recurrent state. One policy: it
    plays every agent (`run_simulation`). Each episode dict gets `agent_policy`: the policy index of
    every agent."""
    from envs import MettaGrid

    if not policies:
        raise SimulationError(f"simulation {name!r}: no policy to play")
    cfg = sim.game_config()
    env_info = EnvInfo.from_config(cfg)
    remaps = []
    for i, policy in enumerate(policies):
        if isinstance(policy, NPCPolicy):
            policy.bind(env_info)
        trained_on = _policy_env_info(policy)
        if trained_on is not None and list(trained_on.action_names) != list(env_info.action_names):
            raise SimulationError(f"simulation {name!r}: its actions {env_info.action_names} differ from the "
                                  f"actions of policy {i} ({trained_on.action_names})")
        remaps.append(FeatureRemap.between(trained_on, env_info) if trained_on is not None else None)

    # Each policy acts on its own device with its own sampling stream (the first one's is the
    # simulation's seed, as when one policy plays alone).
    devices = [_device_of(p) for p in policies]
    num_envs = sim.num_envs or min(sim.num_episodes, 4)
    seed = sim.seed if seed is None else seed
    env = MettaGrid(cfg, num_envs=num_envs, seed=seed)
    seats = (np.zeros((num_envs, env.num_agents), dtype=np.int64) if len(policies) == 1
             else assign_agents(env.num_agents, num_envs, shares, team))
    flat_seats = seats.reshape(-1)
    rows_of = [torch.from_numpy(np.flatnonzero(flat_seats == i)) for i in range(len(policies))]
    recorder = None
    if replay_dir and replay_episodes > 0:
        recorder = env.record_replays(list(range(min(num_envs, replay_episodes))), str(replay_dir))
        recorder.metadata = {"mode": "evaluate", "suite": suite, "simulation": name}
    gens = [torch.Generator(device=d).manual_seed(seed + i) for i, d in enumerate(devices)]
    was_training = [p.training for p in policies]
    for p in policies:
        p.eval()
    episodes: list[dict] = []
    start = time.perf_counter()
    timed_out = False
    alone = len(policies) == 1
    try:
        with torch.inference_mode():
            obs = env.reset()
            rows = env.num_rows
            states = [p.initial_state(len(r), d) if hasattr(p, "initial_state") else None
                      for p, r, d in zip(policies, rows_of, devices)]
            done = np.ones(rows, dtype=bool)
            actions = np.zeros(rows, dtype=np.int32)
            while len(episodes) < sim.num_episodes:
                if time.perf_counter() - start > sim.max_time_s:
                    timed_out = True
                    break
                o, is_init = torch.from_numpy(obs), torch.from_numpy(done.copy())
                for i, (policy, r, dev) in enumerate(zip(policies, rows_of, devices)):
                    mine = (o if alone else o[r]).to(dev)
                    if remaps[i] is not None:
                        mine = remaps[i](mine)
                    out = policy.forward_step(mine, states[i], (is_init if alone else is_init[r]).to(dev))
                    logits, states[i] = out["logits"], out.get("state", None)
                    if "actions" in out.keys():  # a scripted policy picks its own actions
                        chosen = out["actions"]
                    elif deterministic:
                        chosen = logits.argmax(-1)
                    else:
                        probs = torch.softmax(logits.float(), -1)
                        chosen = torch.multinomial(probs, 1, generator=gens[i]).squeeze(-1)
                    actions[r.numpy()] = chosen.to(torch.int32).cpu().numpy()
                obs, _, terms, truncs = env.step(actions)
                done = np.logical_or(terms, truncs)
                if done.any():
                    episodes.extend(env.episode_stats())
                    if recorder is not None and len(recorder.paths) >= replay_episodes:
                        env.record_replays(None)
                        recorder = _Stopped(recorder.paths)
            if recorder is not None and not isinstance(recorder, _Stopped):
                env.record_replays(None)
    finally:
        for p, t in zip(policies, was_training):
            p.train(t)
        env.close()
    seconds = time.perf_counter() - start
    episodes = sorted(episodes, key=lambda e: (e["episode"], e["env"]))[: sim.num_episodes]
    for e in episodes:
        e["agent_policy"] = seats[int(e["env"])].tolist()
    if recorder is not None:
        by_name = {Path(p).name: p for p in recorder.paths}
        for e in episodes:
            url = by_name.get(f"game{e['env']}_episode{e['episode']}.json.z")
            if url:
                e["replay_url"] = url
    if timed_out:
        log.warning("simulation %s: time limit %.0fs reached after %d of %d episodes", name, sim.max_time_s,
                    len(episodes), sim.num_episodes)
    if not episodes:
        raise SimulationError(f"simulation {name!r} finished no episode within max_time_s={sim.max_time_s}s "
                              f"(max_steps={cfg.max_steps}); raise max_time_s or lower max_steps")
    return SimulationResult(name=name, suite=suite, episodes=episodes, config=cfg, seconds=seconds,
                            timed_out=timed_out, env=sim.game if isinstance(sim.game, str) else "custom")


@dataclass
class _Stopped:
    paths: list[str]


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in s)


def write_result(db: StatsDB, result: SimulationResult, handle: PolicyHandle | Sequence[PolicyHandle]) -> str:
    """Append one simulation's episodes to `db`; returns the simulation id. A match (several handles, in
    the order given to `run_match`) is one `simulations` row under the first policy; `agent_policies` says
    which policy played each agent and `agent_groups` puts each policy's agents in group = its index."""
    handles = [handle] if isinstance(handle, PolicyHandle) else list(handle)
    first = handles[0]
    sim_id = db.add_simulation(result.name, result.suite, env=result.env,
                               policy_key=first.key, policy_version=first.version)
    attrs = flatten_config(result.config.model_dump(mode="json"))
    if first.uri:
        attrs["policy.uri"] = first.uri
    if len(handles) > 1:
        attrs["crossplay.policies"] = json.dumps([h.label for h in handles])
    for e in result.episodes:
        seats = e.get("agent_policy") or [0] * len(e["reward"])
        db.add_episode(sim_id, e, first.key, first.version, attributes=attrs, replay_url=e.get("replay_url"),
                       groups=seats, agent_policies=[(handles[i].key, handles[i].version) for i in seats])
    db.finish_simulation(sim_id)
    return sim_id


def run_suite(policy: torch.nn.Module | str | PolicyHandle, suite: str | SuiteConfig, db: StatsDB | None = None,
              replay_dir: str | None = None, replay_episodes: int = 1, deterministic: bool = False,
              policy_key: str | None = None, policy_version: int | None = None,
              device: str | torch.device = "cpu") -> SuiteResult:
    """Run every simulation of `suite` with one policy; append to `db` when given."""
    suite_cfg = resolve_suite(suite)
    handle = load_policy_handle(policy, policy_key, policy_version, device=device)
    result = SuiteResult(suite=suite_cfg.name, policy=handle.label)
    for short, sim in suite_cfg.simulations.items():
        full = f"{suite_cfg.name}/{short}"
        rdir = None
        if replay_dir:
            rdir = f"{str(replay_dir).rstrip('/')}/{_safe(handle.key)}/v{handle.version}/{_safe(suite_cfg.name)}/{_safe(short)}"
        r = run_simulation(handle.policy, sim, name=full, suite=suite_cfg.name, replay_dir=rdir,
                           replay_episodes=replay_episodes, deterministic=deterministic)
        result.simulations[short] = r
        log.info("%s on %s: mean reward %.3f over %d episodes (%.1fs)", handle.label, full, r.mean_reward,
                 len(r.episodes), r.seconds)
        if db is not None:
            write_result(db, r, handle)
    return result


def evaluate(policies: Iterable[torch.nn.Module | str | PolicyHandle], suite: str | SuiteConfig,
             db_uri: str, replay_dir: str | None = None, replay_episodes: int = 1, deterministic: bool = False,
             device: str | torch.device = "cpu") -> list[SuiteResult]:
    """Policies x suite -> appended to the database at `db_uri`; returns the results."""
    suite_cfg = resolve_suite(suite)  # fail on a bad name before loading anything
    handles = [load_policy_handle(p, device=device) for p in policies]  # fail on a bad URI before running
    results = []
    with StatsDB(db_uri) as db:
        for h in handles:
            results.append(run_suite(h, suite_cfg, db=db, replay_dir=replay_dir, replay_episodes=replay_episodes,
                                     deterministic=deterministic))
    return results


@dataclass
class MatchResult:
    """One simulation played by two or more policies together (`policies[i]` plays the agents whose
    `agent_policy` is i)."""

    simulation: SimulationResult
    policies: list[str]
    """Labels (`<key>:v<version>`), in seat order."""

    def mean_rewards(self) -> list[float]:
        """Each policy's mean episode return per agent-episode it played."""
        sums = np.zeros(len(self.policies))
        counts = np.zeros(len(self.policies))
        for e in self.simulation.episodes:
            seats = np.asarray(e["agent_policy"])
            reward = np.asarray(e["reward"], dtype=np.float64)
            np.add.at(sums, seats, reward)
            np.add.at(counts, seats, 1)
        return [float(s / c) if c else float("nan") for s, c in zip(sums, counts)]


def cross_play(policies: Iterable[torch.nn.Module | str | PolicyHandle], suite: str | SuiteConfig, db_uri: str,
               replay_dir: str | None = None, replay_episodes: int = 1, deterministic: bool = False,
               device: str | torch.device = "cpu", shares: Sequence[float] | None = None,
               team: Sequence[int] | None = None) -> list[MatchResult]:
    """Every pair of `policies` plays every simulation of `suite` together (the first of the pair on
    `shares[0]` of the agents, or on the agent ids in `team`); appended to the database at `db_uri`.
    NPC names (`random`, `noop`) are policies too."""
    suite_cfg = resolve_suite(suite)
    handles = [load_policy_handle(p, device=device) for p in policies]
    labels = [h.label for h in handles]
    if len(handles) < 2:
        raise SimulationError(f"cross-play needs at least two policies, got {len(handles)}")
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise SimulationError(f"cross-play: policy {', '.join(dupes)} given twice (each policy once)")
    results = []
    with StatsDB(db_uri) as db:
        for a, b in itertools.combinations(handles, 2):
            results.extend(play_pair(a, b, suite_cfg, db, replay_dir, replay_episodes, deterministic, shares, team))
    return results


def play_pair(a: PolicyHandle, b: PolicyHandle, suite: str | SuiteConfig, db: StatsDB | None = None,
              replay_dir: str | None = None, replay_episodes: int = 1, deterministic: bool = False,
              shares: Sequence[float] | None = None, team: Sequence[int] | None = None) -> list[MatchResult]:
    """`a` against `b` on every simulation of `suite` (appended to `db` when given)."""
    suite_cfg = resolve_suite(suite)
    shares = [0.5, 0.5] if shares is None and team is None else shares
    out = []
    for short, sim in suite_cfg.simulations.items():
        full = f"{suite_cfg.name}/{short}"
        rdir = None
        if replay_dir:
            rdir = (f"{str(replay_dir).rstrip('/')}/crossplay/{_safe(a.label)}_vs_{_safe(b.label)}/"
                    f"{_safe(suite_cfg.name)}/{_safe(short)}")
        r = run_match([a.policy, b.policy], sim, name=full, suite=suite_cfg.name, replay_dir=rdir,
                      replay_episodes=replay_episodes, deterministic=deterministic, shares=shares, team=team)
        match = MatchResult(r, [a.label, b.label])
        ra, rb = match.mean_rewards()
        log.info("%s vs %s on %s: %.3f vs %.3f over %d episodes (%.1fs)", a.label, b.label, full, ra, rb,
                 len(r.episodes), r.seconds)
        if db is not None:
            write_result(db, r, [a, b])
        out.append(match)
    return out


def format_matches(matches: list[MatchResult]) -> str:
    """A plain-text table: one row per match (pair x simulation) with both sides' mean reward."""
    if not matches:
        return "(no matches)"
    head = ["policy", "opponent", "simulation", "reward", "opponent reward", "episodes"]
    rows = []
    for m in matches:
        ra, rb = m.mean_rewards()
        rows.append([m.policies[0], m.policies[1], m.simulation.name, f"{ra:.3f}", f"{rb:.3f}",
                     str(len(m.simulation.episodes))])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def format_results(results: list[SuiteResult]) -> str:
    """A plain-text table: one row per policy, one column per simulation plus the suite score."""
    if not results:
        return "(no results)"
    sims = list(dict.fromkeys(s for r in results for s in r.simulations))
    head = ["policy"] + [f"{results[0].suite}/{s}" for s in sims] + ["score"]
    rows = [[r.policy] + [f"{r.scores.get(s, float('nan')):.3f}" for s in sims] + [f"{r.score:.3f}"]
            for r in results]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])

