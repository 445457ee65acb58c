"""The env around the rules (cpp/README.md, GAME.md): episodes and resets, episode statistics, the
arena map, replays, input checking, determinism and memory."""

from __future__ import annotations

import gc
import glob
import json
import os
import zlib

import numpy as np
import pytest

import envs.replay
from envs import MettaGrid, presets
from envs.config import default_objects

from engine_helpers import A, ACTIONS, ITEMS, agents, make, step


def completion(obs_row: np.ndarray) -> int:
    """The episode_completion_pct global token (the first token)."""
    assert obs_row[0][1] == 7
    return int(obs_row[0][2])


# ----------------------------------------------------------------------------------------- API shape
def test_attributes_and_zero_copy_buffers():
    cfg = presets.arena()
    env = MettaGrid(cfg, num_envs=2, seed=0)
    assert env.num_envs == 2 and env.num_agents == 24 and env.num_rows == 48
    assert env.action_names == ACTIONS and env.item_names == ITEMS
    assert env.feature_names == cfg.feature_names and env.feature_normalizations == cfg.feature_normalizations
    assert env.obs_shape == (200, 3) and env.config is cfg
    obs = env.reset()
    assert obs is env.observations and obs.shape == (48, 200, 3) and obs.dtype == np.uint8
    out = env.step(np.zeros(48, dtype=np.int32))
    assert out[0] is env.observations and out[1] is env.rewards
    assert out[2] is env.terminals and out[3] is env.truncations
    assert env.rewards.dtype == np.float32 and env.rewards.shape == (48,)
    assert env.terminals.dtype == np.bool_ and env.truncations.dtype == np.bool_


# ----------------------------------------------------------------------------------------- episodes
@pytest.mark.parametrize("episode_end", ["terminal", "truncation"])
def test_episode_ends_at_max_steps(episode_end):
    env = make(["#####", "#@.@#", "#####"], max_steps=5, episode_end=episode_end, auto_reset=False)
    for t in range(1, 5):
        _, _, term, trunc = step(env, "noop", "noop")
        assert not term.any() and not trunc.any(), t
        assert env.current_step() == t
    _, _, term, trunc = step(env, "noop", "noop")
    if episode_end == "terminal":
        assert term.tolist() == [True, True] and trunc.tolist() == [False, False]
    else:
        assert term.tolist() == [False, False] and trunc.tolist() == [True, True]
    assert env.current_step() == 5


def test_auto_reset_starts_the_next_episode_in_the_same_step():
    env = make(["#####", "#@..#", "#####"], max_steps=4)
    first = env.observations.copy()
    step(env, "move_east")
    assert agents(env)[0]["col"] == 2
    for _ in range(2):
        step(env, "noop")
    obs, _, term, trunc = step(env, "noop")      # step 4 ends episode 0
    assert term.tolist() == [True] and trunc.tolist() == [False]
    assert env.current_step() == 0
    assert agents(env)[0]["col"] == 1              # the new episode's map
    assert np.array_equal(obs, first)              # ... and its first observation
    obs, _, term, _ = step(env, "noop")
    assert not term.any() and env.current_step() == 1 and completion(obs[0]) == round(1 / 4 * 255)
    stats = env.episode_stats()
    assert [(s["env"], s["episode"], s["steps"]) for s in stats] == [(0, 0, 4)]


def test_no_auto_reset_keeps_the_final_observation_until_reset_games():
    env = make(["#####", "#@..#", "#####"], num_envs=2, max_steps=4, auto_reset=False)
    first = env.observations.copy()
    step(env, "move_east", "noop")
    for _ in range(3):
        obs, _, term, _ = step(env, "noop", "noop")
    assert term.tolist() == [True, True]
    # The final observation: completion 255, game 0's agent one cell east.
    assert completion(obs[0]) == 255 and completion(obs[1]) == 255
    assert not np.array_equal(obs[0], first[0])
    assert agents(env, 0)[0]["col"] == 2 and env.current_step(0) == 4
    # Reset only game 1.
    obs = env.reset_games(np.array([False, True]))
    assert completion(obs[0]) == 255 and env.current_step(0) == 4     # untouched
    assert np.array_equal(obs[1], first[1]) and env.current_step(1) == 0
    obs = env.reset_games(np.array([True, False]))
    assert np.array_equal(obs[0], first[0]) and agents(env, 0)[0]["col"] == 1
    episodes = sorted((s["env"], s["episode"], s["steps"]) for s in env.episode_stats())
    assert episodes == [(0, 0, 4), (1, 0, 4)]


