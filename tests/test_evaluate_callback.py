"""Evaluation end to end: a short `fit` with checkpoints and the EvaluateCallback, then the `evaluate`,
`analyze` and `replay` subcommands on its checkpoints (database, printed table, scorecard, replays)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from callbacks.evaluate import EvaluateCallback
from metta_lightning.cli import main
from metta_lightning.simulation import SimulationError
from metta_lightning.stats_db import StatsDB

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def fit_with_eval(tmp_path: Path, run: str = "evalrun", max_epochs: int = 2, ckpt_interval: int = 1,
                  eval_interval: int = 1):
    cfg = {"trainer": {"max_epochs": max_epochs, "default_root_dir": str(tmp_path / run), "callbacks": [
        {"class_path": "callbacks.checkpoint.PolicyCheckpoint", "init_args": {"epoch_interval": ckpt_interval}},
        {"class_path": "callbacks.evaluate.EvaluateCallback",
         "init_args": {"suite": "smoke", "epoch_interval": eval_interval, "replay_episodes": 1}},
        {"class_path": "callbacks.upload.UploadCallback", "init_args": {"remote_prefix": str(tmp_path / "bucket")}}]},
        "data": {"rollouts_per_epoch": 1}}
    path = tmp_path / "eval_cfg.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return main(["fit", "--config", SMOKE, "--config", str(path),
                 "--trainer.logger.init_args.save_dir", str(tmp_path / "logs")])


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code


def test_fit_evaluates_then_cli_evaluate_analyze(tmp_path, capsys):
    cli = fit_with_eval(tmp_path)
    run_dir = tmp_path / "evalrun"
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("*.mpt"))
    assert ckpts == ["evalrun:v1.mpt", "evalrun:v2.mpt"]

    # The callback appended each epoch's evaluation to the run's database, named after the checkpoints.
    db_path = run_dir / "eval.duckdb"
    with StatsDB(db_path, read_only=True) as db:
        rows = db.simulation_scores()
        assert {(r["policy_key"], r["policy_version"], r["simulation"]) for r in rows} == {
            ("evalrun", v, s) for v in (1, 2) for s in ("smoke/basic", "smoke/combat")}
        assert all(r["num_episodes"] == 2 for r in rows)
        replays = db.replay_urls("evalrun")
    assert len(replays) == 4 and all(Path(u).exists() for u in replays)
    assert all(str(run_dir / "replays") in u for u in replays)  # next to the checkpoints

    # Checkpoints, the database and the replays were all uploaded, side by side under the prefix.
    bucket = tmp_path / "bucket"
    uploaded = sorted(str(p.relative_to(bucket)) for p in bucket.rglob("*") if p.is_file())
    assert "eval.duckdb" in uploaded and "checkpoints/evalrun:v2.mpt" in uploaded, uploaded
    assert len([u for u in uploaded if u.startswith("replays/") and u.endswith(".json.z")]) == 4, uploaded

    # ... and logged eval/<suite>/score and eval/<suite>/<sim>.
    cb = next(c for c in cli.trainer.callbacks if isinstance(c, EvaluateCallback))
    assert set(cb.last_metrics) >= {"eval/smoke/score", "eval/smoke/basic", "eval/smoke/combat"}
    metrics_csv = next((tmp_path / "logs").rglob("metrics.csv"))
    with open(metrics_csv) as f:
        logged = [r for r in csv.DictReader(f) if r.get("eval/smoke/score")]
    assert len(logged) == 2 and all(math.isfinite(float(r["eval/smoke/basic"])) for r in logged)

    # `evaluate` on the checkpoints from that fit: database, printed table, scorecard.
    capsys.readouterr()
    out_db = tmp_path / "cli" / "eval.duckdb"
    latest = f"{run_dir / 'checkpoints'}/:latest"
    assert run_cli(["evaluate", str(run_dir / "checkpoints" / "evalrun:v1.mpt"), latest, "--suite", "smoke",
                    "--db", str(out_db)]) == 0
    out = capsys.readouterr().out
    print(out)
    assert "smoke/basic" in out and "smoke/combat" in out and "evalrun:v1" in out and "evalrun:v2" in out
    assert out_db.exists()
    assert (out_db.parent / "scorecard.png").stat().st_size > 5000
    html = (out_db.parent / "scorecard.html").read_text()
    assert "evalrun:v2" in html and "data:image/png;base64," in html
    assert list((out_db.parent / "replays" / "evalrun").rglob("*.json.z"))

    # `analyze` merges the run's database and the CLI's into one scorecard.
    assert run_cli(["analyze", str(db_path), str(out_db), "--out", str(tmp_path / "card"),
                    "--metric", "action.move_north.success"]) == 0
    out = capsys.readouterr().out
    print(out)
    assert "policy (action.move_north.success)" in out and "smoke (score)" in out
    assert (tmp_path / "card" / "scorecard_action_move_north_success.png").exists()
    with StatsDB(db_path, read_only=True) as a, StatsDB(out_db, read_only=True) as b:
        assert a.counts()["episodes"] == b.counts()["episodes"] == 8

    # Bad input gets a clear error and exit code 2.
    assert run_cli(["evaluate", str(run_dir / "checkpoints" / "nope:v9.mpt"), "--suite", "smoke",
                    "--db", str(tmp_path / "x.duckdb")]) == 2
    assert "not found" in capsys.readouterr().err
    assert run_cli(["evaluate", latest, "--suite", "arena/nope", "--db", str(tmp_path / "x.duckdb")]) == 2
    assert "unknown simulation 'arena/nope'" in capsys.readouterr().err
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"junk" * 1000)
    assert run_cli(["analyze", str(junk)]) == 2
    assert "cannot open as a DuckDB stats database" in capsys.readouterr().err

    # `replay` serves the viewer on 127.0.0.1 for the replays the callback kept.
    proc = subprocess.Popen([sys.executable, "-m", "metta_lightning", "replay", str(run_dir / "replays" / "evalrun" /
                             "v2" / "smoke" / "combat"), "--no-browser"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("Replay viewer: http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")
        url = line.split()[2]
        listing = json.loads(urllib.request.urlopen(url + "api/replays", timeout=10).read())
        assert listing and listing[0]["name"].endswith(".json.z")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_callback_arguments_are_checked(tmp_path):
    with pytest.raises(SimulationError, match="unknown suite"):
        EvaluateCallback(suite="nope")
    with pytest.raises(ValueError, match="epoch_interval"):
        EvaluateCallback(suite="smoke", epoch_interval=0)
    with pytest.raises(ValueError, match="must be a multiple of PolicyCheckpoint"):
        fit_with_eval(tmp_path, max_epochs=1, ckpt_interval=2, eval_interval=3)


def test_replay_command_rejects_a_corrupt_replay(tmp_path, capsys):
    bad = tmp_path / "bad.json.z"
    bad.write_bytes(b"\x78\x9cnot zlib at all")
    assert run_cli(["replay", str(bad), "--no-browser"]) == 2
    assert "cannot decompress" in capsys.readouterr().err


def test_fit_ends_evaluated_whatever_the_interval(tmp_path):
    """A run shorter than the evaluation interval (a slow machine) still gets an evaluation and a replay
    of its last checkpoint; a run whose last epoch was just evaluated is not evaluated twice."""
    fit_with_eval(tmp_path, run="short", max_epochs=3, eval_interval=2)
    with StatsDB(tmp_path / "short" / "eval.duckdb", read_only=True) as db:
        versions = sorted({r["policy_version"] for r in db.simulation_scores()})
        replays = db.replay_urls("short")
    assert versions == [2, 3]  # the interval's, then the end's
    assert any("/v3/" in u for u in replays) and all(Path(u).exists() for u in replays)
    fit_with_eval(tmp_path / "b", run="even", max_epochs=2, eval_interval=2)
    with StatsDB(tmp_path / "b" / "even" / "eval.duckdb", read_only=True) as db:
        rows = db.simulation_scores()
    assert sorted({r["policy_version"] for r in rows}) == [2] and all(r["num_episodes"] == 2 for r in rows)
