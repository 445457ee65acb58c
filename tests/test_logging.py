"""Logging: a W&B offline run with its CSV log beside it, expected keys, run id and one CSV history kept across
a resume (also after a kill mid-write); curves from the CSV, a W&B path followed to it."""

import csv
import glob
import os
import re

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from metta_lightning import curves
from callbacks.logger_run_id import LoggerRunId
from lightning.pytorch.loggers import CSVLogger
from metta_lightning.loggers import (EXIT_CODE_KEY, CSVLogger as ContinuingCSVLogger, WandbLogger,
                                     resolve_wandb_mode, with_csv_beside_wandb)


def run_id_from_checkpoint(path: str) -> str | None:
    """The W&B run id LoggerRunId stored in a checkpoint."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    entries = state["callbacks"]["LoggerRunId"]["loggers"]
    return next((e["id"] for e in entries if e["type"] == "WandbLogger"), None)

wandb = pytest.importorskip("wandb")


class TinyRL(L.LightningModule):
    """Manual optimization, an agent-step counter and the overview/env_agent/losses metric names."""

    def __init__(self, frames: int = 64):
        super().__init__()
        self.automatic_optimization = False
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        self.frames = frames
        self.agent_steps = 0

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(24, 4)), batch_size=8)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        opt = self.optimizers()
        loss = self.net(x).pow(2).mean()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        self.agent_steps += self.frames
        self.log_dict({"overview/sps": 1000.0, "overview/reward": 0.1 * self.global_step,
                       "overview/agent_steps": float(self.agent_steps),
                       "env_agent/heart.gained": 0.5, "losses/policy_loss": loss.detach()}, on_step=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["agent_steps"] = self.agent_steps

    def on_load_checkpoint(self, checkpoint):
        self.agent_steps = checkpoint["agent_steps"]


def _trainer(tmp_path, logger, max_epochs, ckpt_dir):
    return L.Trainer(max_epochs=max_epochs, logger=logger, accelerator="cpu", devices=1, log_every_n_steps=1,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                     callbacks=[LoggerRunId(), L.pytorch.callbacks.ModelCheckpoint(dirpath=str(ckpt_dir),
                                                                                   save_last=True)])


@pytest.fixture(autouse=True)
def _no_wandb_env(monkeypatch):
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("WANDB_SILENT", raising=False)  # with it, finish() returns before the log is flushed
    yield
    if wandb.run is not None:
        wandb.finish()


def test_wandb_mode_resolution(monkeypatch):
    assert resolve_wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode() == "disabled"
    assert resolve_wandb_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_wandb_mode() == "offline"


def test_empty_wandb_mode_means_unset(tmp_path, monkeypatch):
    """`WANDB_MODE=` in the environment: offline as if unset, instead of wandb's settings validation error."""
    monkeypatch.setenv("WANDB_MODE", "")
    logger = WandbLogger(project="test", save_dir=str(tmp_path))
    assert logger.mode == "offline"
    assert logger.experiment.settings.mode == "offline"
    logger.experiment.finish()