def test_stepping_a_finished_game_without_reset_starts_its_next_episode():
    # cpp/README.md: without auto-reset, a finished game that was not reset is reset by the next
    # step instead of being stepped (its actions ignored, rewards 0, flags false).
    env = make(["#####", "#@..#", "#####"], max_steps=2, auto_reset=False)
    first = env.observations.copy()
    step(env, "noop")
    _, _, term, _ = step(env, "noop")
    assert term.tolist() == [True]
    obs, r, term, trunc = step(env, "move_east")
    assert np.array_equal(obs, first) and r.tolist() == [0.0] and not term.any() and not trunc.any()
    assert env.current_step() == 0 and agents(env)[0]["col"] == 1
    step(env, "move_east")
    assert env.current_step() == 1 and agents(env)[0]["col"] == 2
    assert [(s["episode"], s["steps"]) for s in env.episode_stats()] == [(0, 2)]


def test_reset_restarts_every_game():
    env = make(["#####", "#@..#", "#####"], num_envs=2, max_steps=50)
    first = env.observations.copy()
    for _ in range(3):
        step(env, "move_east", "move_east")
    obs = env.reset()
    assert np.array_equal(obs, first) and env.current_step(0) == 0 and env.current_step(1) == 0


def test_random_first_episode_cut():
    max_steps = 40
    env = make(["###", "#@#", "###"], num_envs=16, max_steps=max_steps, random_first_episode_cut=True)
    first_end = [None] * 16
    second_end = [None] * 16
    for t in range(1, 2 * max_steps + 1):
        _, _, term, trunc = step(env, *["noop"] * 16)
        for g in range(16):
            if term[g] or trunc[g]:
                if first_end[g] is None:
                    first_end[g] = t
                    assert trunc[g] and not term[g], "the cut is reported as a truncation"
                elif second_end[g] is None:
                    second_end[g] = t
                    assert term[g] and not trunc[g], "later episodes end normally (terminal)"
    assert all(1 <= t <= max_steps for t in first_end)
    assert len(set(first_end)) > 3                       # desynchronised
    assert [s - f for f, s in zip(first_end, second_end)] == [max_steps] * 16
    # Without the cut every game ends at max_steps.
    env = make(["###", "#@#", "###"], num_envs=4, max_steps=max_steps)
    for t in range(max_steps):
        _, _, term, _ = step(env, *["noop"] * 4)
    assert term.all()


