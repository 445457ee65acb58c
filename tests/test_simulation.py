"""Simulation suites: a policy (in memory or a checkpoint URI) on named simulations -> stats, DB, replays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from envs.info import EnvInfo
from metta_lightning.simulation import (SUITES, SimulationConfig, SimulationError, evaluate, format_results,
                                        resolve_suite, run_simulation, run_suite)
from metta_lightning.stats_db import StatsDB
from models import FeedForward

SMOKE = SUITES["smoke"].simulations["basic"]


@pytest.fixture(scope="module")
def policy() -> FeedForward:
    torch.manual_seed(0)
    return FeedForward(EnvInfo.from_config(SMOKE.game_config()), channels=8, hidden_size=32)


def test_resolve_suite_names_and_errors(tmp_path):
    assert list(resolve_suite("arena").simulations) == ["basic", "combat"]
    one = resolve_suite("arena/combat")
    assert one.name == "arena" and list(one.simulations) == ["combat"]
    assert list(resolve_suite("smoke/basic,smoke/combat").simulations) == ["basic", "combat"]
    with pytest.raises(SimulationError, match="unknown suite 'nope'.*suites: arena, smoke"):
        resolve_suite("nope")
    with pytest.raises(SimulationError, match="unknown simulation 'arena/nope'.*arena/basic"):
        resolve_suite("arena/nope")
    with pytest.raises(SimulationError, match="mixes suites"):
        resolve_suite("arena/basic,smoke/basic")
    path = tmp_path / "suite.yaml"
    path.write_text("name: mine\nsimulations:\n  tiny:\n    game: arena_basic\n    num_episodes: 1\n"
                    "    game_overrides: {max_steps: 5}\n")
    suite = resolve_suite(str(path))
    assert suite.name == "mine" and suite.simulations["tiny"].game_overrides == {"max_steps": 5}
    path.write_text("name: mine\nsimulations:\n  tiny:\n    gmae: arena_basic\n")
    with pytest.raises(SimulationError, match="bad suite file"):
        resolve_suite(str(path))
    with pytest.raises(SimulationError, match="not found"):
        resolve_suite(str(tmp_path / "missing.yaml"))


def test_run_simulation_records_episodes_and_replays(policy, tmp_path):
    policy.train()
    r = run_simulation(policy, SMOKE.model_copy(update={"num_episodes": 3}), name="smoke/basic", suite="smoke",
                       replay_dir=str(tmp_path / "replays"), replay_episodes=1)
    assert policy.training, "the policy's mode is restored"
    assert len(r.episodes) == 3
    for e in r.episodes:
        assert e["steps"] == 30
        assert e["reward"].shape == (4,)
        assert "heart.gained" in e["agent"] and "action.move_north.success" in e["agent"]
    assert not math.isnan(r.mean_reward)
    replays = [e["replay_url"] for e in r.episodes if "replay_url" in e]
    assert len(replays) == 1
    from envs import replay

    rp = replay.load(replays[0])
    assert rp["num_agents"] == 4 and rp["max_steps"] == 30
    # Moves happen: a random-init policy samples all actions.
    moves = sum(float(np.sum(e["agent"]["action.move_north.success"])) for e in r.episodes)
    assert moves > 0


def test_deterministic_runs_repeat(policy):
    a = run_simulation(policy, SMOKE, deterministic=True)
    b = run_simulation(policy, SMOKE, deterministic=True)
    assert [e["reward"].tolist() for e in a.episodes] == [e["reward"].tolist() for e in b.episodes]
    c = run_simulation(policy, SMOKE, seed=1)
    d = run_simulation(policy, SMOKE, seed=1)
    assert [e["agent"]["action.noop.success"].tolist() for e in c.episodes] == \
        [e["agent"]["action.noop.success"].tolist() for e in d.episodes]


def test_run_suite_writes_database(policy, tmp_path):
    with StatsDB(tmp_path / "eval.duckdb") as db:
        res = run_suite(policy, "smoke", db=db, policy_key="rand", policy_version=7,
                        replay_dir=str(tmp_path / "replays"))
        assert set(res.log_dict()) == {"eval/smoke/score", "eval/smoke/basic", "eval/smoke/combat"}
        rows = {r["simulation"]: r for r in db.simulation_scores()}
        assert set(rows) == {"smoke/basic", "smoke/combat"}
        for short, sim in res.simulations.items():
            assert rows[f"smoke/{short}"]["score"] == pytest.approx(sim.mean_reward)
            assert rows[f"smoke/{short}"]["policy_key"] == "rand" and rows[f"smoke/{short}"]["policy_version"] == 7
        (suite_row,) = db.suite_scores()
        assert suite_row["score"] == pytest.approx(res.score)
        attrs = dict(db.con.execute("SELECT attribute, value FROM episode_attributes").fetchall())
        assert attrs["max_steps"] == "30" and attrs["map_builder.num_agents"] == "4"
        assert len(db.replay_urls("rand")) == 2
        assert "replays/rand/v7/smoke/basic/" in db.replay_urls("rand", "smoke/basic")[0]


def test_evaluate_checkpoint_uri_and_bad_uri(policy, tmp_path):
    from metta_lightning.checkpoint import CheckpointError, save_policy

    uri = save_policy(policy, policy.env_info, str(tmp_path / "ckpt" / "myrun:v3.mpt"))
    results = evaluate([uri, policy], "smoke/basic", str(tmp_path / "eval.duckdb"))
    assert [r.policy for r in results] == ["myrun:v3", "policy:v0"]
    # Same weights and seeds -> the same scores whether loaded from the artifact or in memory.
    assert results[0].score == pytest.approx(results[1].score)
    table = format_results(results)
    assert "smoke/basic" in table and "myrun:v3" in table
    with pytest.raises(CheckpointError, match="not found"):
        evaluate([str(tmp_path / "ckpt" / "other:v1.mpt")], "smoke", str(tmp_path / "x.duckdb"))
    with pytest.raises(SimulationError, match="unknown suite"):
        evaluate([uri], "nope", str(tmp_path / "x.duckdb"))


def test_time_limit_with_no_episode_is_an_error(policy):
    sim = SimulationConfig(game="arena_basic", game_overrides=SMOKE.game_overrides | {"max_steps": 100000},
                           num_episodes=1, max_time_s=0.2)
    with pytest.raises(SimulationError, match="finished no episode"):
        run_simulation(policy, sim, name="slow")


def test_feature_remap_for_a_policy_trained_on_other_features(policy):
    cfg = SMOKE.game_config()
    info = EnvInfo.from_config(cfg)
    # A policy whose training env listed two features in the other order still plays (remapped by name).
    names = list(info.feature_names)
    names[0], names[3] = names[3], names[0]
    other = FeedForward(info.model_copy(update={"feature_names": names}), channels=8, hidden_size=32)
    r = run_simulation(other, SMOKE)
    assert len(r.episodes) == 2
    bad = FeedForward(info.model_copy(update={"action_names": info.action_names[:-1] + ["zzz"]}), channels=8,
                      hidden_size=32)
    with pytest.raises(SimulationError, match="actions"):
        run_simulation(bad, SMOKE)


def test_example_suite_file_resolves():
    from pathlib import Path

    suite = resolve_suite(str(Path(__file__).resolve().parents[1] / "configs" / "eval_suite.yaml"))
    assert suite.name == "arena_small" and set(suite.simulations) == {"basic", "combat", "easy_shaped"}
    for sim in suite.simulations.values():
        assert sim.game_config().num_agents == 6