def test_wandb_offline_run_and_resume_keep_run_id_and_csv_history(tmp_path):
    save_dir, ckpt_dir, run_folder = tmp_path / "logs", tmp_path / "ckpt", tmp_path / "logs" / "run"
    logger = WandbLogger(project="test", save_dir=str(save_dir))
    assert logger.mode == "offline"
    loggers = with_csv_beside_wandb(logger, str(run_folder))  # as the CLI composes them
    assert loggers[0] is logger and isinstance(loggers[1], ContinuingCSVLogger)
    _trainer(tmp_path, loggers, 2, ckpt_dir).fit(TinyRL())
    run_id = logger.experiment.id
    logger.experiment.finish()

    # The offline run directory exists; the CSV beside it has the expected keys and names the W&B run.
    run_dirs = glob.glob(str(save_dir / "wandb" / "offline-run-*"))
    assert len(run_dirs) == 1 and re.search(rf"-{run_id}$", run_dirs[0]), run_dirs
    metrics_csv = run_folder / "metrics.csv"
    rows = curves.read_csv_rows(str(metrics_csv))
    keys = set().union(*rows)
    for key in ("overview/sps", "overview/reward", "env_agent/heart.gained", "losses/policy_loss", "step"):
        assert key in keys, key
    assert [r["overview/agent_steps"] for r in rows if "overview/agent_steps" in r][-1] == 6 * 64
    assert rows[-1] == {"step": rows[-2]["step"], EXIT_CODE_KEY: 0.0}  # fit ended normally
    assert f"wandb_run_id: {run_id}" in (run_folder / "hparams.yaml").read_text()

    # The checkpoint holds the run id ...
    last = str(ckpt_dir / "last.ckpt")
    assert run_id_from_checkpoint(last) == run_id

    # ... and a resumed fit with fresh loggers continues the same W&B run and the same CSV history.
    logger2 = WandbLogger(project="test", save_dir=str(save_dir))
    model2 = TinyRL()
    _trainer(tmp_path, with_csv_beside_wandb(logger2, str(run_folder)), 4, ckpt_dir).fit(model2, ckpt_path=last)
    assert logger2.experiment.id == run_id
    logger2.experiment.finish()
    assert model2.agent_steps == 12 * 64
    run_dirs = sorted(glob.glob(str(save_dir / "wandb" / "offline-run-*")))
    # no leftover run with another id (W&B adds "-1" to a segment's folder that starts within the same second)
    assert len(run_dirs) == 2 and all(re.search(rf"-{run_id}(-\d+)?$", d) for d in run_dirs), run_dirs
    text = metrics_csv.read_text()
    assert text.count("overview/reward") == 1  # one header
    assert sorted(os.listdir(run_folder)) == ["hparams.yaml", "metrics.csv"]
    # `curves` on the run folder, the CSV, or W&B's latest-run / run folder / save dir: the whole run
    latest = save_dir / "wandb" / "latest-run"
    for path in (run_folder, metrics_csv, latest, run_dirs[0], save_dir):
        hist, x_key = curves.load_history(str(path), ["overview/reward"])
        assert x_key == "overview/agent_steps"
        assert [x for x, _ in hist["overview/reward"]] == [64.0 * i for i in range(1, 13)], path
    assert run_id_from_checkpoint(str(ckpt_dir / "last.ckpt")) == run_id


def test_csv_log_continues_after_a_kill_mid_write(tmp_path):
    """A resumed run appends to the same metrics.csv: earlier rows kept, a line cut short by a kill dropped,
    one header, new columns added to it."""
    logger = ContinuingCSVLogger(str(tmp_path))
    logger.log_metrics({"a": 1.0}, step=0)
    logger.log_metrics({"a": 2.0}, step=1)
    logger.save()
    path = tmp_path / "metrics.csv"
    with open(path, "a") as f:
        f.write("3.0,")  # the process was killed here
    resumed = ContinuingCSVLogger(str(tmp_path))
    resumed.log_metrics({"a": 3.0}, step=2)
    resumed.save()
    resumed.log_metrics({"a": 4.0, "b": 5.0}, step=3)
    resumed.finalize("failed")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert path.read_text().splitlines()[0] == f"{EXIT_CODE_KEY},a,b,step"
    assert [(r["step"], r["a"], r["b"], r[EXIT_CODE_KEY]) for r in rows] == [
        ("0", "1.0", "", ""), ("1", "2.0", "", ""), ("2", "3.0", "", ""), ("3", "4.0", "5.0", ""), ("3", "", "", "1")]
    # a segment that logs nothing (resumed with no time left) ends at the history's last step
    idle = ContinuingCSVLogger(str(tmp_path))
    idle.log_hyperparams({"lr": 0.1})
    idle.finalize("success")
    assert curves.read_csv_rows(str(path))[-1] == {"step": 3.0, EXIT_CODE_KEY: 0.0}


