"""Logging: W&B offline run readable from its files, expected keys, run id kept across a resume; CSV + curves."""

import glob
import os
import re
import time

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from metta_lightning import curves
from callbacks.logger_run_id import LoggerRunId
from lightning.pytorch.loggers import CSVLogger
from metta_lightning.loggers import WandbLogger, resolve_wandb_mode


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


def _wait_flushed(path, timeout=20.0):
    """wandb-core may still be writing the transaction log when finish() returns: wait for its exit record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = curves.find_wandb_files(str(path))
        if files and all(any(r.WhichOneof("record_type") == "exit" for r in curves.read_wandb_records(f))
                         for f in files):
            return files
        time.sleep(0.1)
    raise AssertionError(f"W&B run under {path} not flushed after {timeout}s")


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


def test_wandb_offline_run_and_resume_keep_run_id(tmp_path):
    save_dir, ckpt_dir = tmp_path / "logs", tmp_path / "ckpt"
    logger = WandbLogger(project="test", save_dir=str(save_dir))
    assert logger.mode == "offline"
    _trainer(tmp_path, logger, 2, ckpt_dir).fit(TinyRL())
    run_id = logger.experiment.id
    logger.experiment.finish()

    # The offline run directory exists and its transaction log is readable; the expected keys are there.
    files = _wait_flushed(save_dir)
    assert len(files) == 1 and "offline-run-" in files[0] and files[0].endswith(f"run-{run_id}.wandb")
    run = curves.read_wandb_run(files[0])
    assert run["run_id"] == run_id and run["project"] == "test"
    keys = set().union(*run["history"])
    for key in ("overview/sps", "overview/reward", "env_agent/heart.gained", "losses/policy_loss",
                "trainer/global_step"):
        assert key in keys, key
    assert [r["overview/agent_steps"] for r in run["history"] if "overview/agent_steps" in r][-1] == 6 * 64

    # The checkpoint holds the run id ...
    last = str(ckpt_dir / "last.ckpt")
    assert run_id_from_checkpoint(last) == run_id

    # ... and a resumed fit with a fresh logger continues the same W&B run.
    logger2 = WandbLogger(project="test", save_dir=str(save_dir))
    model2 = TinyRL()
    _trainer(tmp_path, logger2, 4, ckpt_dir).fit(model2, ckpt_path=last)
    assert logger2.experiment.id == run_id
    logger2.experiment.finish()
    _wait_flushed(save_dir)
    assert model2.agent_steps == 12 * 64
    run_dirs = sorted(glob.glob(str(save_dir / "wandb" / "offline-run-*")))
    # no leftover run with another id (W&B adds "-1" to a segment's folder that starts within the same second)
    assert all(re.search(rf"-{run_id}(-\d+)?$", d) for d in run_dirs), run_dirs
    pieces = curves.find_wandb_files(str(save_dir))
    assert len(pieces) == 2
    # `curves train_dir/wandb/latest-run` (the newest segment's dir) draws the whole run too, by default
    latest = save_dir / "wandb" / "latest-run"
    assert curves.find_wandb_files(str(latest)) == pieces
    assert curves.find_wandb_files(str(pieces[1])) == pieces
    assert curves.find_wandb_files(str(latest), all_segments=False) == [str(latest / os.path.basename(pieces[1]))]
    whole, _ = curves.load_history(str(latest), ["overview/reward"])
    assert [x for x, _ in whole["overview/reward"]] == [64.0 * i for i in range(1, 13)]
    hist, x_key = curves.load_history(str(save_dir), ["overview/reward"])
    assert x_key == "overview/agent_steps"
    assert [x for x, _ in hist["overview/reward"]] == [64.0 * i for i in range(1, 13)]
    assert run_id_from_checkpoint(str(ckpt_dir / "last.ckpt")) == run_id


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


def test_curves_from_wandb_offline_run(tmp_path):
    run = wandb.init(project="p", dir=str(tmp_path), mode="offline")
    for i in range(5):
        run.log({"overview/reward": float(i), "overview/agent_steps": 100.0 * (i + 1)})
    run.finish()
    _wait_flushed(tmp_path)
    out = curves.plot_learning_curve(str(tmp_path), str(tmp_path / "c.png"), ["overview/reward", "missing/key"])
    assert os.path.getsize(out) > 1000
    hist, _ = curves.load_history(str(tmp_path), ["overview/reward"])
    assert hist["overview/reward"] == [(100.0 * (i + 1), float(i)) for i in range(5)]
    with pytest.raises(ValueError):
        curves.plot_learning_curve(str(tmp_path), str(tmp_path / "d.png"), ["missing/key"])


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
