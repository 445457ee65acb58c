"""The arena rules of ../shared/GAME.md, checked on small hand-drawn maps against the C++ engine.

Every expected value is worked out by hand from the rules (and the choices written down in
cpp/README.md). Conventions used below: in an ASCII map agents are numbered in row-major order;
step k of an episode runs at tick k (tick +1, then due converter events fire, then agents act), so
a conversion started during step k finishes at the start of step k + conversion_ticks.
"""

from __future__ import annotations

import numpy as np
import pytest

from envs import MettaGrid, presets
from envs.config import default_objects

from engine_helpers import A, ACTIONS, EMPTY_TOKEN, ITEMS, agents, make, step

NORTH, SOUTH, WEST, EAST = 0, 1, 2, 3
CENTRE = 0x55
INV = 17  # feature id of item 0's inventory


# ----------------------------------------------------------------------------------------- helpers
def agent(env: MettaGrid, i: int = 0, game: int = 0) -> dict:
    return agents(env, game)[i]


def obj_at(env: MettaGrid, row: int, col: int, game: int = 0) -> dict:
    hits = [o for o in env.grid_objects(game) if o["layer"] == 1 and (o["row"], o["col"]) == (row, col)]
    assert len(hits) == 1, f"expected one object at ({row}, {col}), found {hits}"
    return hits[0]


def inv(o: dict, item: str) -> int:
    return int(o["inventory"].get(item, 0))


def pos(o: dict) -> tuple[int, int]:
    return o["row"], o["col"]


def objects_with(**changes) -> dict:
    """The default object set with some objects' fields changed, e.g. mine_red={"max_output": 4}."""
    objs = default_objects()
    for name, update in changes.items():
        objs[name] = objs[name].model_copy(update=update)
    return objs


def tokens(obs_row: np.ndarray) -> list[tuple[int, int, int]]:
    """The used tokens of one agent's observation, in order."""
    return [tuple(int(v) for v in t) for t in obs_row if tuple(t) != EMPTY_TOKEN]


def cell_tokens(obs_row: np.ndarray, loc: int) -> dict[int, int]:
    """{feature: value} of the non-global tokens at `loc` (global tokens are the first four)."""
    out = {}
    for loc_, f, v in tokens(obs_row)[4:]:
        if loc_ == loc:
            assert f not in out, f"feature {f} twice at {loc:#x}"
            out[f] = v
    return out


def loc(dr: int, dc: int) -> int:
    """Observation location of the cell (dr, dc) away from the observing agent (11x11 window)."""
    return ((5 + dr) << 4) | (5 + dc)


# ----------------------------------------------------------------------------------------- noop/move
def test_noop_succeeds_and_changes_nothing():
    env = make(["#####", "#@..#", "#####"])
    step(env, "noop")
    a = agent(env)
    assert pos(a) == (1, 1) and a["orientation"] == NORTH
    assert a["last_action"] == A["noop"] and a["last_action_success"] is True


def test_agents_start_facing_north_with_empty_inventory():
    env = make(["#####", "#@.@#", "#####"])
    for a in agents(env):
        assert a["orientation"] == NORTH and a["inventory"] == {} and a["frozen"] == 0


def test_moves_step_into_empty_cells_and_turn():
    env = make(["#####", "#...#", "#.@.#", "#...#", "#####"])
    for action, expected_pos, orientation in [
        ("move_north", (1, 2), NORTH), ("move_south", (2, 2), SOUTH), ("move_west", (2, 1), WEST),
        ("move_east", (2, 2), EAST), ("move_east", (2, 3), EAST), ("move_south", (3, 3), SOUTH),
    ]:
        step(env, action)
        a = agent(env)
        assert pos(a) == expected_pos, action
        assert a["orientation"] == orientation and a["last_action_success"] is True


@pytest.mark.parametrize("action,orientation", [("move_north", NORTH), ("move_south", SOUTH),
                                                ("move_west", WEST), ("move_east", EAST)])
def test_failed_move_still_turns(action, orientation):
    env = make(["###", "#@#", "###"])
    step(env, action)
    a = agent(env)
    assert pos(a) == (1, 1)
    assert a["orientation"] == orientation
    assert a["last_action"] == A[action] and a["last_action_success"] is False


@pytest.mark.parametrize("char", ["#", "m", "n", "_", "S", "o", "s"])
def test_move_into_an_object_fails(char):
    env = make(["#####", f"#@{char}.#", "#####"])
    step(env, "move_east")
    a = agent(env)
    assert pos(a) == (1, 1) and a["orientation"] == EAST and a["last_action_success"] is False
    assert obj_at(env, 1, 2)["type_name"] != "agent"


def test_move_into_an_agent_is_a_successful_noop():
    """As in the original: moving into an agent turns, stays put and succeeds (no failure penalty)."""
    env = make(["#####", "#@@.#", "#####"], agent={"action_failure_penalty": 0.5})
    _, r, _, _ = step(env, "move_east", "noop")
    a0, a1 = agents(env)
    assert pos(a0) == (1, 1) and a0["orientation"] == EAST and a0["last_action_success"] is True
    assert pos(a1) == (1, 2) and r.tolist() == [0.0, 0.0]


def test_move_off_the_map_edge_fails():
    env = make(["@."])  # no border walls
    step(env, "move_north")
    assert pos(agent(env)) == (0, 0) and agent(env)["last_action_success"] is False
    step(env, "move_west")
    assert pos(agent(env)) == (0, 0) and agent(env)["last_action_success"] is False
    step(env, "move_east")
    assert pos(agent(env)) == (0, 1) and agent(env)["last_action_success"] is True


def test_two_agents_racing_for_one_cell_seeded_order():
    """Agents act in a seeded shuffled order: exactly one moves; which one depends on the seed. The other
    then moves into an agent, which succeeds without moving (see test_move_into_an_agent_is_a_successful_noop)."""
    winners = []
    for seed in range(24):
        env = make(["#####", "#@.@#", "#####"], seed=seed)
        step(env, "move_east", "move_west")
        a0, a1 = agents(env)
        assert a0["last_action_success"] is True and a1["last_action_success"] is True
        assert [pos(a0), pos(a1)] in ([(1, 2), (1, 3)], [(1, 1), (1, 2)])
        winner = 0 if pos(a0) == (1, 2) else 1
        winners.append(winner)
        # Same seed, same outcome.
        env2 = make(["#####", "#@.@#", "#####"], seed=seed)
        step(env2, "move_east", "move_west")
        assert pos(agent(env2, winner)) == (1, 2)
    assert set(winners) == {0, 1}


