"""Smoke tests of the C++ engine through envs.MettaGrid (the full rules suite lives elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest

from envs import MettaGrid, presets
from envs.config import AgentConfig
from envs.replay import load


def act(env, name_or_id):
    a = env.action_names.index(name_or_id) if isinstance(name_or_id, str) else name_or_id
    return env.step(np.full(env.num_rows, a, dtype=np.int32))


def objects_of(env, type_name):
    return [o for o in env.grid_objects() if o["type_name"] == type_name]


def test_arena_shapes_and_globals():
    env = MettaGrid(presets.arena_basic_easy_shaped(), num_envs=2, seed=3)
    obs = env.reset()
    assert obs.shape == (48, 200, 3) and obs.dtype == np.uint8
    assert env.map_size() == (62, 62)
    counts = {}
    for o in env.grid_objects(1):
        counts[o["type_name"]] = counts.get(o["type_name"], 0) + 1
    assert counts["agent"] == 24 and counts["altar"] == 20 and counts["mine_red"] == 40
    # Global tokens first, at the centre.
    assert [tuple(t) for t in obs[0, :4]] == [(0x55, 7, 0), (0x55, 8, 0), (0x55, 9, 0), (0x55, 10, 0)]
    # Then the agent itself (type_id 0) at the centre.
    assert tuple(obs[0, 4]) == (0x55, 0, 0)


def test_mine_yields_every_51_ticks():
    env = MettaGrid(presets.ascii(["#####", "#@.m#", "#####"], max_steps=200), seed=0)
    env.reset()
    mine = objects_of(env, "mine_red")[0]
    assert mine["inventory"] == {} and mine["converting"]
    times = []
    last = 0
    for t in range(1, 160):
        act(env, "noop")
        n = objects_of(env, "mine_red")[0]["inventory"].get("ore_red", 0)
        if n != last:
            times.append(t)
            last = n
    assert times == [1, 52, 103, 154]


def test_move_get_put_and_rewards():
    cfg = presets.ascii(["######", "#m@.n#", "######"], max_steps=100,
                        agent=AgentConfig(rewards={"ore_red": 0.5}))
    env = MettaGrid(cfg, seed=0)
    env.reset()
    act(env, "move_west")  # faces the mine, cannot enter
    agent = objects_of(env, "agent")[0]
    assert agent["orientation"] == 2 and agent["col"] == 2 and not agent["last_action_success"]
    _, rewards, _, _ = act(env, "get_items")
    assert objects_of(env, "agent")[0]["inventory"] == {"ore_red": 1}
    assert rewards[0] == pytest.approx(0.5)
    act(env, "move_east")
    act(env, "move_east")  # bumps into the generator
    agent = objects_of(env, "agent")[0]
    assert agent["col"] == 3 and agent["orientation"] == 3
    _, rewards, _, _ = act(env, "put_items")
    assert rewards[0] == pytest.approx(-0.5)
    gen = objects_of(env, "generator_red")[0]
    assert gen["converting"] and gen["inventory"] == {}
    act(env, "noop")
    assert objects_of(env, "generator_red")[0]["inventory"] == {"battery_red": 1}
    act(env, "get_items")
    assert objects_of(env, "agent")[0]["inventory"] == {"battery_red": 1}


def test_attack_freezes_and_steals():
    cfg = presets.ascii(["#####", "#@..#", "#@..#", "#####"], max_steps=100,
                        agent=AgentConfig(initial_inventory={"laser": 2, "ore_red": 3}))
    env = MettaGrid(cfg, seed=0)
    env.reset()
    a = np.zeros(2, dtype=np.int32)
    a[0] = env.action_names.index("move_south")  # agent 0 turns south (blocked by agent 1)
    env.step(a)
    a[:] = [env.action_names.index("attack_0"), 0]
    env.step(a)
    ag = {o["agent_id"]: o for o in objects_of(env, "agent")}
    assert ag[1]["frozen"] == 10
    assert ag[0]["inventory"] == {"laser": 3, "ore_red": 6}  # paid 1, stole 2
    assert ag[1]["inventory"] == {}
    for _ in range(9):
        env.step(np.full(2, env.action_names.index("move_east"), dtype=np.int32))
    ag = {o["agent_id"]: o for o in objects_of(env, "agent")}
    assert ag[1]["frozen"] == 1 and ag[1]["col"] == 1 and ag[0]["col"] == 3
    env.step(np.full(2, env.action_names.index("move_east"), dtype=np.int32))
    ag = {o["agent_id"]: o for o in objects_of(env, "agent")}
    assert ag[1]["frozen"] == 0 and ag[1]["col"] == 2
    assert env.current_step() == 12


def test_episode_end_auto_reset_and_stats():
    env = MettaGrid(presets.ascii(["###", "#@#", "###"], max_steps=5), num_envs=2, seed=1)
    env.reset()
    for _ in range(4):
        _, _, term, trunc = act(env, 99)  # invalid ids are tolerated
        assert not term.any() and not trunc.any()
    _, _, term, trunc = act(env, 99)
    assert term.all() and not trunc.any()
    assert env.current_step() == 0  # auto-reset
    stats = env.episode_stats()
    assert len(stats) == 2 and stats[0]["steps"] == 5
    assert stats[0]["agent"]["action.invalid"][0] == 5
    assert "tokens.written" in stats[0]["game"] and stats[0]["game"]["objects.wall"] == 8
    assert env.episode_stats() == []


def test_no_auto_reset_keeps_final_obs():
    env = MettaGrid(presets.ascii(["###", "#@#", "###"], max_steps=2, episode_end="truncation"),
                    seed=0, auto_reset=False)
    env.reset()
    act(env, "noop")
    obs, _, term, trunc = act(env, "noop")
    assert trunc.all() and not term.any()
    assert env.current_step() == 2 and obs[0, 0, 2] == 255  # completion 100%
    env.reset_games(np.array([True]))
    assert env.current_step() == 0 and env.episode_index() == 1


def test_determinism_and_action_validation():
    def run(seed):
        env = MettaGrid(presets.arena_combat(), num_envs=2, seed=seed)
        env.reset()
        rng = np.random.default_rng(0)
        for _ in range(60):
            obs, *_ = env.step(rng.integers(0, 16, env.num_rows))
        return obs.copy()

    assert np.array_equal(run(5), run(5))
    assert not np.array_equal(run(5), run(6))
    env = MettaGrid(presets.arena_basic(), num_envs=1)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3, dtype=np.int32))
    with pytest.raises(TypeError, match="dtype"):
        env.step(np.zeros(24, dtype=np.float32))


def test_replay_roundtrip(tmp_path):
    env = MettaGrid(presets.ascii(["#####", "#@.m#", "#####"], max_steps=6), num_envs=2, seed=0)
    env.reset()
    env.record_replays(games=[1], directory=str(tmp_path))
    for _ in range(6):
        act(env, "move_east")
    files = sorted(tmp_path.glob("*.json.z"))
    assert len(files) == 1
    replay = load(str(files[0]))
    assert replay["map_size"] == [5, 3] and replay["max_steps"] == 6 and replay["num_agents"] == 1
    agent = next(o for o in replay["objects"] if o["type"] == 0)
    assert agent["location"][0] == [0, [1, 1, 0]] and agent["location"][1] == [1, [2, 1, 0]]
    mine = next(o for o in replay["objects"] if o["type_name"] == "mine_red")
    assert mine["inventory"][0] == [0, []] and mine["inventory"][1] == [1, [[0, 1]]]
    assert env.current_step(1) == 0  # reset after the final frame was captured


def test_tokens_dropped_and_memory_replay():
    env = MettaGrid(presets.ascii(["#####", "#@m@#", "#####"], num_observation_tokens=6, max_steps=3))
    for _ in range(3):
        obs, *_ = act(env, "noop")
    game = env.episode_stats()[0]["game"]
    assert game["tokens.dropped"] > 0 and game["tokens.written"] == 2 * 6 * 4  # reset + 3 steps
    env = MettaGrid(presets.arena_combat(), num_envs=1, seed=0)
    rec = env.record_replays(games=[0], directory="memory://smoke_replays")
    rng = np.random.default_rng(0)
    for _ in range(1000):
        env.step(rng.integers(0, 16, env.num_rows))
    replay = load(rec.paths[0])
    assert replay["max_steps"] == 1000 and len([o for o in replay["objects"] if o["type"] == 0]) == 24
    assert replay["config"]["max_steps"] == 1000