def test_episode_stats_names_and_values():
    objs = default_objects()
    env = make(["#####", "#@.m#", "#####"], max_steps=10, objects=objs)
    plan = ["move_east",   # 1: success
            "move_east",   # 2: fails (the mine), turns east
            "get_items",   # 3: takes the ore made at tick 1
            "get_items",   # 4: nothing left (the mine cools down until tick 51): fails
            "put_items",   # 5: a mine takes nothing: fails
            "attack_0",    # 6: nobody there, no laser: fails
            99,            # 7: invalid id: a failed noop, counted as action.invalid
            -1,            # 8: invalid too
            "noop", "noop"]
    total = 0.0
    for a in plan:
        _, r, term, _ = step(env, a)
        total += float(r[0])
    assert term[0]
    (ep,) = env.episode_stats()
    assert env.episode_stats() == []                 # handed over once
    assert ep["env"] == 0 and ep["episode"] == 0 and ep["steps"] == 10
    assert np.asarray(ep["reward"]).shape == (1,) and float(ep["reward"][0]) == pytest.approx(total)
    stats = {k: float(np.asarray(v)[0]) for k, v in ep["agent"].items()}
    expected_names = {f"{item}.{kind}" for item in ITEMS for kind in ("gained", "lost", "get", "put", "stolen")}
    expected_names |= {f"action.{name}.{r}" for name in ACTIONS for r in ("success", "failed")}
    expected_names |= {"action.invalid", "status.frozen.ticks", "attack.hit", "attack.blocked", "attack.steals"}
    assert expected_names <= set(stats), sorted(expected_names - set(stats))
    assert all(np.asarray(v).shape == (1,) for v in ep["agent"].values())
    assert stats["action.move_east.success"] == 1 and stats["action.move_east.failed"] == 1
    assert stats["action.get_items.success"] == 1 and stats["action.get_items.failed"] == 1
    assert stats["action.put_items.success"] == 0 and stats["action.put_items.failed"] == 1
    assert stats["action.attack_0.failed"] == 1 and stats["action.attack_0.success"] == 0
    assert stats["action.noop.success"] == 2
    assert stats["action.invalid"] == 2
    assert stats["ore_red.gained"] == 1 and stats["ore_red.get"] == 1
    assert stats["ore_red.lost"] == 0 and stats["ore_red.put"] == 0
    assert stats["heart.gained"] == 0 and stats["status.frozen.ticks"] == 0
    assert stats["attack.hit"] == 0 and stats["attack.steals"] == 0
    game = ep["game"]
    assert game["objects.wall"] == 12 and game["objects.mine_red"] == 1
    assert game["tokens.written"] > 0 and game["tokens.dropped"] == 0


def test_episode_stats_of_a_fight():
    lines = ["#####",
             "#.@.#",   # agent 0: target
             "#.@.#",   # agent 1: attacker
             "#####"]
    env = make(lines, max_steps=15, agent={"initial_inventory": {"laser": 2, "heart": 3, "armor": 1}})
    step(env, "noop", "attack_0")       # blocked by armor
    step(env, "noop", "attack_0")       # hits: steals 3 hearts and 2 lasers (no armor left)
    for _ in range(13):
        step(env, "move_east", "noop")  # skipped while frozen (steps 2..11), then moves
    (ep,) = env.episode_stats()
    s = {k: np.asarray(v) for k, v in ep["agent"].items()}
    assert s["attack.blocked"][1] == 1 and s["attack.hit"][1] == 1 and s["attack.steals"][1] == 1
    assert s["action.attack_0.success"][1] == 2
    assert s["status.frozen.ticks"].tolist() == [10, 0]
    assert s["heart.stolen"].sum() == 3 and s["laser.stolen"].sum() == 2
    assert s["heart.gained"].tolist() == [0, 3] and s["heart.lost"].tolist() == [3, 0]
    assert s["armor.lost"].tolist() == [1, 0]
    assert s["laser.lost"].tolist() == [2, 2] and s["laser.gained"].tolist() == [0, 2]
    # Frozen through step 11; step 12 moves to (1, 3), steps 13..15 bump into the wall.
    assert s["action.move_east.success"][0] == 1 and s["action.move_east.failed"][0] == 3
    assert np.asarray(ep["reward"]).tolist() == pytest.approx([-3.0, 3.0])