# ----------------------------------------------------------------------------------------- converters
def mine_ore_after(t: int) -> int:
    """Ore a fresh default mine holds after step t: one at ticks 1, 52, 103, ... up to 5."""
    return 0 if t < 1 else min(5, (t - 1) // 51 + 1)


def test_mine_cycle_51_ticks_until_max_output():
    env = make(["####", "#@m#", "####"])
    mine = obj_at(env, 1, 2)
    assert inv(mine, "ore_red") == 0 and mine["converting"] is True  # started at tick 0
    counts = []
    for _ in range(320):
        step(env, "noop")
        counts.append(inv(obj_at(env, 1, 2), "ore_red"))
    assert counts == [mine_ore_after(t) for t in range(1, 321)]
    assert counts[0] == 1 and counts[50] == 1 and counts[51] == 2 and counts[204] == 5 and counts[203] == 4
    mine = obj_at(env, 1, 2)
    assert mine["converting"] is False and mine["cooling_down"] is False  # full: idle
    assert cell_tokens(env.observations[0], loc(0, 1)) == {0: 2, 5: 0, INV + ITEMS.index("ore_red"): 5}


def test_converter_at_max_output_waits_until_emptied():
    env = make(["####", "#@n#", "####"], objects=objects_with(generator_red={"initial_resource_count": 5}),
               agent={"initial_inventory": {"ore_red": 1}})
    step(env, "move_east")
    step(env, "put_items")            # tick 2: the ore goes in, but 5 batteries = max_output: no start
    gen = obj_at(env, 1, 2)
    assert gen["inventory"] == {"ore_red": 1, "battery_red": 5} and gen["converting"] is False
    step(env, "noop")
    assert obj_at(env, 1, 2)["converting"] is False
    step(env, "get_items")            # tick 4: emptied -> re-checks, converts the waiting ore
    gen = obj_at(env, 1, 2)
    assert inv(agent(env), "battery_red") == 5
    assert gen["inventory"] == {} and gen["converting"] is True
    step(env, "noop")
    assert obj_at(env, 1, 2)["inventory"] == {"battery_red": 1}


def test_full_mine_restarts_when_emptied():
    env = make(["####", "#@m#", "####"])
    step(env, "move_east")
    for _ in range(259):
        step(env, "noop")
    assert env.current_step() == 260 and inv(obj_at(env, 1, 2), "ore_red") == 5
    step(env, "get_items")  # tick 261: takes all 5, the mine restarts at once
    assert inv(agent(env), "ore_red") == 5
    mine = obj_at(env, 1, 2)
    assert inv(mine, "ore_red") == 0 and mine["converting"] is True
    step(env, "noop")  # tick 262: conversion finished
    assert inv(obj_at(env, 1, 2), "ore_red") == 1


def test_generator_converts_ore_and_cools_down_25_ticks():
    env = make(["####", "#@n#", "####"], agent={"initial_inventory": {"ore_red": 2}})
    step(env, "move_east")                         # tick 1: face the generator
    step(env, "put_items")                         # tick 2: gives min(1, 2) = 1 ore, starts converting
    a, gen = agent(env), obj_at(env, 1, 2)
    assert a["last_action_success"] is True and inv(a, "ore_red") == 1
    assert gen["inventory"] == {} and gen["converting"] is True
    step(env, "get_items")                         # tick 3: the battery appears, then the agent takes it
    a, gen = agent(env), obj_at(env, 1, 2)
    assert a["last_action_success"] is True and inv(a, "battery_red") == 1 and gen["inventory"] == {}
    assert gen["cooling_down"] is True and gen["converting"] is False
    step(env, "put_items")                         # tick 4: the ore waits while the generator cools down
    gen = obj_at(env, 1, 2)
    assert inv(gen, "ore_red") == 1 and gen["converting"] is False and gen["cooling_down"] is True
    for _ in range(5, 28):                         # ticks 5..27: still cooling (cooldown ends at 3 + 25)
        step(env, "noop")
    gen = obj_at(env, 1, 2)
    assert inv(gen, "ore_red") == 1 and gen["cooling_down"] is True
    step(env, "noop")                              # tick 28: cooldown over, converts the waiting ore
    gen = obj_at(env, 1, 2)
    assert gen["inventory"] == {} and gen["converting"] is True
    step(env, "noop")                              # tick 29: battery ready
    assert obj_at(env, 1, 2)["inventory"] == {"battery_red": 1}


def test_altar_takes_three_batteries_for_a_heart():
    env = make(["####", "#@_#", "####"], agent={"initial_inventory": {"battery_red": 5}})
    step(env, "move_east")
    _, r, _, _ = step(env, "put_items")
    assert inv(agent(env), "battery_red") == 2 and r[0] == 0.0
    altar = obj_at(env, 1, 2)
    assert altar["inventory"] == {} and altar["converting"] is True
    _, r, _, _ = step(env, "get_items")
    assert inv(agent(env), "heart") == 1
    assert r[0] == pytest.approx(1.0)  # arena reward: heart 1
    assert agent(env)["total_reward"] == pytest.approx(1.0)


def test_altar_with_too_few_batteries_holds_them():
    env = make(["####", "#@_#", "####"], agent={"initial_inventory": {"battery_red": 2}})
    step(env, "move_east")
    step(env, "put_items")  # min(3, 2) = 2 move: success, but not enough to convert
    a, altar = agent(env), obj_at(env, 1, 2)
    assert a["last_action_success"] is True and a["inventory"] == {}
    assert altar["inventory"] == {"battery_red": 2} and altar["converting"] is False
    step(env, "noop")
    step(env, "get_items")  # inputs are not outputs: nothing to take
    assert agent(env)["last_action_success"] is False and obj_at(env, 1, 2)["inventory"] == {"battery_red": 2}


def test_easy_altar_takes_one_battery():
    easy = presets.arena_basic_easy_shaped()
    env = make(["####", "#@_#", "####"], objects=easy.objects,
               agent={"initial_inventory": {"battery_red": 2}})
    step(env, "move_east")
    step(env, "put_items")
    assert inv(agent(env), "battery_red") == 1
    step(env, "get_items")
    assert inv(agent(env), "heart") == 1 and obj_at(env, 1, 2)["inventory"] == {}


def test_lasery_makes_a_laser_from_battery_and_two_ore():
    env = make(["####", "#@S#", "####"], agent={"initial_inventory": {"battery_red": 1, "ore_red": 3}})
    step(env, "move_east")
    step(env, "put_items")
    a = agent(env)
    assert a["inventory"] == {"ore_red": 1}
    assert obj_at(env, 1, 2)["converting"] is True
    step(env, "get_items")
    assert agent(env)["inventory"] == {"ore_red": 1, "laser": 1}


def test_armory_makes_armor_from_three_ore():
    env = make(["####", "#@o#", "####"], agent={"initial_inventory": {"ore_red": 4}})
    step(env, "move_east")
    step(env, "put_items")
    assert agent(env)["inventory"] == {"ore_red": 1}
    step(env, "get_items")
    assert agent(env)["inventory"] == {"ore_red": 1, "armor": 1}


def test_put_items_partial_input_succeeds_without_converting():
    env = make(["####", "#@o#", "####"], agent={"initial_inventory": {"ore_red": 1}})
    step(env, "move_east")
    step(env, "put_items")
    assert agent(env)["last_action_success"] is True and agent(env)["inventory"] == {}
    armory = obj_at(env, 1, 2)
    assert armory["inventory"] == {"ore_red": 1} and armory["converting"] is False


@pytest.mark.parametrize("lines,face", [
    (["####", "#@.#", "####"], "move_east"),   # nothing there
    (["####", "#@##", "####"], "move_east"),   # a wall
    (["####", "#@s#", "####"], "move_east"),   # a block
    (["####", "#@m#", "####"], "move_east"),   # a mine has no inputs
    (["####", "#@n#", "####"], "move_east"),   # a generator, but no ore to give
    (["####", "#@@#", "####"], "move_east"),   # an agent
])
def test_put_items_failures(lines, face):
    env = make(lines, agent={"initial_inventory": {"battery_red": 3}})
    n = env.num_agents
    step(env, face, *["noop"] * (n - 1))
    step(env, "put_items", *["noop"] * (n - 1))
    a = agent(env)
    assert a["last_action_success"] is False and a["inventory"] == {"battery_red": 3}


def test_get_items_takes_all_outputs():
    objs = objects_with(mine_red={"initial_resource_count": 4, "max_output": 4})
    env = make(["####", "#@m#", "####"], objects=objs)
    assert inv(obj_at(env, 1, 2), "ore_red") == 4 and obj_at(env, 1, 2)["converting"] is False
    step(env, "move_east")
    step(env, "get_items")
    assert agent(env)["last_action_success"] is True and inv(agent(env), "ore_red") == 4
    mine = obj_at(env, 1, 2)
    assert mine["inventory"] == {} and mine["converting"] is True  # below max_output again


def test_get_items_respects_the_item_limit():
    objs = objects_with(mine_red={"initial_resource_count": 4, "max_output": 4})
    env = make(["####", "#@m#", "####"], objects=objs,
               agent={"resource_limits": {"ore_red": 3, "heart": 255}, "initial_inventory": {"ore_red": 1}})
    step(env, "move_east")
    step(env, "get_items")
    assert agent(env)["last_action_success"] is True and inv(agent(env), "ore_red") == 3
    assert inv(obj_at(env, 1, 2), "ore_red") == 2
    step(env, "get_items")  # full: nothing moves (the mine, below max_output, made one more at tick 3)
    assert agent(env)["last_action_success"] is False and inv(agent(env), "ore_red") == 3
    assert inv(obj_at(env, 1, 2), "ore_red") == 3


def test_default_limits_are_50_per_item_and_255_hearts():
    objs = objects_with(mine_red={"initial_resource_count": 4, "max_output": 4},
                        altar={"initial_resource_count": 5, "max_output": 5})
    env = make(["#####", "#m@_#", "#####"], objects=objs,
               agent={"initial_inventory": {"ore_red": 48, "heart": 252}})
    step(env, "move_west")
    step(env, "get_items")
    assert inv(agent(env), "ore_red") == 50 and inv(obj_at(env, 1, 1), "ore_red") == 2
    step(env, "move_east")
    step(env, "get_items")
    assert inv(agent(env), "heart") == 255 and inv(obj_at(env, 1, 3), "heart") == 2


def test_get_items_respects_shared_limits():
    objs = objects_with(mine_red={"initial_resource_count": 4, "max_output": 4})
    env = make(["####", "#@m#", "####"], objects=objs,
               agent={"shared_limits": [{"items": ["ore_red", "battery_red"], "limit": 3}],
                      "initial_inventory": {"battery_red": 2}})
    step(env, "move_east")
    step(env, "get_items")
    assert agent(env)["inventory"] == {"battery_red": 2, "ore_red": 1}
    assert inv(obj_at(env, 1, 2), "ore_red") == 3


@pytest.mark.parametrize("lines", [
    ["####", "#@.#", "####"], ["####", "#@##", "####"], ["####", "#@n#", "####"], ["####", "#@@#", "####"],
])
def test_get_items_failures(lines):
    env = make(lines)
    n = env.num_agents
    step(env, "move_east", *["noop"] * (n - 1))
    step(env, "get_items", *["noop"] * (n - 1))
    assert agent(env)["last_action_success"] is False and agent(env)["inventory"] == {}


# ----------------------------------------------------------------------------------------- combat
COMBAT_MAP = ["#####",
              "#.@.#",   # agent 0: the target
              "#.@.#",   # agent 1: the attacker, facing north
              "#####"]


def test_attack_resolves_before_moves():
    lines = ["#####",
             "#...#",
             "#.@.#",    # agent 0 at distance 3, trying to move out of range
             "#...#",
             "#...#",
             "#.@.#",    # agent 1 attacks straight ahead
             "#####"]
    env = make(lines, agent={"initial_inventory": {"laser": 1}})
    step(env, "move_north", "attack_0")
    target, attacker = agents(env)
    assert pos(target) == (2, 2), "the attacked agent moved before the attack"
    assert target["frozen"] == 10 and target["last_action_success"] is False
    assert attacker["last_action_success"] is True


def test_attack_steals_inventory_within_limits_and_costs_a_laser():
    env = make(COMBAT_MAP, agent={"initial_inventory": {"laser": 1, "ore_red": 5, "heart": 2},
                                  "resource_limits": {"ore_red": 7, "heart": 255}})
    _, r, _, _ = step(env, "noop", "attack_0")
    target, attacker = agents(env)
    assert attacker["last_action_success"] is True
    assert target["frozen"] == 10
    # The attacker paid its laser and took the target's; ore only up to its limit of 7.
    assert attacker["inventory"] == {"laser": 1, "ore_red": 7, "heart": 4}
    assert target["inventory"] == {"ore_red": 3}
    # Rewards: heart weight 1. Losing hearts costs reward.
    assert r[1] == pytest.approx(2.0) and r[0] == pytest.approx(-2.0)


def test_freeze_skips_actions_for_freeze_duration():
    env = make(COMBAT_MAP, agent={"initial_inventory": {"laser": 1}})
    obs, _, _, _ = step(env, "move_east", "attack_0")   # hit at step 1; its move is skipped
    assert pos(agent(env, 0)) == (1, 2) and agent(env, 0)["frozen"] == 10
    assert cell_tokens(obs[0], CENTRE)[2] == 1                         # agent:frozen token, own view
    assert cell_tokens(obs[1], loc(-1, 0))[2] == 1                     # ... and as seen by the attacker
    moved_at = None
    for t in range(2, 15):
        obs, _, _, _ = step(env, "move_east", "noop")
        target = agent(env, 0)
        if pos(target) != (1, 2):
            moved_at = t
            break
        assert target["last_action_success"] is False
        assert cell_tokens(obs[0], CENTRE)[2] == 1
    # Frozen for 10 ticks: the actions of steps 1..10 are skipped, step 11 moves.
    assert moved_at == 11
    assert agent(env, 0)["frozen"] == 0 and cell_tokens(obs[0], loc(0, 0))[2] == 0


def test_freeze_duration_is_configurable():
    env = make(COMBAT_MAP, agent={"initial_inventory": {"laser": 1}, "freeze_duration": 3})
    step(env, "noop", "attack_0")
    assert agent(env, 0)["frozen"] == 3
    for _ in range(2):
        step(env, "move_east", "noop")
        assert pos(agent(env, 0)) == (1, 2)
    step(env, "move_east", "noop")
    assert pos(agent(env, 0)) == (1, 3)


def test_armor_blocks_the_attack_and_is_consumed():
    env = make(COMBAT_MAP, agent={"initial_inventory": {"laser": 2, "armor": 1, "heart": 1}})
    _, r, _, _ = step(env, "noop", "attack_0")
    target, attacker = agents(env)
    assert attacker["last_action_success"] is True
    assert target["frozen"] == 0 and target["inventory"] == {"laser": 2, "heart": 1}
    assert attacker["inventory"] == {"laser": 1, "armor": 1, "heart": 1}
    assert r.tolist() == [0.0, 0.0]
    # Without armor the next attack hits and steals.
    step(env, "noop", "attack_0")
    target, attacker = agents(env)
    assert target["frozen"] == 10 and target["inventory"] == {}
    assert attacker["inventory"] == {"laser": 2, "armor": 1, "heart": 2}


def test_attacking_a_frozen_agent_steals_nothing_and_refreshes_the_freeze():
    lines = ["#####",
             "#.@.#",    # agent 0: target
             "#o@.#",    # agent 1: attacker, an armory to its west
             "#####"]
    env = make(lines, agent={"initial_inventory": {"laser": 2, "ore_red": 5},
                             "resource_limits": {"ore_red": 7, "heart": 255}})
    step(env, "noop", "attack_0")                 # hit: steals 2 ore (limit 7)
    target, attacker = agents(env)
    assert inv(attacker, "ore_red") == 7 and inv(target, "ore_red") == 3 and target["frozen"] == 10
    step(env, "noop", "move_west")                # face the armory (fails, turns)
    step(env, "noop", "put_items")                # gives 3 ore: room for more loot now
    assert inv(agent(env, 1), "ore_red") == 4
    step(env, "noop", "move_north")               # face the target again (blocked by it)
    assert agent(env, 0)["frozen"] == 7
    step(env, "noop", "attack_0")                 # hits a frozen agent
    target, attacker = agents(env)
    assert attacker["last_action_success"] is True
    assert target["frozen"] == 10                 # refreshed
    assert inv(target, "ore_red") == 3 and inv(attacker, "ore_red") == 4   # no second steal
    # Lasers: starts with 2, pays 1, steals the target's 2 (= 3), pays 1 again (= 2).
    assert inv(attacker, "laser") == 2 and inv(target, "laser") == 0


#: Attacker at (4, 3) facing north; the 3x3 block ahead is rows 1..3, cols 2..4.
TARGET_MAP = ["#######",
              "#.@...#",   # agent 0 at (1, 2): distance 3, left
              "#..@@.#",   # agent 1 at (2, 3): distance 2, straight; agent 2 at (2, 4): distance 2, right
              "#.@...#",   # agent 3 at (3, 2): distance 1, left
              "#..@..#",   # agent 4: attacker
              "#######"]
#: Scan order: nearest row first; in each row straight ahead, then left, then right
#: (GAME.md: "the column straight ahead, then left, then right, nearest row first").
TARGET_ORDER = [3, 1, 2, 0]


@pytest.mark.parametrize("n", range(9))
def test_attack_target_selection_order(n):
    env = make(TARGET_MAP, agent={"initial_inventory": {"laser": 1}})
    step(env, "noop", "noop", "noop", "noop", f"attack_{n}")
    expected = TARGET_ORDER[min(n, len(TARGET_ORDER) - 1)]   # past the end: the last one found
    frozen = [a["agent_id"] for a in agents(env) if a["frozen"] > 0]
    assert frozen == [expected]
    assert inv(agent(env, 4), "laser") == 1  # paid 1, stole 1


def test_attack_looks_left_relative_to_facing():
    # Facing east, "left" is north: a target north-east is found before one south-east.
    lines = ["#####",
             "#..@#",   # agent 0: distance 1 ahead, left (north) side
             "#.@##",   # agent 1: attacker, turns east
             "#..@#",   # agent 2: distance 1 ahead, right (south) side
             "#####"]
    env = make(lines, agent={"initial_inventory": {"laser": 2}})
    step(env, "noop", "move_east", "noop")   # turns east without moving: a wall is in the way
    assert agent(env, 1)["orientation"] == EAST
    step(env, "noop", "attack_0", "noop")
    assert [a["frozen"] > 0 for a in agents(env)] == [True, False, False]
    step(env, "noop", "attack_1", "noop")
    assert [a["frozen"] > 0 for a in agents(env)] == [True, False, True]


def test_attack_range_is_three_cells():
    lines = ["###", "#@#", "#.#", "#.#", "#.#", "#@#", "###"]   # target at distance 4
    env = make(lines, agent={"initial_inventory": {"laser": 1}})
    step(env, "noop", "attack_0")
    target, attacker = agents(env)
    assert attacker["last_action_success"] is False and target["frozen"] == 0
    assert inv(attacker, "laser") == 1  # no target: costs nothing


def test_attack_at_nobody_fails_and_costs_nothing():
    env = make(["#####", "#...#", "#.@.#", "#####"], agent={"initial_inventory": {"laser": 1}})
    step(env, "attack_0")
    a = agent(env)
    assert a["last_action_success"] is False and inv(a, "laser") == 1


def test_attack_without_laser_fails():
    env = make(COMBAT_MAP, agent={"initial_inventory": {"heart": 1}})
    step(env, "noop", "attack_0")
    target, attacker = agents(env)
    assert attacker["last_action_success"] is False
    assert target["frozen"] == 0 and inv(target, "heart") == 1 and inv(attacker, "heart") == 1


def test_non_combat_attack_cost_can_never_be_paid():
    basic = presets.arena_basic()
    env = make(COMBAT_MAP, actions=basic.actions, agent={"initial_inventory": {"laser": 50, "heart": 1}})
    assert env.action_names == ACTIONS  # same action space as combat
    for n in range(9):
        step(env, "noop", f"attack_{n}")
        target, attacker = agents(env)
        assert attacker["last_action_success"] is False
        assert target["frozen"] == 0 and inv(attacker, "laser") == 50 and inv(target, "heart") == 1


# ----------------------------------------------------------------------------------------- rewards
def test_reward_is_the_change_of_the_capped_score():
    objs = objects_with(mine_red={"initial_resource_count": 4, "max_output": 4})
    env = make(["#####", "#m@o#", "#####"], objects=objs,
               agent={"rewards": {"ore_red": 0.1}, "reward_caps": {"ore_red": 0.25}})
    rewards = []
    for action in ["move_west", "get_items", "move_east", "put_items", "noop"]:
        _, r, _, _ = step(env, action)
        rewards.append(float(r[0]))
    # 4 ore -> min(0.4, 0.25) = 0.25; putting 3 in the armory leaves 1 -> 0.1.
    assert rewards == pytest.approx([0.0, 0.25, 0.0, -0.15, 0.0], abs=1e-6)
    a = agent(env)
    assert a["total_reward"] == pytest.approx(0.1, abs=1e-6)
    assert a["current_reward"] == pytest.approx(0.0, abs=1e-6)


def test_initial_inventory_gives_no_reward():
    env = make(["###", "#@#", "###"], agent={"initial_inventory": {"heart": 3}})
    _, r, _, _ = step(env, "noop")
    assert r[0] == 0.0


def test_easy_shaped_rewards_follow_the_production_chain():
    easy = presets.arena_basic_easy_shaped()
    env = make(["####", "#@_#", "####"], objects=easy.objects,
               agent=easy.agent.model_copy(update={"initial_inventory": {"battery_red": 2}}))
    got = [float(step(env, a)[1][0]) for a in ["move_east", "put_items", "get_items", "put_items", "noop", "noop"]]
    # 2 batteries: min(1.6, 1) = 1. After one put: min(0.8, 1) = 0.8 (-0.2). Heart +1.
    # Second put (altar cooling): 0 batteries (-0.8).
    assert got == pytest.approx([0.0, -0.2, 1.0, -0.8, 0.0, 0.0], abs=1e-6)


def test_action_failure_penalty():
    env = make(["####", "#@.#", "####"], agent={"action_failure_penalty": 0.5})
    got = [float(step(env, a)[1][0]) for a in ["move_north", "noop", "move_east", "move_east", "get_items"]]
    assert got == pytest.approx([-0.5, 0.0, 0.0, -0.5, -0.5])
    assert agent(env)["total_reward"] == pytest.approx(-1.5)


def test_failure_penalty_for_invalid_ids_but_not_frozen_turns():
    env = make(COMBAT_MAP, agent={"action_failure_penalty": 0.25, "initial_inventory": {"laser": 1}})
    _, r, _, _ = step(env, 99, -5)                   # invalid ids: failed noops
    assert r.tolist() == pytest.approx([-0.25, -0.25])
    _, r, _, _ = step(env, "move_north", "attack_0")  # hit: the target's move is skipped, not failed
    assert r.tolist() == pytest.approx([0.0, 0.0])
    _, r, _, _ = step(env, "move_north", "noop")      # still frozen: skipped, no penalty
    assert r.tolist() == pytest.approx([0.0, 0.0])
    assert agent(env, 0)["last_action"] == A["move_north"] and agent(env, 0)["last_action_success"] is False


def test_default_failure_penalty_is_zero():
    env = make(["###", "#@#", "###"])
    _, r, _, _ = step(env, "move_north")
    assert r[0] == 0.0


# ----------------------------------------------------------------------------------------- observations
def test_observation_tokens_of_a_small_map():
    env = make(["#####", "#@..#", "#####"], max_steps=100)
    obs = env.observations
    assert obs.shape == (1, 200, 3) and obs.dtype == np.uint8 and env.obs_shape == (200, 3)
    got = tokens(obs[0])
    # Global tokens first, at the centre: completion, last action, last action arg, last reward.
    assert got[:4] == [(CENTRE, 7, 0), (CENTRE, 8, 0), (CENTRE, 9, 0), (CENTRE, 10, 0)]
    # The agent itself: type 0, group 0, not frozen, facing north, nothing held.
    assert sorted(got[4:8]) == [(CENTRE, 0, 0), (CENTRE, 1, 0), (CENTRE, 2, 0), (CENTRE, 3, 0)]
    # Walls by Manhattan distance, ties by row then column: (map row/col minus the agent's (1, 1)).
    walls = [(-1, 0), (0, -1), (1, 0),                 # distance 1
             (-1, -1), (-1, 1), (1, -1), (1, 1),       # distance 2
             (-1, 2), (0, 3), (1, 2),                  # distance 3
             (-1, 3), (1, 3)]                          # distance 4
    assert got[8:] == [(loc(dr, dc), 0, 1) for dr, dc in walls]
    # Everything else is unused.
    assert len(got) == 20 and all(tuple(t) == EMPTY_TOKEN for t in obs[0][20:])


def test_observation_shows_orientation_inventory_and_last_action():
    env = make(["#####", "#@..#", "#####"], max_steps=100, agent={"initial_inventory": {"ore_red": 3, "heart": 2}})
    obs, _, _, _ = step(env, "move_east")
    got = tokens(obs[0])
    assert got[:4] == [(CENTRE, 7, 3), (CENTRE, 8, A["move_east"]), got[2], (CENTRE, 10, 0)]  # round(255/100)=3
    assert got[2][:2] == (CENTRE, 9)
    me = cell_tokens(obs[0], CENTRE)
    assert me == {0: 0, 1: 0, 2: 0, 3: EAST, INV + ITEMS.index("ore_red"): 3, INV + ITEMS.index("heart"): 2}
    # Now at (1, 2): the cell it left is empty, the side walls are 2 cells west and east.
    assert cell_tokens(obs[0], loc(0, -1)) == {} and cell_tokens(obs[0], loc(0, 1)) == {}
    assert cell_tokens(obs[0], loc(0, -2)) == {0: 1} and cell_tokens(obs[0], loc(0, 2)) == {0: 1}


@pytest.mark.parametrize("action,arg", [("move_north", 0), ("move_south", 1), ("move_west", 2), ("move_east", 3),
                                        ("noop", 0), ("get_items", 0), ("attack_0", 0), ("attack_5", 5)])
def test_last_action_and_arg_tokens(action, arg):
    env = make(["#####", "#...#", "#.@.#", "#...#", "#####"])
    obs, _, _, _ = step(env, action)
    assert tokens(obs[0])[1:3] == [(CENTRE, 8, A[action]), (CENTRE, 9, arg)]


def test_episode_completion_and_last_reward_tokens():
    env = make(["####", "#@_#", "####"], max_steps=100, agent={"initial_inventory": {"battery_red": 3}})
    for _ in range(19):
        step(env, "move_east")
    step(env, "put_items")                           # step 20: 20/100*255 = 51
    obs, r, _, _ = step(env, "get_items")            # step 21: heart, reward 1
    assert r[0] == pytest.approx(1.0)
    got = tokens(obs[0])
    assert got[0] == (CENTRE, 7, round(21 / 100 * 255))
    assert got[1] == (CENTRE, 8, A["get_items"])
    # GAME.md: observations are written, then rewards computed; as in the original, last_reward
    # therefore shows only this step's failure penalties (none here), never the item reward.
    assert got[3] == (CENTRE, 10, 0)
    obs, r, _, _ = step(env, "noop")
    assert r[0] == 0.0
    got = tokens(obs[0])
    assert got[0] == (CENTRE, 7, round(22 / 100 * 255)) and got[3] == (CENTRE, 10, 0)


def test_last_reward_token_shows_this_steps_failure_penalty_wrapped():
    """round(-0.25 * 100) = -25 as a uint8 wraps to 231 (the original's cast), in the same step's obs."""
    env = make(["###", "#@#", "###"], max_steps=100, agent={"action_failure_penalty": 0.25})
    obs, r, _, _ = step(env, "move_north")       # fails: -0.25
    assert r[0] == pytest.approx(-0.25) and tokens(obs[0])[3] == (CENTRE, 10, 256 - 25)
    obs, r, _, _ = step(env, "noop")             # succeeds: no penalty this step
    assert r[0] == 0.0 and tokens(obs[0])[3] == (CENTRE, 10, 0)
    obs, _, _, _ = step(env, 99)                 # invalid id: a failed noop
    assert tokens(obs[0])[3] == (CENTRE, 10, 231)


def test_other_agents_and_converters_in_view():
    env = make(["######", "#@.@m#", "######"], max_steps=100, agent={"initial_inventory": {"laser": 1}})
    obs, _, _, _ = step(env, "noop", "move_west")   # agent 1 steps to (1, 2)
    a0, a1 = agents(env)
    assert pos(a1) == (1, 2) and a1["orientation"] == WEST
    other = cell_tokens(obs[0], loc(0, 1))
    assert other == {0: 0, 1: 0, 2: 0, 3: WEST, INV + ITEMS.index("laser"): 1}
    mine = cell_tokens(obs[0], loc(0, 3))
    assert mine == {0: 2, 5: 1, INV + ITEMS.index("ore_red"): 1}  # one ore, cooling down
    # Agent 1 sees the mine 2 cells east, agent 0 one cell west.
    assert cell_tokens(obs[1], loc(0, 2))[0] == 2 and cell_tokens(obs[1], loc(0, -1))[3] == NORTH


def test_block_emits_swappable():
    env = make(["####", "#@s#", "####"])
    assert cell_tokens(env.observations[0], loc(0, 1)) == {0: 14, 6: 1}


def test_observation_window_is_11x11():
    row = "#@" + "." * 4 + "m" + "." * 5 + "n" + "#"   # mine 5 cells east: in view; generator 11 east: out
    env = make(["#" * len(row), row, "#" * len(row)])
    obs = env.observations[0]
    assert cell_tokens(obs, loc(0, 5)) == {0: 2, 5: 1}
    types = {v for _, f, v in tokens(obs)[4:] if f == 0}
    assert 5 not in types  # generator_red out of view
    locs = {l for l, _, _ in tokens(obs)}
    assert all((l >> 4) <= 10 and (l & 15) <= 10 for l in locs)


def test_smaller_observation_window():
    env = make(["#####", "#@..#", "#####"], obs_width=5, obs_height=5)
    got = tokens(env.observations[0])
    centre = 0x22
    assert all(l == centre for l, _, _ in got[:8])
    assert (0x12, 0, 1) in got                 # wall north of the agent
    assert (0x24, 0, 1) not in got             # (1, 3) is empty
    assert all((l >> 4) <= 4 and (l & 15) <= 4 for l, _, _ in got)


def test_tokens_past_the_limit_are_dropped_and_counted():
    # 4 global + 4 self + 8 walls = 16 tokens; only 6 fit.
    env = make(["###", "#@#", "###"], max_steps=5, num_observation_tokens=6)
    obs = env.observations
    assert obs.shape == (1, 6, 3)
    assert all(t[0] == CENTRE for t in obs[0])   # globals then the agent itself, all at the centre
    assert [int(t[1]) for t in obs[0][:4]] == [7, 8, 9, 10]
    for _ in range(5):
        step(env, "noop")
    (ep,) = env.episode_stats()
    written, dropped = ep["game"]["tokens.written"], ep["game"]["tokens.dropped"]
    assert written > 0 and written % 6 == 0 and dropped == written / 6 * 10
    assert written / 6 >= 5  # at least one write per step


def test_token_order_matches_grid_objects_in_the_arena():
    """Every agent's view in a random arena: tokens ordered by distance, then row, then column, and
    exactly the objects that grid_objects places in the 11x11 window (when nothing was dropped)."""
    env = MettaGrid(presets.arena(), num_envs=1, seed=5)
    rng = np.random.default_rng(0)
    for _ in range(30):
        env.step(rng.integers(0, 7, size=env.num_rows, dtype=np.int32))
    objs = env.grid_objects(0)
    checked = 0
    for a in [o for o in objs if o["type_name"] == "agent"]:
        row = env.observations[a["agent_id"]]
        got = tokens(row)
        assert all(l == CENTRE for l, _, _ in got[:4]) and [f for _, f, _ in got[:4]] == [7, 8, 9, 10]
        keys = [(abs((l >> 4) - 5) + abs((l & 15) - 5), l >> 4, l & 15) for l, _, _ in got[4:]]
        assert keys == sorted(keys)
        if len(got) == 200:
            continue  # some may have been dropped
        expected = sorted((loc(o["row"] - a["row"], o["col"] - a["col"]), o["type_id"]) for o in objs
                          if abs(o["row"] - a["row"]) <= 5 and abs(o["col"] - a["col"]) <= 5)
        assert sorted((l, v) for l, f, v in got[4:] if f == 0) == expected
        for o in objs:
            if o["type_name"] == "agent" and abs(o["row"] - a["row"]) <= 5 and abs(o["col"] - a["col"]) <= 5:
                cell = cell_tokens(row, loc(o["row"] - a["row"], o["col"] - a["col"]))
                held = {f - INV: v for f, v in cell.items() if f >= INV}
                assert held == {ITEMS.index(k): min(v, 255) for k, v in o["inventory"].items()}
                assert cell[3] == o["orientation"]
        checked += 1
    assert checked > 0


def test_rows_are_game_major():
    env = make(["#####", "#@.@#", "#####"], num_envs=3)
    assert env.num_rows == 6 and env.observations.shape == (6, 200, 3)
    actions = ["noop"] * 6
    actions[1 * 2 + 1] = "move_west"    # game 1, agent 1
    actions[2 * 2 + 0] = "move_east"    # game 2, agent 0
    step(env, *actions)
    assert [pos(a) for a in agents(env, 0)] == [(1, 1), (1, 3)]
    assert [pos(a) for a in agents(env, 1)] == [(1, 1), (1, 2)]
    assert [pos(a) for a in agents(env, 2)] == [(1, 2), (1, 3)]


# ----------------------------------------------------------------------------------------- rotate/swap/change_glyph
# Off by default (envs.config.ActionsConfig); enabled, they follow attack_8 in the flat action list:
# rotate_north/south/west/east, swap, change_glyph_0..K-1.
EXTRA_ACTIONS = {"rotate": {"enabled": True}, "swap": {"enabled": True},
                 "change_glyph": {"enabled": True, "number_of_glyphs": 4}}


def make_extra(lines, **overrides) -> MettaGrid:
    return make(lines, actions=EXTRA_ACTIONS, **overrides)


def act(env: MettaGrid, *names):
    """One step with actions named by this env's action list (names or raw ids)."""
    ids = [env.action_names.index(a) if isinstance(a, str) else a for a in names]
    return step(env, *ids)


def finish(env: MettaGrid, max_steps: int) -> dict:
    """Play noops to the end of the (only) game's episode and return its statistics."""
    for _ in range(max_steps - env.current_step()):
        act(env, *["noop"] * env.num_agents)
    (ep,) = env.episode_stats()
    return ep


def test_extra_action_ids_follow_attack():
    env = make_extra(["###", "#@#", "###"])
    assert env.action_names[16:] == ["rotate_north", "rotate_south", "rotate_west", "rotate_east", "swap",
                                     "change_glyph_0", "change_glyph_1", "change_glyph_2", "change_glyph_3"]
    assert env.num_actions == 25


@pytest.mark.parametrize("action,orientation", [("rotate_south", SOUTH), ("rotate_west", WEST),
                                                ("rotate_east", EAST), ("rotate_north", NORTH)])
def test_rotate_turns_without_moving(action, orientation):
    env = make_extra(["#####", "#...#", "#.@.#", "#...#", "#####"])
    obs, r, _, _ = act(env, action)
    a = agent(env)
    assert pos(a) == (2, 2) and a["orientation"] == orientation
    assert a["last_action"] == env.action_names.index(action) and a["last_action_success"] is True
    assert r[0] == 0.0
    # Own cell shows the new orientation; the global tokens show the action and its direction.
    assert cell_tokens(obs[0], CENTRE)[3] == orientation
    assert tokens(obs[0])[1:3] == [(CENTRE, 8, env.action_names.index(action)), (CENTRE, 9, orientation)]


def test_rotate_next_to_walls_succeeds_and_aims_the_next_action():
    env = make_extra(["####", "#@m#", "####"], max_steps=5, agent={"action_failure_penalty": 0.5})
    act(env, "get_items")                  # facing north (a wall): fails
    assert agent(env)["last_action_success"] is False and inv(agent(env), "ore_red") == 0
    act(env, "rotate_east")                # blocked on every side: turns anyway, never moves
    a = agent(env)
    assert pos(a) == (1, 1) and a["orientation"] == EAST and a["last_action_success"] is True
    _, r, _, _ = act(env, "get_items")     # now faces the mine, which made an ore at tick 1
    assert inv(agent(env), "ore_red") == 1 and agent(env)["last_action_success"] is True
    ep = finish(env, 5)
    assert ep["agent"]["action.rotate_east.success"][0] == 1 and ep["agent"]["action.rotate_east.failed"][0] == 0
    assert ep["agent"]["action.get_items.failed"][0] == 1


def test_swap_trades_places_with_a_block():
    env = make_extra(["#####", "#@s.#", "#####"], max_steps=5)
    block_id = obj_at(env, 1, 2)["id"]
    act(env, "rotate_east")
    obs, r, _, _ = act(env, "swap")
    a = agent(env)
    assert pos(a) == (1, 2) and a["orientation"] == EAST and a["last_action_success"] is True
    block = obj_at(env, 1, 1)
    assert block["id"] == block_id and block["type_name"] == "block"
    assert [o for o in env.grid_objects() if o["layer"] == 1 and pos(o) == (1, 2)] == []
    # The observation shows the block behind the agent, still swappable; nothing ahead.
    assert cell_tokens(obs[0], loc(0, -1)) == {0: 14, 6: 1} and cell_tokens(obs[0], loc(0, 1)) == {}
    # Facing the empty cell now: a second swap fails.
    act(env, "swap")
    assert pos(agent(env)) == (1, 2) and agent(env)["last_action_success"] is False
    ep = finish(env, 5)
    assert ep["agent"]["action.swap.success"][0] == 1 and ep["agent"]["action.swap.failed"][0] == 1


@pytest.mark.parametrize("lines,what", [
    (["#####", "#@#.#", "#####"], "wall"),
    (["#####", "#@..#", "#####"], "empty"),
    (["#####", "#@m.#", "#####"], "mine_red"),
    (["#####", "#@@.#", "#####"], "agent"),
])
def test_swap_failures(lines, what):
    env = make_extra(lines, max_steps=4, agent={"action_failure_penalty": 0.5})
    before = sorted((o["id"], pos(o)) for o in env.grid_objects())
    act(env, *["rotate_east"] + ["noop"] * (env.num_agents - 1))
    _, r, _, _ = act(env, *["swap"] + ["noop"] * (env.num_agents - 1))
    a = agent(env)
    assert a["last_action"] == env.action_names.index("swap") and a["last_action_success"] is False
    assert r[0] == pytest.approx(-0.5)
    assert sorted((o["id"], pos(o)) for o in env.grid_objects()) == before, what
    ep = finish(env, 4)
    assert ep["agent"]["action.swap.failed"][0] == 1 and ep["agent"]["action.swap.success"][0] == 0


def test_swap_off_the_map_edge_fails():
    env = make_extra(["@", "s"])   # no border: facing north is off the map
    act(env, "swap")
    assert pos(agent(env)) == (0, 0) and agent(env)["last_action_success"] is False
    act(env, "rotate_south")
    act(env, "swap")
    assert pos(agent(env)) == (1, 0) and obj_at(env, 0, 0)["type_name"] == "block"


def test_change_glyph_sets_the_glyph_token_and_field():
    env = make_extra(["######", "#@.@.#", "######"], max_steps=6)
    assert [a["glyph"] for a in agents(env)] == [0, 0]
    assert 11 not in cell_tokens(env.observations[0], CENTRE)   # glyph 0 emits no token
    obs, r, _, _ = act(env, "change_glyph_3", "change_glyph_2")
    a0, a1 = agents(env)
    assert (a0["glyph"], a1["glyph"]) == (3, 2) and pos(a0) == (1, 1) and a0["orientation"] == NORTH
    assert a0["last_action_success"] is True and r.tolist() == [0.0, 0.0]
    assert cell_tokens(obs[0], CENTRE)[11] == 3 and cell_tokens(obs[0], loc(0, 2))[11] == 2   # self, other
    assert cell_tokens(obs[1], loc(0, -2))[11] == 3
    assert tokens(obs[0])[1:3] == [(CENTRE, 8, env.action_names.index("change_glyph_3")), (CENTRE, 9, 3)]
    # Back to glyph 0: the token disappears; the other agent keeps its glyph.
    obs, _, _, _ = act(env, "change_glyph_0", "noop")
    assert [a["glyph"] for a in agents(env)] == [0, 2] and 11 not in cell_tokens(obs[0], CENTRE)
    # Past the last glyph is an invalid id: a failed noop that leaves the glyph alone.
    act(env, len(env.action_names), "noop")
    assert agent(env, 0)["glyph"] == 0 and agent(env, 0)["last_action_success"] is False
    ep = finish(env, 6)
    assert ep["agent"]["action.change_glyph_3.success"].tolist() == [1, 0]
    assert ep["agent"]["action.change_glyph_0.success"].tolist() == [1, 0]
    assert ep["agent"]["action.invalid"].tolist() == [1, 0]


def test_glyph_is_recorded_in_replays(tmp_path):
    import envs.replay

    env = MettaGrid(presets.ascii(["####", "#@.#", "####"], max_steps=2, actions=EXTRA_ACTIONS), seed=0)
    rec = env.record_replays(games=[0], directory=str(tmp_path))
    env.reset()
    for name in ["change_glyph_1", "noop"]:
        env.step(np.array([env.action_names.index(name)], dtype=np.int32))
    (ag,) = [o for o in envs.replay.load(rec.paths[0])["objects"] if "agent_id" in o]
    assert ag["glyph"] == [[0, 0], [1, 1]]
