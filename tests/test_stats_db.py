"""StatsDB on real DuckDB: scripted episodes come back through the score queries; merging; bad input."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from metta_lightning.stats_db import (SIMULATION_SCORES_SQL, StatsDB, StatsDBError, flatten_config, merge,
                                      open_db)


def episode(rewards, hearts, steps=10, env=0, k=0):
    n = len(rewards)
    return {"env": env, "episode": k, "steps": steps, "reward": np.asarray(rewards, dtype=np.float32),
            "agent": {"heart.gained": np.asarray(hearts, dtype=np.float32),
                      "action.noop.success": np.arange(n, dtype=np.float32)},
            "game": {"objects.altar": 5.0, "tokens.written": 123.0}}


def fill(db: StatsDB, policy: str, version: int, scripted: dict[str, list[dict]], suite: str = "arena"):
    for sim_name, episodes in scripted.items():
        sim = db.add_simulation(sim_name, suite, env=sim_name, policy_key=policy, policy_version=version)
        for ep in episodes:
            db.add_episode(sim, ep, policy, version,
                           attributes=flatten_config({"max_steps": 10, "agent": {"rewards": {"heart": 1.0}}}),
                           replay_url=f"file:///replays/{policy}/{sim_name}.json.z")
        db.finish_simulation(sim)


def by(rows, *keys):
    return {tuple(r[k] for k in keys): r for r in rows}


def test_scores_from_scripted_episodes(tmp_path):
    path = tmp_path / "eval.duckdb"
    with StatsDB(path) as db:
        fill(db, "runA", 3, {
            "arena/basic": [episode([1, 3], [1, 0]), episode([2, 2], [2, 2], k=1)],   # mean reward 2.0
            "arena/combat": [episode([0, 1], [0, 1])],                                 # mean 0.5
            "nav/maze": [episode([4, 4], [0, 0])],                                     # mean 4.0
        })
        fill(db, "runB", 1, {"arena/basic": [episode([0, 0], [0, 0])]})
        counts = db.counts()
    assert counts["episodes"] == 5 and counts["simulations"] == 4
    assert counts["agent_metrics"] == 5 * 2 * 3  # reward + 2 agent stats, 2 agents, 5 episodes

    with StatsDB(path, read_only=True) as db:
        sims = by(db.simulation_scores(), "policy_key", "simulation")
        assert sims[("runA", "arena/basic")]["score"] == pytest.approx(2.0)
        assert sims[("runA", "arena/basic")]["num_episodes"] == 2
        assert sims[("runA", "arena/basic")]["num_agent_episodes"] == 4
        assert sims[("runA", "arena/combat")]["score"] == pytest.approx(0.5)
        assert sims[("runB", "arena/basic")]["score"] == pytest.approx(0.0)
        assert sims[("runA", "arena/basic")]["policy_version"] == 3

        cats = by(db.category_scores(), "policy_key", "category")
        assert cats[("runA", "arena")]["score"] == pytest.approx((2.0 + 0.5) / 2)
        assert cats[("runA", "nav")]["score"] == pytest.approx(4.0)
        suites = by(db.suite_scores(), "policy_key", "suite")
        assert suites[("runA", "arena")]["score"] == pytest.approx((2.0 + 0.5 + 4.0) / 3)

        hearts = by(db.simulation_scores("heart.gained"), "policy_key", "simulation")
        assert hearts[("runA", "arena/basic")]["score"] == pytest.approx(5 / 4)
        assert hearts[("runA", "arena/combat")]["score"] == pytest.approx(0.5)

        attrs = dict(db.con.execute("SELECT attribute, value FROM episode_attributes LIMIT 100").fetchall())
        assert attrs["agent.rewards.heart"] == "1.0" and attrs["max_steps"] == "10"
        assert "episode.env" in attrs
        assert db.replay_urls("runB") == ["file:///replays/runB/arena/basic.json.z"]
        game = db.con.execute("SELECT AVG(value) FROM game_metrics WHERE metric='tokens.written'").fetchone()[0]
        assert game == 123.0
        with pytest.raises(StatsDBError, match="unknown metric 'nope'"):
            db.simulation_scores("nope")

    # The SQL is usable by a user directly with plain duckdb.
    con = duckdb.connect(str(path), read_only=True)
    rows = con.execute(SIMULATION_SCORES_SQL, {"metric": "reward"}).fetchall()
    con.close()
    assert len(rows) == 4


def test_normalized_metric_counts_missing_rows_as_zero(tmp_path):
    with StatsDB(tmp_path / "a.duckdb") as db:
        sim = db.add_simulation("arena/basic", "arena", "arena/basic", "p", 0)
        ep = db.add_episode(sim, episode([1, 1], [4, 0]), "p", 0)
        db.con.execute("DELETE FROM agent_metrics WHERE episode_id = ? AND agent_id = 1 AND metric = 'heart.gained'",
                       [ep])
        (row,) = db.simulation_scores("heart.gained")
        assert row["score"] == pytest.approx(2.0)


def test_merge_databases_from_two_runs(tmp_path):
    a, b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    with StatsDB(a) as db:
        fill(db, "runA", 1, {"arena/basic": [episode([1, 1], [1, 1])]})
    with StatsDB(b) as db:
        fill(db, "runB", 2, {"arena/basic": [episode([3, 3], [0, 0])], "arena/combat": [episode([1, 0], [0, 0])]})
    merged_path = tmp_path / "merged.duckdb"
    with merge([a, b], into=merged_path) as db:
        assert db.counts()["episodes"] == 3
        # Merging the same source twice adds nothing.
        assert db.merge_from(a) == 0
    with open_db([merged_path]) as db:
        sims = by(db.simulation_scores(), "policy_key", "simulation")
        assert set(sims) == {("runA", "arena/basic"), ("runB", "arena/basic"), ("runB", "arena/combat")}
        assert sims[("runB", "arena/basic")]["score"] == 3.0
    with open_db([a, b]) as db:  # in-memory merge for analysis
        assert db.counts()["simulations"] == 3


def test_remote_database_round_trip():
    import fsspec

    uri = "memory://stats_test/run/eval.duckdb"
    with StatsDB(uri) as db:
        fill(db, "runM", 0, {"arena/basic": [episode([2, 2], [0, 0])]})
    assert fsspec.filesystem("memory").exists("/stats_test/run/eval.duckdb")
    with StatsDB(uri, read_only=True) as db:
        assert db.simulation_scores()[0]["score"] == 2.0
    with merge([uri], into=":memory:") as db:
        assert db.counts()["episodes"] == 1


def test_bad_databases(tmp_path):
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StatsDBError, match="cannot open as a DuckDB stats database"):
        StatsDB(junk, read_only=True)
    with pytest.raises(StatsDBError, match="not found"):
        StatsDB(tmp_path / "missing.duckdb", read_only=True)
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE t (x INT)")
    con.close()
    with pytest.raises(StatsDBError, match="not a metta_lightning stats database"):
        StatsDB(other, read_only=True)
    with StatsDB(tmp_path / "ok.duckdb") as db:
        with pytest.raises(StatsDBError, match="cannot open|not found"):
            db.merge_from(junk)
        with pytest.raises(StatsDBError, match="not a metta_lightning stats database"):
            db.merge_from(other)


def test_flatten_config():
    flat = flatten_config({"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": {}})
    assert flat == {"a.b": "1", "a.c": "[1,2]", "d": '"x"', "e": "{}"}
