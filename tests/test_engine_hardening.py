"""Extreme configs and hand-made specs: bounds refused by name in Python, and a C++ engine that neither
recurses, overflows nor loops forever on what reaches it (cpp/README.md, "Limits")."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from envs import MettaGrid, presets
from envs import _mettagrid
from envs.config import FEATURES, INVENTORY_FEATURE_BASE, ConverterConfig, GameConfig
from envs.info import EnvInfo

from engine_helpers import agents, make, step

# The feature table before the engine was aligned with the original's (ids 4, 12, 13, 15 renamed).
OLD_FEATURES = {4: ("agent:reserved", 1.0), 12: ("resource_rewards", 255.0), 13: ("visitation_counts", 1000.0),
                15: ("color", 255.0)}


def raw_engine(spec: dict, num_envs: int = 1) -> tuple[_mettagrid.Engine, np.ndarray]:
    """The C++ engine on a hand-made spec dict (no pydantic in between), reset; returns it and its obs."""
    eng = _mettagrid.Engine(spec, num_envs, 0)
    rows = num_envs * eng.num_agents
    obs = np.zeros((rows, eng.num_tokens, 3), np.uint8)
    eng.set_buffers(obs, np.zeros(rows, np.float32), np.zeros(rows, bool), np.zeros(rows, bool))
    eng.reset(None)
    return eng, obs


def mine_spec(**mine) -> dict:
    """One agent next to a mine_red whose spec fields are overridden (as a hand-made spec could)."""
    spec = presets.ascii(["####", "#@m#", "####"], max_steps=50).engine_spec()
    (m,) = [o for o in spec["objects"] if o["name"] == "mine_red"]
    m.update(mine)
    return spec


def converter(eng) -> dict:
    (c,) = [o for o in eng.grid_objects(0) if o["type_name"] == "mine_red"]
    return c


# ----------------------------------------------------------------------------------------- features
def test_feature_names_agree_between_config_and_engine():
    assert _mettagrid.INVENTORY_FEATURE_BASE == INVENTORY_FEATURE_BASE
    assert list(_mettagrid.FEATURE_NAMES) == [FEATURES[i][0] for i in range(INVENTORY_FEATURE_BASE)]
    # The original's table where GAME.md is silent.
    assert [FEATURES[i] for i in (4, 12, 13, 15)] == [
        ("agent:reserved_for_future_use", 255.0), ("agent:visitation_counts", 1000.0), ("tag", 10.0),
        ("clipped", 1.0)]


def test_feature_ids_come_from_the_spec():
    """The engine takes every feature id from the spec: shifted ids give the same tokens, shifted."""
    spec = presets.arena(num_agents=8).engine_spec()
    shifted = {**spec, "feature_ids": {k: v + 100 for k, v in spec["feature_ids"].items()},
               "inventory_feature_base": spec["inventory_feature_base"] + 120}
    (a, obs_a), (b, obs_b) = raw_engine(spec), raw_engine(shifted)
    remap = np.arange(256)
    remap[:INVENTORY_FEATURE_BASE] += 100
    remap[INVENTORY_FEATURE_BASE:255] += 120
    remap[255] = 255
    rng = np.random.default_rng(0)
    for _ in range(50):
        actions = rng.integers(0, len(spec["actions"]), a.num_agents, dtype=np.int32)
        a.step(actions, True), b.step(actions, True)
        assert np.array_equal(obs_b[..., [0, 2]], obs_a[..., [0, 2]])
        assert np.array_equal(obs_b[..., 1], remap[obs_a[..., 1]])
    assert ((obs_a[..., 1] >= INVENTORY_FEATURE_BASE) & (obs_a[..., 1] < 255)).any()  # inventory was seen


def test_engine_refuses_unknown_features_and_actions_by_name():
    spec = presets.ascii(["###", "#@#", "###"]).engine_spec()
    ids = spec["feature_ids"]
    with pytest.raises(ValueError, match="unknown feature 'agent:mood'"):
        raw_engine({**spec, "feature_ids": {**ids, "agent:mood": 40}})
    with pytest.raises(ValueError, match="feature_ids lacks 'tag'"):
        raw_engine({**spec, "feature_ids": {k: v for k, v in ids.items() if k != "tag"}})
    with pytest.raises(ValueError, match="id 0 is out of 0..254 or taken"):
        raw_engine({**spec, "feature_ids": {**ids, "tag": 0}})
    with pytest.raises(ValueError, match="inventory of blueprint"):
        raw_engine({**spec, "inventory_feature_base": 246})  # blueprint would be 255
    with pytest.raises(ValueError, match="unknown action kind 'teleport'"):
        raw_engine({**spec, "actions": [["teleport", 0]] + spec["actions"][1:]})
    with pytest.raises(ValueError, match="direction must be in 0..3"):
        raw_engine({**spec, "actions": [["move", 4]] + spec["actions"][1:]})
    with pytest.raises(ValueError, match="one action name per action"):
        raw_engine({**spec, "actions": spec["actions"][1:]})


def test_checkpoint_with_the_old_feature_table_loads_and_acts_the_same():
    from metta_lightning import checkpoint as ck
    from models.feedforward import FeedForward

    cfg = presets.arena(num_agents=4)
    new = EnvInfo.from_config(cfg)
    names, norms = list(new.feature_names), list(new.feature_normalizations)
    for i, (name, norm) in OLD_FEATURES.items():
        names[i], norms[i] = name, norm
    old = new.model_copy(update={"feature_names": names, "feature_normalizations": norms})
    torch.manual_seed(0)
    policy = FeedForward(old, channels=8, hidden_size=16).eval()
    ck.write_bytes_atomic("memory://hardening/old:v1.mpt", ck.artifact_bytes(policy, old))
    from models.base import FeatureRemap

    loaded = ck.load_policy("memory://hardening/old:v1.mpt")
    remap = FeatureRemap.between(loaded.env_info, new)
    table = remap.table
    assert [int(table[i]) for i in range(len(names))] == [0xFF if i in OLD_FEATURES else i for i in range(len(names))]
    env = MettaGrid(cfg, seed=0)
    obs = torch.from_numpy(env.reset().copy())
    init = torch.ones(len(obs), dtype=torch.bool)
    with torch.no_grad():
        a, b = policy.forward_step(obs, None, init), loaded.forward_step(remap(obs), None, init)
    assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["values"], b["values"])


# ----------------------------------------------------------------------------------------- config bounds
@pytest.mark.parametrize("field,value", [
    ("max_output", 10**9), ("initial_resource_count", 2_000_000_000), ("cooldown", 10**9),
    ("conversion_ticks", 10**9), ("max_output", -1)])
def test_extreme_converter_values_are_refused_by_name(field, value):
    with pytest.raises(ValidationError, match=field):
        ConverterConfig(type_id=2, output_resources={"ore_red": 1}, **{field: value})


@pytest.mark.parametrize("where", ["input_resources", "output_resources"])
def test_extreme_recipe_amounts_are_refused_by_name(where):
    with pytest.raises(ValidationError, match=rf"{where}\.ore_red"):
        ConverterConfig(type_id=2, **{where: {"ore_red": 256}})


@pytest.mark.parametrize("agent", [{"default_resource_limit": 256}, {"resource_limits": {"heart": 1000}},
                                   {"initial_inventory": {"heart": 300}}, {"freeze_duration": 10**9}])
def test_extreme_agent_values_are_refused_by_name(agent):
    field = next(iter(agent))
    with pytest.raises(ValidationError, match=field):
        GameConfig(agent=agent)


def test_zero_time_cycle_that_changes_nothing_is_refused():
    with pytest.raises(ValidationError, match="convert forever"):
        ConverterConfig(type_id=2, input_resources={"ore_red": 1}, output_resources={"ore_red": 1},
                        conversion_ticks=0, cooldown=0)
    ConverterConfig(type_id=2, input_resources={"ore_red": 1}, output_resources={"ore_red": 2},
                    conversion_ticks=0, cooldown=0)  # makes progress: fine


def test_bounds_at_their_limits_are_accepted_and_run():
    objs = dict(presets.arena().objects)
    objs["mine_red"] = objs["mine_red"].model_copy(update={
        "max_output": 255, "initial_resource_count": 255, "conversion_ticks": 0, "cooldown": 0})
    env = make(["####", "#@m#", "####"], objects=objs,
               agent={"default_resource_limit": 255, "initial_inventory": {"ore_red": 255}})
    step(env, "move_east")
    step(env, "get_items")   # full: nothing fits
    assert agents(env)[0]["inventory"]["ore_red"] == 255


# ----------------------------------------------------------------------------------------- the engine itself
def test_zero_time_conversions_run_as_a_loop_not_a_recursion():
    """conversion_ticks 0, cooldown 0 and a large max_output: a million conversions in one call."""
    eng, _ = raw_engine(mine_spec(max_output=1_000_000, conversion_ticks=0, cooldown=0))
    assert converter(eng)["inventory"] == {"ore_red": 1_000_000}


def test_held_outputs_are_summed_in_64_bits():
    """Two outputs near 2e9 each: the sum is past INT32_MAX, so the converter is full and never starts."""
    spec = mine_spec(max_output=2**31 - 1, initial_resource_count=2_000_000_000, conversion_ticks=0, cooldown=0)
    (m,) = [o for o in spec["objects"] if o["name"] == "mine_red"]
    m["outputs"] = [[0, 1], [1, 1]]
    eng, _ = raw_engine(spec)
    for _ in range(3):
        eng.step(np.zeros(1, np.int32), True)
    c = converter(eng)
    assert c["inventory"] == {"ore_red": 2_000_000_000, "ore_blue": 2_000_000_000} and not c["converting"]


def test_hand_made_spec_out_of_range_is_refused_by_the_engine():
    with pytest.raises(ValueError, match="convert forever"):
        raw_engine(mine_spec(inputs=[[0, 1]], outputs=[[0, 1]], conversion_ticks=0, cooldown=0))
    with pytest.raises(ValueError, match="max_output"):
        raw_engine(mine_spec(max_output=-1))
    with pytest.raises(ValueError, match="recipe amounts"):
        raw_engine(mine_spec(outputs=[[0, -3]]))
    spec = mine_spec()
    spec["agent"]["resource_limits"][0] = 256
    with pytest.raises(ValueError, match="resource_limits"):
        raw_engine(spec)


def test_initial_inventory_respects_shared_limits_in_item_order():
    env = make(["###", "#@#", "###"], agent={
        "shared_limits": [{"items": ["ore_red", "ore_blue", "battery_red"], "limit": 7}],
        "initial_inventory": {"ore_red": 3, "ore_blue": 3, "battery_red": 3, "heart": 5}})
    assert agents(env)[0]["inventory"] == {"ore_red": 3, "ore_blue": 3, "battery_red": 1, "heart": 5}


def test_agent_stats_are_float64_so_endless_episodes_keep_counting():
    """float32 stops at 2^24 (16.7M): stats are summed and handed over in float64."""
    env = make(["###", "#@#", "###"], max_steps=2)
    step(env, "noop")
    step(env, "noop")
    (ep,) = env.episode_stats()
    assert all(v.dtype == np.float64 for v in ep["agent"].values())
    assert ep["agent"]["action.noop.success"].tolist() == [2.0]
