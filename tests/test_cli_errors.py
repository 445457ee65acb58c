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
