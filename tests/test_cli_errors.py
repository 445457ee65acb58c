"""The command line itself: bad input found before training is one line naming it, exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args,message", [
    (["fit", "--config", "configs/smoke.yaml", "--data.horizon", "0"], "error: data.horizon must be >= 1, got 0"),
    (["fit", "--config", "configs/smoke.yaml", "--model.minibatch_size", "96"],
     "error: inconsistent PPO sizes: minibatch_size=96 does not divide the batch (8 rows x horizon 16"),
    (["evaluate", "no_such_run:v3", "--suite", "smoke"], "error: no_such_run:v3: checkpoint not found"),
    (["replay", "x.json.z", "--port", "abc"], "error: --port abc: expected an integer"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    env = {"METTA_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-m", "metta_lightning", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr


def test_run_name_and_refusal_to_overwrite(tmp_path, monkeypatch):
    import yaml

    from metta_lightning.cli import main

    monkeypatch.setenv("METTA_DATA_DIR", str(tmp_path / "data"))
    cfg = tmp_path / "ckpt.yaml"
    cfg.write_text(yaml.safe_dump({"trainer": {"callbacks": [{"class_path": "callbacks.PolicyCheckpoint"}]}}))
    args = ["fit", "--config", str(ROOT / "configs" / "smoke.yaml"), "--config", str(cfg),
            "--trainer.logger.init_args.save_dir", str(tmp_path / "logs")]
    main([*args, "--run", "first"])
    assert sorted(p.name for p in (tmp_path / "data" / "first" / "checkpoints").iterdir()) == [
        "first:v1.ckpt", "first:v1.mpt"]
    with pytest.raises(SystemExit, match=r"run 'first' already has checkpoints .* \(newest: first:v1.ckpt\)\. "
                                         r"Resume it with `--ckpt_path last`"):
        main([*args, "--run", "first"])
    with pytest.raises(Exception, match="run name"):
        main([*args, "--run", "bad/name"])
    main([*args, "--run", "first", "--trainer.max_epochs", "2", "--ckpt_path", "last"])
    assert (tmp_path / "data" / "first" / "checkpoints" / "first:v2.mpt").exists()


def _run_cli(tmp_path, *args):
    env = {"METTA_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", "metta_lightning", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kind,message", [
    ("truncated", "training state is truncated or corrupted"),
    ("artifact", "is a policy artifact (.mpt); resuming needs the training state beside it"),
    ("text", "training state is truncated or corrupted, or not a training state at all"),
])
def test_bad_ckpt_path_file_is_one_line(tmp_path, kind, message):
    """Lightning reads a --ckpt_path file before `before_fit`: a damaged or foreign one is still one line."""
    import torch

    from metta_lightning.checkpoint import save_policy
    from test_checkpoint import env_info, make_policy

    path = tmp_path / {"truncated": "r:v1.ckpt", "artifact": "r:v1.mpt", "text": "notes.ckpt"}[kind]
    if kind == "truncated":
        torch.save({"state_dict": {"w": torch.randn(4096)}}, path)
        path.write_bytes(path.read_bytes()[:5000])
    elif kind == "artifact":
        save_policy(make_policy(), env_info(), str(path))
    else:
        path.write_text("hello\n")
    proc = _run_cli(tmp_path, "fit", "--config", "configs/smoke.yaml", "--ckpt_path", str(path))
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {path}: ") and message in last, last
    assert "Traceback" not in proc.stderr


def test_bad_max_time_and_top_level_help(tmp_path):
    proc = _run_cli(tmp_path, "fit", "--config", "configs/smoke.yaml", "--trainer.max_time", "garbage")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: trainer.max_time: expected DD:HH:MM:SS (e.g. 00:00:30:00 for 30 minutes), got 'garbage'")
    helped = _run_cli(tmp_path, "--help")
    assert helped.returncode == 0
    for command in ("fit", "evaluate", "analyze", "replay", "curves"):
        assert f"\n    {command} " in helped.stdout or f"\n  {command} " in helped.stdout, command


def test_a_game_written_in_yaml_trains_and_a_bad_one_is_one_line(tmp_path):
    """configs/custom_game.yaml gives data.game as a whole game (no preset): it trains and checkpoints; the same
    game with an unknown map character fails before training, naming the field."""
    import yaml

    proc = _run_cli(tmp_path, "fit", "--config", "configs/custom_game.yaml", "--trainer.max_epochs", "1",
                    "--data.rollouts_per_epoch", "1", "--trainer.logger", "false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "custom_game" / "checkpoints" / "custom_game:v1.mpt").exists()
    bad = yaml.safe_load((ROOT / "configs" / "custom_game.yaml").read_text())
    bad["data"]["game"]["map_builder"]["lines"][1] = "#m..@.Q.#"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    proc = _run_cli(tmp_path, "fit", "--config", str(tmp_path / "bad.yaml"), "--run", "bad")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: data.game: map_builder.lines: unknown map character 'Q' at row 1, column 6")
