"""Cross-play: several policies in one game. A `learn_small` policy trained for one epoch against the
random NPC in a two-agent version of its room (the trained one wins, and the database and the rating
say so); seat assignment; NPC opponents; the EvaluateCallback's opponent pool; bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from metta_lightning.cli import main
from metta_lightning.scorecard import analyze, build_crossplay
from metta_lightning.simulation import SimulationError, assign_agents, cross_play
from metta_lightning.stats_db import StatsDB

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[1]

DUEL = ROOT / "configs" / "eval_duel.yaml"  # learn_small's room with a second agent


def duel_suite(episodes: int = 8) -> dict:
    suite = yaml.safe_load(DUEL.read_text())
    suite["simulations"]["room"]["num_episodes"] = episodes
    return suite


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code


@pytest.fixture(scope="module")
def trained_learn_small(tmp_path_factory) -> str:
    """configs/learn_small.yaml for one epoch (40,960 agent-steps, ~15 s): enough for the first ore and
    battery (reward ~0.5 against random's 0.06); returns the artifact's path."""
    tmp = tmp_path_factory.mktemp("learn_small")
    cfg = {"trainer": {"max_epochs": 1, "logger": False, "default_root_dir": str(tmp / "ls"), "callbacks": [
        {"class_path": "callbacks.checkpoint.PolicyCheckpoint", "init_args": {"epoch_interval": 1}}]}}
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", str(ROOT / "configs" / "learn_small.yaml"), "--config", str(tmp / "cfg.yaml")])
    artifact = tmp / "ls" / "checkpoints" / "ls:v1.mpt"
    assert artifact.exists()
    return str(artifact)


@pytest.mark.slow  # ~25 s of training and play on a quiet 2-core machine, minutes on a busy one
def test_trained_policy_beats_random_in_cross_play(trained_learn_small, tmp_path, capsys):
    db_path = tmp_path / "xp.duckdb"
    code = main_code(["evaluate", trained_learn_small, "random", "--cross-play", "--suite", str(DUEL),
                      "--db", str(db_path), "--replay-episodes", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "ls:v1" in out and "random:v0" in out and "appended to" in out

    with StatsDB(db_path, read_only=True) as db:
        # Every agent of every episode names its policy: one seat each in this two-agent game.
        per_episode = db.query("SELECT episode_id, list(policy_key ORDER BY agent_id) AS keys, "
                               "list(g.group_id ORDER BY ap.agent_id) AS groups FROM agent_policies ap "
                               "JOIN agent_groups g USING (episode_id, agent_id) GROUP BY episode_id")
        assert len(per_episode) == 8
        assert all(sorted(r["keys"]) == ["ls", "random"] for r in per_episode)
        # Seats rotate with the game: the trained policy played agent 0 in some games and agent 1 in others.
        assert {r["keys"].index("ls") for r in per_episode} == {0, 1}
        assert all(r["groups"][r["keys"].index("ls")] == 0 for r in per_episode)  # group = seat index
        assert db.simulation_scores() == []  # nobody played alone: no solo scores
        rows = {(r["policy_key"], r["opponent_key"]): r for r in db.crossplay_scores()}
        trained, rand = rows[("ls", "random")], rows[("random", "ls")]
        # Straight from the tables: the trained agents' mean return against the random agents'.
        direct = db.query("SELECT ap.policy_key, AVG(m.value) AS r FROM agent_policies ap JOIN agent_metrics m "
                          "USING (episode_id, agent_id) WHERE m.metric = 'reward' GROUP BY 1")
        direct = {r["policy_key"]: r["r"] for r in direct}
        assert math.isclose(trained["score"], direct["ls"], rel_tol=1e-9)
        assert math.isclose(rand["score"], direct["random"], rel_tol=1e-9)
        print(f"trained {trained['score']:.3f} vs random {rand['score']:.3f}; wins/losses/draws "
              f"{trained['wins']}/{trained['losses']}/{trained['draws']}")
        assert trained["score"] > rand["score"] + 0.2
        assert trained["wins"] > trained["losses"] and trained["num_episodes"] == 8
        assert (trained["wins"], trained["losses"]) == (rand["losses"], rand["wins"])
        cp = build_crossplay(db)
    assert cp.policies == ["ls:v1", "random:v0"]
    assert cp.ratings[0].policy == "ls:v1" and cp.ratings[0].rating > cp.ratings[1].rating
    assert cp.ratings[0].matches == cp.ratings[1].matches == 8
    assert math.isnan(cp.values[0][0]) and cp.values[0][1] > cp.values[1][0]

    # `analyze` prints the pairwise table and the ratings, and puts them on the HTML page.
    card, paths = analyze([str(db_path)], out_dir=str(tmp_path / "card"), print_table=True)
    printed = capsys.readouterr().out
    assert "cross-play" in printed and "rating" in printed
    page = Path(paths["html"]).read_text()
    assert "Cross-play" in page and "Ratings" in page and "ls:v1" in page
    assert paths["png"] is None  # no solo evaluation: no heatmap


def main_code(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_assign_agents_rotates_seats_and_checks_input():
    seats = assign_agents(4, 4, [0.5, 0.5])
    assert seats.shape == (4, 4) and all((row == 0).sum() == 2 for row in seats)
    assert (seats == 0).sum(0).tolist() == [2, 2, 2, 2]  # over the games every seat is each policy's twice
    assert (assign_agents(24, 2, [0.25, 0.75]) == 0).sum(1).tolist() == [6, 6]
    assert (assign_agents(3, 1, [0.1, 0.9]) == 0).sum() == 1  # at least one agent each
    assert assign_agents(4, 2, team=[1, 3]).tolist() == [[1, 0, 1, 0], [1, 0, 1, 0]]
    with pytest.raises(SimulationError, match="sum to 1"):
        assign_agents(4, 1, [0.5, 0.4])
    with pytest.raises(SimulationError, match="cannot share a game of 1"):
        assign_agents(1, 1, [0.5, 0.5])
    with pytest.raises(SimulationError, match="team \\[0, 7\\]"):
        assign_agents(4, 1, team=[0, 7])


def test_npc_cross_play_records_both_policies(tmp_path):
    db_path = str(tmp_path / "npc.duckdb")
    matches = cross_play(["random", "noop"], duel_suite(episodes=4), db_path, replay_dir=str(tmp_path / "replays"))
    assert [m.policies for m in matches] == [["random:v0", "noop:v0"]]
    assert matches[0].mean_rewards()[1] == 0.0  # noop never mines
    replays = list((tmp_path / "replays" / "crossplay" / "random_v0_vs_noop_v0").rglob("*.json.z"))
    assert len(replays) == 1
    with StatsDB(db_path, read_only=True) as db:
        counts = db.query("SELECT policy_key, COUNT(*) AS n FROM agent_policies GROUP BY 1 ORDER BY 1")
        assert counts == [{"policy_key": "noop", "n": 4}, {"policy_key": "random", "n": 4}]
        sims = db.query("SELECT policy_key, name FROM simulations")
        assert sims == [{"policy_key": "random", "name": "duel/room"}]  # one row per match, under the first
        attrs = db.query("SELECT DISTINCT value FROM episode_attributes WHERE attribute = 'crossplay.policies'")
        assert attrs == [{"value": '["random:v0", "noop:v0"]'}]
        cp = build_crossplay(db)
    # The match's replay belongs to the pair (both ways), not to a solo scorecard cell.
    assert cp.replays[("random:v0", "noop:v0")] == cp.replays[("noop:v0", "random:v0")] == [str(replays[0])]


def test_cross_play_bad_input(tmp_path, capsys):
    with pytest.raises(SimulationError, match="at least two policies"):
        cross_play(["random"], duel_suite(), str(tmp_path / "a.duckdb"))
    with pytest.raises(SimulationError, match="random:v0 given twice"):
        cross_play(["random", "random"], duel_suite(), str(tmp_path / "a.duckdb"))
    assert run_cli(["evaluate", "random", "noop", "--cross-play", "--share", "1.5", "--db",
                    str(tmp_path / "a.duckdb")]) == 2
    assert "--share 1.5" in capsys.readouterr().err
    # A policy trained on other actions cannot join a game: the error names both action lists.
    code = main_code(["evaluate", "random", "noop", "--cross-play", "--suite", "smoke/basic", "--team", "0,9",
                      "--db", str(tmp_path / "b.duckdb"), "--replay-episodes", "0", "--no-scorecard"])
    assert code == 2 and "team [0, 9]" in capsys.readouterr().err


def test_evaluate_callback_opponent_pool(tmp_path):
    """A smoke fit of 2 epochs whose EvaluateCallback also plays the random NPC and the run's previous
    checkpoint: the database has those matches and `eval/smoke/vs/<opponent>` is logged."""
    from callbacks.evaluate import EvaluateCallback

    cfg = {"trainer": {"max_epochs": 2, "default_root_dir": str(tmp_path / "pool"), "callbacks": [
        {"class_path": "callbacks.checkpoint.PolicyCheckpoint", "init_args": {"epoch_interval": 1}},
        {"class_path": "callbacks.evaluate.EvaluateCallback",
         "init_args": {"suite": "smoke/basic", "epoch_interval": 1, "replay_episodes": 0,
                       "opponents": ["random"], "past_checkpoints": 1}}]},
        "data": {"rollouts_per_epoch": 1}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    cli = main(["fit", "--config", str(ROOT / "configs" / "smoke.yaml"), "--config", str(tmp_path / "cfg.yaml"),
                "--trainer.logger.init_args.save_dir", str(tmp_path / "logs")])
    cb = next(c for c in cli.trainer.callbacks if isinstance(c, EvaluateCallback))
    assert {"eval/smoke/vs/random:v0", "eval/smoke/vs/pool:v1"} <= set(cb.last_metrics)
    with StatsDB(tmp_path / "pool" / "eval.duckdb", read_only=True) as db:
        pairs = {(r["policy_key"], r["policy_version"], r["opponent_key"], r["opponent_version"])
                 for r in db.crossplay_scores()}
        solo = {(r["policy_key"], r["policy_version"]) for r in db.simulation_scores()}
    assert ("pool", 1, "random", 0) in pairs and ("pool", 2, "random", 0) in pairs
    assert ("pool", 2, "pool", 1) in pairs and ("pool", 1, "pool", 0) not in pairs  # v1 had no earlier one
    assert solo == {("pool", 1), ("pool", 2)}
    assert np.isfinite(cb.last_metrics["eval/smoke/vs/pool:v1"])
