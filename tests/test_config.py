"""GameConfig validation: every mistake in a config is reported by name, before any engine runs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from envs import GameConfig, presets
from envs.config import ArenaMapBuilder, ConverterConfig, default_objects


def test_unknown_top_level_field_is_named():
    with pytest.raises(ValidationError, match="max_step"):
        GameConfig(max_step=10)


def test_unknown_nested_field_is_named():
    with pytest.raises(ValidationError, match="initial_inventroy"):
        GameConfig(agent={"initial_inventroy": {"ore_red": 1}})
    with pytest.raises(ValidationError, match="cooldwn"):
        GameConfig(objects={"mine_red": {"kind": "converter", "type_id": 2, "cooldwn": 5}})


@pytest.mark.parametrize("overrides", [
    {"max_steps": -1},
    {"agent": {"initial_inventory": {"ore_red": -1}}},
    {"agent": {"default_resource_limit": -5}},
    {"agent": {"resource_limits": {"heart": -1}}},
    {"agent": {"freeze_duration": -1}},
    {"map_builder": {"kind": "arena", "objects": {"wall": -1}}},
    {"map_builder": {"kind": "arena", "num_agents": 0}},
    {"map_builder": {"kind": "arena", "border": -1}},
    {"objects": {"wall": {"kind": "wall"}, "mine_red": {"kind": "converter", "type_id": 2, "cooldown": -1}}},
])
def test_negative_counts_are_rejected(overrides):
    with pytest.raises(ValidationError):
        GameConfig(**overrides)


def test_negative_count_error_names_the_field():
    with pytest.raises(ValidationError, match=r"initial_inventory\.ore_red"):
        GameConfig(agent={"initial_inventory": {"ore_red": -1}})


def test_unknown_object_in_arena_is_named():
    with pytest.raises(ValidationError, match="unknown object 'tower'"):
        GameConfig(map_builder=ArenaMapBuilder(objects={"wall": 3, "tower": 1}))


def test_unknown_object_in_map_legend_is_named():
    with pytest.raises(ValidationError, match=r"'t' at row 1, column 2 names unknown object 'tower'"):
        GameConfig(map_builder={"kind": "ascii", "lines": ["####", "#@t#", "####"], "legend": {"t": "tower"}})


def test_map_character_of_a_removed_object_is_reported():
    objects = default_objects()
    del objects["altar"]
    with pytest.raises(ValidationError, match=r"'_' at row 2, column 1 names unknown object 'altar'"):
        presets.ascii(["####", "#@.#", "#_.#", "####"], objects=objects)


def test_unknown_map_character_names_char_row_and_column():
    with pytest.raises(ValidationError, match=r"unknown map character 'x' at row 2, column 3"):
        presets.ascii(["#####", "#@..#", "#..x#", "#####"])


def test_ragged_map_rows_are_rejected():
    with pytest.raises(ValidationError, match="row 1 has 4 characters, row 0 has 5"):
        presets.ascii(["#####", "#@.#", "#####"])


def test_map_without_agents_is_rejected():
    with pytest.raises(ValidationError, match="no agents"):
        presets.ascii(["#####", "#.m.#", "#####"])


def test_unknown_items_are_named():
    with pytest.raises(ValidationError, match="agent.rewards: unknown item 'gold'"):
        GameConfig(agent={"rewards": {"gold": 1.0}})
    with pytest.raises(ValidationError, match="objects.mine_red.output_resources: unknown item 'ore_purple'"):
        objects = default_objects()
        objects["mine_red"] = ConverterConfig(type_id=2, output_resources={"ore_purple": 1})
        GameConfig(objects=objects)
    with pytest.raises(ValidationError, match=r"agent.shared_limits\[0\].items: unknown item 'gems'"):
        GameConfig(agent={"shared_limits": [{"items": ["ore_red", "gems"], "limit": 3}]})
    with pytest.raises(ValidationError, match="actions.attack.consumed_resources: unknown item 'bullet'"):
        GameConfig(actions={"attack": {"consumed_resources": {"bullet": 1}}})


def test_duplicate_type_ids_are_rejected():
    objects = default_objects()
    objects["altar"] = objects["altar"].model_copy(update={"type_id": 1})  # same as wall
    with pytest.raises(ValidationError, match="share a type_id"):
        GameConfig(objects=objects)


def test_reserved_object_names_are_rejected():
    objects = default_objects()
    objects["agent"] = ConverterConfig(type_id=99)
    with pytest.raises(ValidationError, match="'agent' is reserved"):
        GameConfig(objects=objects)


def test_all_actions_disabled_is_rejected():
    off = {"enabled": False}
    with pytest.raises(ValidationError, match="every action is disabled"):
        GameConfig(actions={"noop": off, "move": off, "put_items": off, "get_items": off, "attack": off})


def test_overfull_arena_room_is_rejected():
    with pytest.raises(ValidationError, match="do not fit"):
        GameConfig(map_builder=ArenaMapBuilder(room_size=3, objects={"wall": 9}))


def test_assignment_is_validated():
    cfg = presets.arena()
    with pytest.raises(ValidationError):
        cfg.max_steps = -3


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_presets_are_valid_arena_games(name):
    cfg = presets.PRESETS[name]()
    assert cfg.num_agents == 24
    assert cfg.action_names == ["noop", "move_north", "move_south", "move_west", "move_east",
                                "put_items", "get_items"] + [f"attack_{i}" for i in range(9)]
    spec = cfg.engine_spec()
    assert spec["map"]["kind"] == "arena"
    assert spec["map"]["rooms_r"] == 2 and spec["map"]["rooms_c"] == 2
    assert spec["map"]["room_size"] * 2 + spec["map"]["border"] * 2 == 62
    names = [o["name"] for o in spec["objects"]]
    counts = {names[i]: n for i, n in spec["map"]["room_objects"]}
    assert counts == {"wall": 10, "altar": 5, "mine_red": 10, "generator_red": 5, "lasery": 1, "armory": 1}
    attack_cost = dict(map(tuple, spec["attack"]["cost"]))
    laser = cfg.items.index("laser")
    assert attack_cost == ({laser: 1} if name in ("arena", "arena_combat") else {laser: 100})
    # The unpayable cost really is unpayable: more than anyone may hold.
    if name not in ("arena", "arena_combat"):
        assert attack_cost[laser] > spec["agent"]["resource_limits"][laser]


def test_easy_shaped_altar_takes_one_battery():
    spec = presets.arena_basic_easy_shaped().engine_spec()
    altar = next(o for o in spec["objects"] if o["name"] == "altar")
    battery = spec["item_names"].index("battery_red")
    heart = spec["item_names"].index("heart")
    assert altar["inputs"] == [[battery, 1]] and altar["outputs"] == [[heart, 1]]
    normal = next(o for o in presets.arena().engine_spec()["objects"] if o["name"] == "altar")
    assert normal["inputs"] == [[battery, 3]]


def test_ascii_spec_codes_cells():
    cfg = presets.ascii(["#####", "#@m_#", "#####"], max_steps=7, agent={"initial_inventory": {"laser": 2}})
    spec = cfg.engine_spec()
    names = [o["name"] for o in spec["objects"]]
    wall, mine, altar = names.index("wall"), names.index("mine_red"), names.index("altar")
    assert spec["map"]["grid"][1] == [wall, -2, mine, altar, wall]
    assert spec["map"]["grid"][0] == [wall] * 5
    assert spec["max_steps"] == 7
    assert spec["agent"]["initial_inventory"][cfg.items.index("laser")] == 2
    assert spec["agent"]["resource_limits"][cfg.items.index("heart")] == 255
    assert spec["agent"]["resource_limits"][cfg.items.index("ore_red")] == 50
    assert cfg.num_agents == 1


def test_feature_names_and_normalizations_line_up():
    cfg = presets.arena()
    assert len(cfg.feature_names) == len(cfg.feature_normalizations) == 17 + len(cfg.items)
    assert cfg.feature_names[0] == "type_id" and cfg.feature_names[7] == "episode_completion_pct"
    assert cfg.feature_names[17 + cfg.items.index("heart")] == "inv:heart"
    assert all(n > 0 for n in cfg.feature_normalizations)
