"""Random stress of the engine over every preset and a set of edge-case maps and specs.

Meant to run against a sanitizer build (`cpp/tests/run_sanitizers.sh` builds one and runs this under
AddressSanitizer + UndefinedBehaviorSanitizer), but runs against any build:

    python cpp/tests/stress.py --steps 2000                 # the installed envs._mettagrid
    METTAGRID_ENGINE=build/sanitize/_mettagrid.cpython-311-x86_64-linux-gnu.so python cpp/tests/stress.py

Each scenario steps with uniformly random action ids (some out of range, int32 and int64 arrays),
takes episode statistics and snapshots as a trainer and a replay recorder would, and checks a few
invariants (tick counts, episode counts, token layout, inventory limits). The threaded scenarios call
one env from several threads at once (the engine serialises them; see cpp/README.md). Exits non-zero
on the first broken invariant; a sanitizer aborts the process on the first memory error or undefined
behaviour.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _load_engine() -> None:
    """With METTAGRID_ENGINE set, use that compiled module as envs._mettagrid (e.g. a sanitizer build)."""
    path = os.environ.get("METTAGRID_ENGINE")
    if not path:
        return
    spec = importlib.util.spec_from_file_location("envs._mettagrid", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["envs._mettagrid"] = module


_load_engine()

import numpy as np  # noqa: E402

from envs import MettaGrid, presets  # noqa: E402
from envs import _mettagrid  # noqa: E402
from envs.config import ArenaMapBuilder, GameConfig  # noqa: E402


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


# ----------------------------------------------------------------------------------------- scenarios
def edge_configs() -> dict[str, GameConfig]:
    all_actions = {"rotate": {"enabled": True}, "swap": {"enabled": True},
                   "change_glyph": {"enabled": True, "number_of_glyphs": 255}}
    ring = ["@" * 7] + ["@" + "." * 5 + "@" for _ in range(5)] + ["@" * 7]
    fast_objects = dict(presets.arena().objects)
    for name in ("mine_red", "generator_red", "altar", "lasery", "armory"):
        fast_objects[name] = fast_objects[name].model_copy(update={
            "max_output": 255, "initial_resource_count": 255, "conversion_ticks": 0, "cooldown": 0})
    out = {name: make() for name, make in presets.PRESETS.items()}
    out.update({
        "rooms_1x1": GameConfig(max_steps=20, map_builder=ArenaMapBuilder(
            num_agents=4, rooms=(2, 2), room_size=1, border=0, objects={})),
        "rooms_1x1_border": GameConfig(max_steps=20, map_builder=ArenaMapBuilder(
            num_agents=9, rooms=(3, 3), room_size=1, border=1, objects={})),
        "agents_on_the_border": presets.ascii(ring, max_steps=30, actions=all_actions),
        "single_cell": presets.ascii(["@"], max_steps=5),
        "225_agents_15x15": presets.ascii(["@" * 15] * 15, max_steps=25, obs_width=15, obs_height=15),
        "zero_limits": presets.ascii(["#####", "#@m_#", "#nSo#", "#@s@#", "#####"], max_steps=40,
                                     agent={"default_resource_limit": 0, "resource_limits": {},
                                            "initial_inventory": {"laser": 5, "heart": 5}}),
        "tokens_4096": presets.ascii(["m_nSo@" * 5] * 15, max_steps=15, obs_width=15, obs_height=15,
                                     num_observation_tokens=4096,
                                     agent={"initial_inventory": {it: 255 for it in presets.arena().items},
                                            "default_resource_limit": 255}),
        "tokens_1": presets.ascii(["#@m@#"], max_steps=15, num_observation_tokens=1),
        "max_steps_0": presets.ascii(["#####", "#@m@#", "#_nS#", "#####"], max_steps=0, actions=all_actions),
        "max_steps_1": presets.ascii(["#####", "#@m@#", "#####"], max_steps=1, random_first_episode_cut=True),
        "zero_time_converters": presets.ascii(["#######", "#@m_n@#", "#So@s.#", "#######"], max_steps=60,
                                              objects=fast_objects, actions=all_actions,
                                              agent={"default_resource_limit": 255,
                                                     "shared_limits": [{"items": ["ore_red", "battery_red"],
                                                                        "limit": 300}],
                                                     "initial_inventory": {"ore_red": 200, "battery_red": 200,
                                                                           "laser": 255},
                                                     "action_failure_penalty": 0.37}),
        "combat_arena_small": presets.arena(num_agents=12).model_copy(update={"max_steps": 40}),
    })
    return out


def stress_env(name: str, cfg: GameConfig, steps: int, num_envs: int, rng: np.random.Generator) -> int:
    env = MettaGrid(cfg, num_envs=num_envs, seed=int(rng.integers(1 << 30)), auto_reset=bool(rng.integers(2)))
    R, n_act = env.num_rows, env.num_actions
    limits = cfg.engine_spec()["agent"]["resource_limits"]
    episodes = 0
    for t in range(steps):
        acts = rng.integers(-2, n_act + 3, size=R)
        acts = acts.astype(np.int64 if t % 2 else np.int32)
        env.step(acts)
        if not env.auto_reset and t % 7 == 0:
            env.reset_games(env.games_done())
        if t % 50 == 0:
            for g in range(env.num_envs):
                for o in env.grid_objects(g):
                    if o["type_name"] == "agent":
                        for item, n in o["inventory"].items():
                            check(n <= limits[cfg.items.index(item)], f"{name}: {item} {n} over its limit")
        episodes += len(env.episode_stats())
    obs = env.observations
    used = (obs != 0xFF).any(axis=2)
    for r in range(R):
        n = int(used[r].sum())
        check(bool(used[r, :n].all()), f"{name}: row {r} has a gap in its tokens")
    env.reset(seed=int(rng.integers(1 << 30)))
    episodes += len(env.episode_stats())
    return episodes


def mixed_configs(steps: int, rng: np.random.Generator) -> int:
    """Games of one batch on different configs that change at every reset, slots replaced while games
    still run them (the engine keeps the old rules alive until those games reset), stats and snapshots of
    games on replaced slots."""
    base = presets.arena(num_agents=6)
    base.map_builder = base.map_builder.model_copy(update={"rooms": (1, 2), "room_size": 8, "border": 1})
    base.max_steps = 7

    def variant() -> GameConfig:
        cfg = base.model_copy(deep=True)
        cfg.max_steps = int(rng.choice([1, 2, 5, 17, 60]))
        cfg.agent.rewards = {"heart": float(rng.choice([0, 1])), "ore_red": float(rng.choice([0, 0.1, 1.0]))}
        cfg.actions.attack.consumed_resources = {"laser": int(rng.choice([0, 1, 100]))}
        for name in ("altar", "mine_red", "generator_red"):
            cfg.objects[name] = cfg.objects[name].model_copy(
                update={"initial_resource_count": int(rng.integers(0, 3))})
        counts = {k: int(rng.integers(0, 4)) for k in ("wall", "altar", "mine_red", "generator_red", "armory")}
        cfg.map_builder = cfg.map_builder.model_copy(update={"objects": counts})
        return GameConfig.model_validate(cfg.model_dump())

    env = MettaGrid(base, num_envs=4, seed=int(rng.integers(1 << 30)), auto_reset=bool(rng.integers(2)))
    slots = [env.add_config(variant()) for _ in range(3)]
    episodes = 0
    for t in range(steps):
        for g in range(env.num_envs):
            env.set_next_config(g, int(rng.choice([0, *slots])), task=int(rng.integers(1 << 40)))
        if t % 13 == 0:
            env.set_config(int(rng.choice(slots)), variant())
        if t % 97 == 0:
            env.reset(seed=int(rng.integers(1 << 30)))
        env.step(rng.integers(-1, env.num_actions + 1, size=env.num_rows))
        if not env.auto_reset and t % 3 == 0:
            env.reset_games(env.games_done())
        if t % 11 == 0:
            for g in range(env.num_envs):
                env.grid_objects(g)
        for ep in env.episode_stats():
            check(ep["config"] in (0, *slots), "mixed: an episode names a slot that does not exist")
            episodes += 1
    return episodes


def raw_engine(spec: dict):
    eng = _mettagrid.Engine(spec, 1, 0)
    rows = eng.num_agents
    obs = np.zeros((rows, eng.num_tokens, 3), np.uint8)
    eng.set_buffers(obs, np.zeros(rows, np.float32), np.zeros(rows, bool), np.zeros(rows, bool))
    eng.reset(None)
    return eng


def extreme_specs(steps: int) -> None:
    """Hand-made specs past the pydantic bounds: the engine must neither recurse, overflow nor hang."""
    base = presets.ascii(["#####", "#@m@#", "#####"], max_steps=0).engine_spec()

    def with_mine(**fields) -> dict:
        spec = {**base, "objects": [dict(o) for o in base["objects"]]}
        (m,) = [o for o in spec["objects"] if o["name"] == "mine_red"]
        m.update(fields)
        return spec

    # Zero-time conversions a million times in one call (a recursion would overflow a debug stack).
    eng = raw_engine(with_mine(max_output=1_000_000, conversion_ticks=0, cooldown=0))
    (mine,) = [o for o in eng.grid_objects(0) if o["type_name"] == "mine_red"]
    check(mine["inventory"] == {"ore_red": 1_000_000}, f"zero-time mine: {mine['inventory']}")
    # Held outputs past INT32_MAX in total; outputs and puts saturate instead of overflowing.
    eng = raw_engine(with_mine(max_output=2**31 - 1, initial_resource_count=2**31 - 10, conversion_ticks=0,
                               cooldown=0, outputs=[[0, 7], [1, 2**31 - 1], [0, 5]], inputs=[]))
    rng = np.random.default_rng(5)
    for _ in range(steps):
        eng.step(rng.integers(0, 8, size=2).astype(np.int32), True)
    (mine,) = [o for o in eng.grid_objects(0) if o["type_name"] == "mine_red"]
    check(all(0 < v <= 2**31 - 1 for v in mine["inventory"].values()), f"saturated mine: {mine['inventory']}")
    # Huge cooldowns, ticks and freeze durations near INT32_MAX.
    spec = with_mine(cooldown=2**31 - 1, conversion_ticks=2**31 - 1)
    spec["agent"] = {**spec["agent"], "freeze_duration": 2**31 - 1, "action_failure_penalty": 1e30}
    eng = raw_engine(spec)
    for _ in range(steps):
        eng.step(rng.integers(-5, 40, size=2).astype(np.int32), True)
    eng.episode_stats()


def threaded(steps: int) -> None:
    """One env called from four threads at once: two steppers, a reader and a resetter."""
    env = MettaGrid(presets.arena(num_agents=6).model_copy(update={"max_steps": 3}), num_envs=8, seed=7)
    rng = np.random.default_rng(9)
    a32 = rng.integers(0, env.num_actions, size=env.num_rows, dtype=np.int32)
    a64 = rng.integers(0, env.num_actions, size=env.num_rows, dtype=np.int64)
    taken: list[dict] = []
    errors: list[BaseException] = []
    done = threading.Event()
    start = threading.Barrier(4)

    def guarded(fn):
        def run():
            try:
                start.wait()
                fn()
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
        return run

    def stepper(a):
        return lambda: [env.step(a) for _ in range(steps)]

    def reader():
        while not done.is_set():
            taken.extend(env.episode_stats())
            env.grid_objects(int(rng.integers(env.num_envs)))
            env.games_done()

    def resetter():
        for i in range(steps // 10):
            env.reset_games(np.arange(env.num_envs) % 3 == i % 3)
            env.current_step(i % env.num_envs)

    threads = [threading.Thread(target=guarded(f)) for f in (stepper(a32), stepper(a64), reader, resetter)]
    for t in threads:
        t.start()
    for t in threads[:2] + threads[3:]:
        t.join()
    done.set()
    threads[2].join()
    if errors:
        raise errors[0]
    taken.extend(env.episode_stats())
    keys = [(e["env"], e["episode"]) for e in taken]
    check(len(keys) == len(set(keys)), "threaded: an episode was handed over twice")
    check(all(e["steps"] <= 3 for e in taken), "threaded: an episode ran past max_steps")
    # Two endless steppers: every step counted exactly once.
    env = MettaGrid(presets.arena(num_agents=6).model_copy(update={"max_steps": 0}), num_envs=4, seed=1)
    start2 = threading.Barrier(2)

    def endless(a):
        def run():
            start2.wait()
            for _ in range(steps):
                env.step(a)
        return run

    ts = [threading.Thread(target=endless(a)) for a in (a32[:env.num_rows], a64[:env.num_rows])]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ticks = [env.current_step(g) for g in range(env.num_envs)]
    check(ticks == [2 * steps] * env.num_envs, f"threaded: ticks {ticks}, expected {2 * steps} each")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=400, help="steps per scenario (presets get a tenth)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    agent_steps = 0
    for name, cfg in edge_configs().items():
        t = time.time()
        arena = name in presets.PRESETS
        steps = max(1, args.steps // 10) if arena else args.steps
        num_envs = 1 if arena or cfg.num_agents > 50 else 3
        eps = stress_env(name, cfg, steps, num_envs, rng)
        agent_steps += steps * num_envs * cfg.num_agents
        print(f"{name:26s} {steps:6d} steps x {num_envs} games x {cfg.num_agents:3d} agents, "
              f"{eps:5d} episodes, {time.time() - t:6.1f} s", flush=True)
    t = time.time()
    eps = mixed_configs(args.steps, rng)
    agent_steps += args.steps * 4 * 6
    print(f"{'mixed configs':26s} {args.steps:6d} steps x 4 games x   6 agents, {eps:5d} episodes, "
          f"{time.time() - t:6.1f} s", flush=True)
    t = time.time()
    extreme_specs(max(10, args.steps // 4))
    print(f"{'extreme hand-made specs':26s} {time.time() - t:6.1f} s", flush=True)
    t = time.time()
    threaded(max(20, args.steps // 2))
    print(f"{'threads':26s} {time.time() - t:6.1f} s", flush=True)
    print(f"stress passed: {agent_steps} agent-steps in {time.time() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