# ----------------------------------------------------------------------------------------- arena
def test_arena_map():
    cfg = presets.arena()
    env = MettaGrid(cfg, num_envs=2, seed=3)
    for game in range(2):
        assert env.map_size(game) == (62, 62)
        objs = env.grid_objects(game)
        ags = [o for o in objs if o["type_name"] == "agent"]
        assert len(ags) == 24 and sorted(a["agent_id"] for a in ags) == list(range(24))
        assert len({(o["row"], o["col"], o["layer"]) for o in objs}) == len(objs)  # one per cell and layer
        per_room: dict[tuple[int, int], dict[str, int]] = {}
        for o in objs:
            r, c = o["row"], o["col"]
            inside = 6 <= r < 56 and 6 <= c < 56
            if not inside:
                assert o["type_name"] == "wall"   # the 6-cell border
                continue
            room = ((r - 6) // 25, (c - 6) // 25)
            counts = per_room.setdefault(room, {})
            counts[o["type_name"]] = counts.get(o["type_name"], 0) + 1
        assert sorted(per_room) == [(0, 0), (0, 1), (1, 0), (1, 1)]
        for room, counts in per_room.items():
            assert counts == {"agent": 6, "wall": 10, "altar": 5, "mine_red": 10, "generator_red": 5,
                              "lasery": 1, "armory": 1}, room
        border = sum(1 for o in objs if not (6 <= o["row"] < 56 and 6 <= o["col"] < 56))
        assert border == 62 * 62 - 50 * 50
    # Two games (and two episodes) get different maps.
    where = lambda g: sorted((o["row"], o["col"]) for o in env.grid_objects(g) if o["type_name"] == "altar")
    assert where(0) != where(1)


def test_arena_game_stats_count_objects():
    cfg = presets.arena()
    cfg.max_steps = 3
    env = MettaGrid(cfg, num_envs=1, seed=1)
    for _ in range(3):
        env.step(np.zeros(24, dtype=np.int32))
    (ep,) = env.episode_stats()
    g = ep["game"]
    assert g["objects.altar"] == 20 and g["objects.mine_red"] == 40 and g["objects.generator_red"] == 20
    assert g["objects.lasery"] == 4 and g["objects.armory"] == 4
    assert g["objects.wall"] == 40 + 62 * 62 - 50 * 50


def test_arena_new_episode_new_map():
    cfg = presets.arena()
    cfg.max_steps = 2
    env = MettaGrid(cfg, num_envs=1, seed=1)
    before = sorted((o["row"], o["col"]) for o in env.grid_objects() if o["type_name"] == "agent")
    for _ in range(2):
        env.step(np.zeros(24, dtype=np.int32))
    after = sorted((o["row"], o["col"]) for o in env.grid_objects() if o["type_name"] == "agent")
    assert env.current_step() == 0 and before != after


# ----------------------------------------------------------------------------------------- replays
def value_at(field, step: int):
    """The value of a replay field (a constant or a change list [[step, value], ...]) at `step`."""
    if isinstance(field, list) and field and isinstance(field[0], list) and len(field[0]) == 2 \
            and isinstance(field[0][0], int):
        value = None
        for s, v in field:
            if s <= step:
                value = v
        return value
    return field


def test_replay_round_trip(tmp_path):
    cfg = presets.ascii(["######", "#@..m#", "######"], max_steps=6)
    env = MettaGrid(cfg, num_envs=2, seed=0)
    env.record_replays(games=[0], directory=str(tmp_path))
    env.reset()
    for a in ["move_east", "move_east", "get_items", "noop", "move_west", "noop"]:
        env.step(np.array([A[a], 0], dtype=np.int32))
    files = sorted(glob.glob(os.path.join(str(tmp_path), "**", "*.json.z"), recursive=True))
    assert len(files) == 1, files                  # one finished episode of game 0 only
    replay = envs.replay.load(files[0])
    with open(files[0], "rb") as f:
        assert json.loads(zlib.decompress(f.read())) == replay
    for key in ["version", "action_names", "item_names", "type_names", "map_size", "num_agents", "max_steps",
                "config", "objects"]:
        assert key in replay, key
    assert replay["action_names"] == ACTIONS and replay["item_names"] == ITEMS
    assert replay["map_size"] == [6, 3] and replay["num_agents"] == 1 and replay["max_steps"] == 6
    assert replay["type_names"][0] == "agent" and replay["type_names"][2] == "mine_red"
    assert replay["config"]["max_steps"] == 6
    (ag,) = [o for o in replay["objects"] if "agent_id" in o]
    assert value_at(ag["agent_id"], 0) == 0
    for s, col in [(0, 1), (1, 2), (2, 3), (3, 3), (5, 2), (6, 2)]:
        assert value_at(ag["location"], s) == [col, 1, 0], s
    assert value_at(ag["orientation"], 0) == 0 and value_at(ag["orientation"], 1) == 3
    assert value_at(ag["orientation"], 5) == 2
    assert value_at(ag["inventory"], 2) in ([], None) and value_at(ag["inventory"], 3) == [[0, 1]]
    assert value_at(ag["action"], 3) == A["get_items"]
    for key in ["action_success", "current_reward", "total_reward", "frozen", "group"]:
        assert key in ag, key
    assert value_at(ag["action_success"], 1) is True and value_at(ag["action_success"], 4) is True
    (mine,) = [o for o in replay["objects"] if o.get("type_name") == "mine_red" or value_at(o.get("type"), 0) == 2]
    assert value_at(mine["location"], 0) == [4, 1, 1]
    assert value_at(mine["inventory"], 1) == [[0, 1]] and value_at(mine["inventory"], 3) in ([], None)
    assert "recipe" in mine and "converting" in mine
    walls = [o for o in replay["objects"] if value_at(o.get("type"), 0) == 1]
    assert len(walls) == 14

def _one_replay(tmp_path) -> bytes:
    env = MettaGrid(presets.ascii(["####", "#@.#", "####"], max_steps=3), seed=0)
    rec = env.record_replays(games=[0], directory=str(tmp_path / "good"))
    env.reset()
    for _ in range(3):
        env.step(np.array([A["noop"]], dtype=np.int32))
    with open(rec.paths[0], "rb") as f:
        return f.read()


def test_replay_load_errors_name_the_path_and_the_problem(tmp_path):
    data = _one_replay(tmp_path)
    cases = {
        "truncated.json.z": (data[: len(data) // 2], "not a zlib-compressed .json.z replay"),
        "plain.json.z": (json.dumps({"map_size": [3, 3]}).encode(), "not a zlib-compressed .json.z replay"),
        "garbage.json.z": (zlib.compress(b"{not json"), "not a MettaGrid replay: invalid JSON"),
        "list.json.z": (zlib.compress(b"[1, 2]"), "not a MettaGrid replay: expected a JSON object"),
        "other.json.z": (zlib.compress(json.dumps({"map_size": [3, 3], "objects": []}).encode()),
                         "not a MettaGrid replay: missing keys version, num_agents, max_steps"),
    }
    for name, (content, problem) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError) as info:
            envs.replay.load(str(path))
        assert isinstance(info.value, envs.replay.ReplayError)
        assert str(path) in str(info.value) and problem in str(info.value), str(info.value)
    missing = tmp_path / "nowhere" / "game0_episode0.json.z"
    with pytest.raises(envs.replay.ReplayError, match="replay not found") as info:
        envs.replay.load(str(missing))
    assert str(missing) in str(info.value)
    with pytest.raises(envs.replay.ReplayError, match="memory://no/such.json.z: replay not found"):
        envs.replay.load("memory://no/such.json.z")


# ----------------------------------------------------------------------------------------- bad input
def test_bad_actions_raise_clear_errors():
    env = make(["#####", "#@.@#", "#####"], num_envs=3)   # 6 rows
    with pytest.raises(ValueError, match="6"):
        env.step(np.zeros(5, dtype=np.int32))
    with pytest.raises(ValueError, match="6"):
        env.step(np.zeros((6, 1), dtype=np.int32))
    with pytest.raises(ValueError):
        env.step(np.zeros((3, 2), dtype=np.int32))
    with pytest.raises(TypeError, match="int"):
        env.step(np.zeros(6, dtype=np.float32))
    with pytest.raises(TypeError, match="int"):
        env.step(np.zeros(6, dtype=np.float64))
    assert env.current_step() == 0                    # nothing was stepped
    for dtype in (np.int64, np.uint8, np.int16, np.int32):
        env.step(np.full(6, A["move_east"], dtype=dtype))
    assert env.current_step() == 4


def test_out_of_range_action_ids_are_tolerated_and_counted():
    env = make(["#####", "#@.@#", "#####"], max_steps=3)
    step(env, 16, -1)
    a0, a1 = agents(env)
    assert a0["last_action_success"] is False and a1["last_action_success"] is False
    assert (a0["row"], a0["col"]) == (1, 1) and (a1["row"], a1["col"]) == (1, 3)
    env.step(np.array([2**31 - 1, 1000], dtype=np.int64))
    env.step(np.array([np.iinfo(np.int64).min, 2**40], dtype=np.int64))
    (ep,) = env.episode_stats()
    assert np.asarray(ep["agent"]["action.invalid"]).tolist() == [3, 3]


# ----------------------------------------------------------------------------------------- determinism
def run_arena(seed: int, steps: int, actions: np.ndarray, num_envs: int = 2):
    cfg = presets.arena()
    cfg.max_steps = 120   # a few episode boundaries inside the run
    env = MettaGrid(cfg, num_envs=num_envs, seed=seed)
    obs = [env.reset().copy()]
    rewards = []
    for t in range(steps):
        o, r, _, _ = env.step(actions[t])
        obs.append(o.copy())
        rewards.append(r.copy())
    return np.stack(obs), np.stack(rewards), env.episode_stats()


def test_same_seed_same_game_different_seed_different_game():
    steps = 300
    rng = np.random.default_rng(1)
    actions = rng.integers(0, len(ACTIONS), size=(steps, 48), dtype=np.int32)
    obs_a, rew_a, stats_a = run_arena(7, steps, actions)
    obs_b, rew_b, stats_b = run_arena(7, steps, actions)
    assert np.array_equal(obs_a, obs_b) and np.array_equal(rew_a, rew_b)
    assert len(stats_a) == len(stats_b) == 4
    for x, y in zip(stats_a, stats_b):
        assert (x["env"], x["episode"], x["steps"]) == (y["env"], y["episode"], y["steps"])
        for k in x["agent"]:
            assert np.array_equal(x["agent"][k], y["agent"][k]), k
    obs_c, _, _ = run_arena(8, steps, actions)
    assert not np.array_equal(obs_a[0], obs_c[0])             # different maps from the start
    assert not np.array_equal(obs_a[0][:24], obs_a[0][24:])   # and game 0 differs from game 1


def test_reset_with_a_new_seed():
    cfg = presets.arena()
    env = MettaGrid(cfg, num_envs=1, seed=0)
    a = env.reset().copy()
    b = env.reset(seed=1).copy()
    c = env.reset(seed=0).copy()
    assert np.array_equal(a, c) and not np.array_equal(a, b)


# ----------------------------------------------------------------------------------------- memory
def _rss() -> int:
    psutil = pytest.importorskip("psutil")
    gc.collect()
    return psutil.Process().memory_info().rss


def _stepping_grows_memory_by(steps: int, warmup: int) -> float:
    cfg = presets.arena()
    env = MettaGrid(cfg, num_envs=1, seed=0)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, len(ACTIONS), size=(1000, env.num_rows), dtype=np.int32)
    for t in range(warmup):
        env.step(actions[t % 1000])
        if t % 1000 == 999:
            env.episode_stats()
    before = _rss()
    for t in range(steps):
        env.step(actions[t % 1000])
        if t % 1000 == 999:
            env.episode_stats()   # finished episodes are handed over, not kept
    env.episode_stats()
    return (_rss() - before) / 2**20


def test_stepping_does_not_grow_memory():
    assert _stepping_grows_memory_by(steps=100_000, warmup=5_000) < 4.0


@pytest.mark.slow
def test_stepping_a_million_times_does_not_grow_memory():
    assert _stepping_grows_memory_by(steps=1_000_000, warmup=5_000) < 8.0
