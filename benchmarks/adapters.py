"""Adapter overhead: agent-steps/s of each adapter in `envs.adapters` against the raw batched env.

Each adapter is paired with `envs.MettaGrid` on the same game, the same number of games and the same
pre-drawn random actions; pairs are timed alternately (`--repeats` rounds of `--seconds` each, after a
warm-up), in one thread, and the table gives the median agent-steps per CPU second of each and the
ratio. Goals: PufferLib adapter >= 0.9x raw, PettingZoo >= 0.3x raw.

    python benchmarks/adapters.py
    python benchmarks/adapters.py --seconds 2 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

BATCHES = 256  # distinct pre-drawn action batches, cycled


def timed(step, seconds: float) -> float:
    """Calls `step(i)` (returns agent-steps done) until `seconds` of CPU time; agent-steps per CPU second."""
    done, i = 0, 0
    start = time.process_time()
    while True:
        for _ in range(64):
            done += step(i)
            i += 1
        elapsed = time.process_time() - start
        if elapsed >= seconds:
            return done / elapsed


def raw_stepper(config, num_envs: int, rng):
    """The raw batched env as a trainer drives it: step, then hand over finished episodes' stats."""
    from envs import MettaGrid

    env = MettaGrid(config, num_envs=num_envs, seed=0)
    env.reset()
    acts = rng.integers(0, env.num_actions, size=(BATCHES, env.num_rows)).astype(np.int32)
    n = env.num_rows

    def step(i):
        env.step(acts[i % BATCHES])
        env.episode_stats()
        return n

    return step


def puffer_stepper(config, num_envs: int, rng):
    from envs.adapters import MettaGridPufferEnv

    env = MettaGridPufferEnv(config, num_envs=num_envs, seed=0)
    env.reset()
    acts = rng.integers(0, env.num_actions, size=(BATCHES, env.num_agents)).astype(np.int32)
    n = env.num_agents

    def step(i):
        env.step(acts[i % BATCHES])
        return n

    return step


def puffer_vector_stepper(config, num_envs: int, rng):
    """The adapter behind `pufferlib.vector.make(..., backend=Serial)` (one native env of `num_envs` games)."""
    import pufferlib.vector

    from envs.adapters import MettaGridPufferEnv

    vec = pufferlib.vector.make(MettaGridPufferEnv, env_kwargs={"config": config, "num_envs": num_envs},
                                backend=pufferlib.vector.Serial, num_envs=1, seed=0)
    vec.reset(seed=0)
    acts = rng.integers(0, vec.driver_env.num_actions, size=(BATCHES, vec.num_agents)).astype(np.int32)
    n = vec.num_agents

    def step(i):
        vec.step(acts[i % BATCHES])
        return n

    return step


def pettingzoo_stepper(config, num_envs: int, rng):
    from envs.adapters import MettaGridPettingZooEnv

    assert num_envs == 1
    env = MettaGridPettingZooEnv(config, seed=0)
    env.reset()
    acts = rng.integers(0, env.num_actions, size=(BATCHES, len(env.possible_agents)))
    dicts = [{a: int(x) for a, x in zip(env.possible_agents, row)} for row in acts]  # the caller's cost
    n = len(env.possible_agents)

    def step(i):
        env.step(dicts[i % BATCHES])
        if not env.agents:
            env.reset()
        return n

    return step


def gym_stepper(config, num_envs: int, rng):
    from envs.adapters import MettaGridGymEnv

    assert num_envs == 1
    env = MettaGridGymEnv(config, seed=0)
    env.reset()
    acts = rng.integers(0, env.action_space.n, size=BATCHES).tolist()

    def step(i):
        _, _, term, trunc, _ = env.step(acts[i % BATCHES])
        if term or trunc:
            env.reset()
        return 1

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per timed run")
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds per pair (median reported)")
    p.add_argument("--games", type=int, default=16, help="games per env in the batched PufferLib pair")
    args = p.parse_args()

    from envs import presets

    arena, solo = presets.arena(), presets.arena(num_agents=1)
    pairs = [  # (name, adapter stepper, game, games per env, goal)
        ("PufferLib adapter", puffer_stepper, arena, args.games, 0.9),
        ("PufferLib adapter", puffer_stepper, arena, 1, 0.9),
        ("PufferLib adapter via pufferlib.vector Serial", puffer_vector_stepper, arena, args.games, None),
        ("PettingZoo adapter", pettingzoo_stepper, arena, 1, 0.3),
        ("Gymnasium adapter", gym_stepper, solo, 1, None),
    ]
    print(f"arena: 24 agents, 62x62, {len(arena.action_names)} actions, random actions; "
          f"{args.repeats} x {args.seconds:g} CPU s per measurement, one thread")
    rows = []
    for name, make, game, games, goal in pairs:
        adapter = make(game, games, np.random.default_rng(0))
        raw = raw_stepper(game, games, np.random.default_rng(0))
        timed(adapter, 0.2), timed(raw, 0.2)  # warm-up
        a_runs, r_runs = [], []
        for _ in range(args.repeats):
            r_runs.append(timed(raw, args.seconds))
            a_runs.append(timed(adapter, args.seconds))
        a, r = statistics.median(a_runs), statistics.median(r_runs)
        agents = game.num_agents * games
        rows.append((name, f"{games} x {game.num_agents}", agents, a, r, a / r, goal))
        print(f"  {name} ({games} games x {game.num_agents} agents): {a:,.0f} vs raw {r:,.0f} "
              f"agent-steps per CPU s = {a / r:.2f}x", flush=True)

    print()
    print("| adapter | games x agents | adapter agent-steps/CPU s | raw env | adapter / raw | goal |")
    print("|---|---|---|---|---|---|")
    for name, shape, _, a, r, ratio, goal in rows:
        verdict = "-" if goal is None else f">= {goal}x: {'met' if ratio >= goal else 'NOT met'}"
        print(f"| {name} | {shape} | {a:,.0f} | {r:,.0f} | {ratio:.2f}x | {verdict} |")


if __name__ == "__main__":
    main()