def test_steps_a_resumed_run_logs_again_are_taken_from_it(tmp_path):
    """A run killed after its checkpoint at step 1 had logged steps 2-3; resumed from step 1, it logs 2-3
    again with other values: the history keeps the resumed values, once, in order."""
    logger = ContinuingCSVLogger(str(tmp_path))
    for step, a in ((0, 1.0), (1, 2.0), (2, 30.0), (3, 40.0)):
        logger.log_metrics({"a": a}, step=step)
    logger.save()
    resumed = ContinuingCSVLogger(str(tmp_path))
    for step, a in ((2, 3.0), (2, 3.5), (3, 4.0), (4, 5.0)):  # two rows of one step (a callback's) stay
        resumed.log_metrics({"a": a}, step=step)
    resumed.finalize("success")
    rows, _ = curves.load_rows(str(tmp_path))
    assert [(r["step"], r.get("a")) for r in rows] == [(0, 1.0), (1, 2.0), (2, 3.0), (2, 3.5), (3, 4.0), (4, 5.0),
                                                       (4, None)]
    hist, _ = curves.history_from_rows(rows, ["a"], "step")
    assert [x for x, _ in hist["a"]] == sorted(x for x, _ in hist["a"])


def test_csv_logger_from_factory_and_curves_png(tmp_path):
    logger = CSVLogger(save_dir=str(tmp_path), name="run")
    _trainer(tmp_path, logger, 2, tmp_path / "ckpt").fit(TinyRL())
    csv_path = os.path.join(logger.log_dir, "metrics.csv")
    assert os.path.isfile(csv_path)
    hist, x_key = curves.load_history(logger.log_dir, ["overview/reward", "losses/policy_loss"])
    assert x_key == "overview/agent_steps" and len(hist["overview/reward"]) == 6
    png = tmp_path / "curve.png"
    assert curves.main([logger.log_dir, "-o", str(png), "-m", "overview/reward", "-m", "losses/policy_loss"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = curves.plot_learning_curve(logger.log_dir, str(tmp_path / "c.png"), ["overview/reward", "missing/key"])
    assert os.path.getsize(out) > 1000
    with pytest.raises(ValueError):
        curves.plot_learning_curve(logger.log_dir, str(tmp_path / "d.png"), ["missing/key"])


def test_curves_of_a_path_without_csv_says_what_it_expected(tmp_path):
    """A folder with no metrics.csv, and a W&B run with no CSV log beside it: one error naming the path."""
    expected = re.escape(str(tmp_path)) + ".*expected a run folder holding metrics.csv"
    with pytest.raises(FileNotFoundError, match=expected):
        curves.load_history(str(tmp_path))
    run = wandb.init(project="p", dir=str(tmp_path), mode="offline")
    run.log({"overview/reward": 1.0})
    run.finish()
    latest = tmp_path / "wandb" / "latest-run"
    with pytest.raises(FileNotFoundError, match=f"{re.escape(str(latest))}: W&B run {run.id} has no metrics.csv"):
        curves.load_history(str(latest))


def test_wandb_closing_lines_have_no_colour_codes_in_a_log_file(tmp_path):
    """`fit ... > log 2>&1`: W&B's closing lines (`wandb sync ...`) are plain text, not ANSI-coloured."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "WANDB_MODE": "offline", "METTA_DATA_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "metta_lightning", "fit", "--config", "configs/smoke.yaml",
                           "--trainer.logger", "metta_lightning.loggers.WandbLogger",
                           "--trainer.logger.save_dir", str(tmp_path)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "wandb: wandb sync " in out and "\x1b[" not in out
    # The CLI wrote the CSV log beside W&B, in the run folder (named after the W&B project, "metta").
    rows = curves.read_csv_rows(str(tmp_path / "metta" / "metrics.csv"))
    assert any("overview/sps" in r for r in rows) and rows[-1][EXIT_CODE_KEY] == 0
