"""Learning-rate schedules: a function of the agent-step counter (so a resumed run continues them)."""

import csv
import math
from pathlib import Path

import pytest

from metta_lightning.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
SMOKE = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")
LR = 0.00115


def logged_lrs(save_dir: Path) -> list[tuple[float, float]]:
    with open(next(save_dir.rglob("metrics.csv"))) as f:
        rows = [r for r in csv.DictReader(f) if r.get("overview/learning_rate")]
    return [(float(r["overview/agent_steps"]), float(r["overview/learning_rate"])) for r in rows]


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedule_over_the_run_length(tmp_path, schedule):
    # smoke: 1 epoch x 3 rollouts x 128 agent-steps = a 384-step run; the rate is set before each rollout.
    cli = main(["fit", "--config", SMOKE, "--trainer.logger.init_args.save_dir", str(tmp_path),
                "--model.lr_schedule", schedule, "--model.lr_min", "0.0001"])
    lrs = logged_lrs(tmp_path)
    assert [s for s, _ in lrs] == [128.0, 256.0, 384.0]
    for (steps, lr), start in zip(lrs, (0, 128, 256)):
        frac = start / 384
        shape = 1 - frac if schedule == "linear" else 0.5 * (1 + math.cos(math.pi * frac))
        assert lr == pytest.approx(0.0001 + (LR - 0.0001) * shape)
    assert cli.model.optimizers().param_groups[0]["lr"] == pytest.approx(lrs[-1][1])


def test_explicit_span_and_constant_default(tmp_path):
    main(["fit", "--config", SMOKE, "--trainer.logger.init_args.save_dir", str(tmp_path / "a"),
          "--model.lr_schedule", "linear", "--model.lr_schedule_agent_steps", "256"])
    assert [lr for _, lr in logged_lrs(tmp_path / "a")] == pytest.approx([LR, LR / 2, 0.0])
    main(["fit", "--config", SMOKE, "--trainer.logger.init_args.save_dir", str(tmp_path / "b")])
    assert [lr for _, lr in logged_lrs(tmp_path / "b")] == pytest.approx([LR] * 3)


def test_unknown_schedule_names_the_key(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", SMOKE, "--model.lr_schedule", "exponential"])
    assert "lr_schedule" in capsys.readouterr().err


def test_resumed_run_continues_the_schedule(tmp_path):
    import yaml

    cfg = tmp_path / "ckpt.yaml"
    cfg.write_text(yaml.safe_dump({"trainer": {"callbacks": [{
        "class_path": "callbacks.PolicyCheckpoint"}], "default_root_dir": str(tmp_path / "lrs")}}))
    args = ["fit", "--config", SMOKE, "--config", str(cfg), "--model.lr_schedule", "linear",
            "--model.lr_schedule_agent_steps", "768"]
    main([*args, "--trainer.logger.init_args.save_dir", str(tmp_path / "a"), "--trainer.max_epochs", "1"])
    main([*args, "--trainer.logger.init_args.save_dir", str(tmp_path / "b"), "--trainer.max_epochs", "2",
          "--ckpt_path", "last"])
    lrs = [lr for _, lr in logged_lrs(tmp_path / "a") + logged_lrs(tmp_path / "b")]
    assert lrs == pytest.approx([LR * (1 - k * 128 / 768) for k in range(6)])
