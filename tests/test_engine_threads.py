"""The engine's threading contract (cpp/README.md): every entry point of one env takes the env's lock,
so calls from several Python threads run one at a time and see consistent state."""

from __future__ import annotations

import threading

import numpy as np

from envs import MettaGrid, presets


def _run_threads(*targets) -> None:
    errors: list[BaseException] = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
                errors.append(e)
        return run

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    if errors:
        raise errors[0]


def test_episode_stats_while_another_thread_steps():
    """Episodes finished by a stepping thread and taken by a reading thread: each exactly once."""
    num_envs, max_steps, steps = 16, 2, 3000
    env = MettaGrid(presets.arena(num_agents=4).model_copy(update={"max_steps": max_steps}),
                    num_envs=num_envs, seed=1)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, env.num_actions, size=(64, env.num_rows), dtype=np.int32)
    taken: list[dict] = []
    stop = threading.Event()

    def stepper():
        for i in range(steps):
            env.step(actions[i % len(actions)])
        stop.set()

    def reader():
        while not stop.is_set():
            taken.extend(env.episode_stats())
            env.games_done()
            if len(taken) % 7 == 0:
                env.grid_objects(0)
        taken.extend(env.episode_stats())

    _run_threads(stepper, reader)
    assert len(taken) == num_envs * (steps // max_steps)
    seen = {(e["env"], e["episode"]) for e in taken}
    assert len(seen) == len(taken), "an episode was handed over twice"
    assert seen == {(g, k) for g in range(num_envs) for k in range(steps // max_steps)}
    assert all(e["steps"] == max_steps for e in taken)


def test_two_threads_stepping_one_env_take_turns():
    """Steps from two threads (int32 and int64 actions) are applied one after the other: none is lost."""
    steps = 3000
    cfg = presets.arena().model_copy(update={"max_steps": 0})   # endless: the tick counts the steps
    env = MettaGrid(cfg, num_envs=8, seed=3)
    rng = np.random.default_rng(1)
    a32 = rng.integers(0, env.num_actions, size=env.num_rows, dtype=np.int32)
    a64 = rng.integers(0, env.num_actions, size=env.num_rows, dtype=np.int64)
    start = threading.Barrier(2)

    def stepper(actions):
        def run():
            start.wait()
            for _ in range(steps):
                env.step(actions)
        return run

    _run_threads(stepper(a32), stepper(a64))
    assert [env.current_step(g) for g in range(env.num_envs)] == [2 * steps] * env.num_envs
    assert env.episode_stats() == []
    # Every row holds one well-formed observation: its used tokens first, then 0xFF padding.
    used = (env.observations != 0xFF).any(axis=2)
    for r in range(env.num_rows):
        n = int(used[r].sum())
        assert used[r, :n].all() and n >= 8


def test_resets_from_another_thread_while_stepping():
    """reset / reset_games / episode_stats interleave with steps without tearing a game."""
    env = MettaGrid(presets.arena().model_copy(update={"max_steps": 5}), num_envs=8, seed=0)
    rng = np.random.default_rng(2)
    actions = rng.integers(0, env.num_actions, size=env.num_rows, dtype=np.int32)
    start = threading.Barrier(2)

    def stepper():
        start.wait()
        for _ in range(1500):
            env.step(actions)

    def resetter():
        start.wait()
        for i in range(300):
            if i % 3 == 0:
                env.reset()
            else:
                env.reset_games(np.arange(env.num_envs) % 2 == i % 2)
            for e in env.episode_stats():
                assert e["steps"] == 5

    _run_threads(stepper, resetter)
    assert all(0 <= env.current_step(g) <= 5 for g in range(env.num_envs))
