"""TorchProfiler: Chrome traces (valid JSON with events) every epoch_interval epochs, in the run's checkpoint folder."""

import json
import os

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks.checkpoint import PolicyCheckpoint
from callbacks.profiler import TorchProfiler
from callbacks.upload import UploadCallback


class TinyRL(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(24, 4)), batch_size=8)  # 3 batches per epoch

    def training_step(self, batch, batch_idx):
        (x,) = batch
        opt = self.optimizers()
        with torch.profiler.record_function("ppo_update"):
            loss = self.net(x).pow(2).mean()
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(tmp_path, prof, epochs, ckpt_path=None):
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    trainer = L.Trainer(max_epochs=epochs, logger=False, callbacks=[prof, ckpt], accelerator="cpu",
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(TinyRL(), ckpt_path=ckpt_path)
    return trainer


def test_trace_every_interval_in_the_run_folder(tmp_path):
    prof = TorchProfiler(epoch_interval=2, num_steps=2)
    _fit(tmp_path, prof, epochs=4)
    trace_dir = tmp_path / "traces"  # the run folder is the Trainer's default_root_dir
    assert sorted(os.listdir(trace_dir)) == ["trace_epoch000001_rank0.json", "trace_epoch000003_rank0.json"]
    assert prof.trace_paths == [str(trace_dir / n) for n in sorted(os.listdir(trace_dir))]
    with open(prof.trace_paths[0]) as f:
        trace = json.load(f)
    events = trace["traceEvents"]
    assert len(events) > 10
    names = {e.get("name", "") for e in events}
    assert "ppo_update" in names
    assert sum(n.startswith("TrainStep#") for n in names) == 2  # num_steps training steps captured
    assert any("addmm" in n or "linear" in n for n in names)
    assert prof.state_dict() == {"last_profiled_epoch": 3}


def test_explicit_dir_short_epoch_and_resume(tmp_path):
    out = tmp_path / "profiles"
    prof = TorchProfiler(epoch_interval=1, num_steps=10, output_dir=str(out))  # more steps than an epoch has
    _fit(tmp_path, prof, epochs=1)
    assert os.listdir(out) == ["trace_epoch000000_rank0.json"]
    with open(out / "trace_epoch000000_rank0.json") as f:
        names = {e.get("name", "") for e in json.load(f)["traceEvents"]}
    assert sum(n.startswith("TrainStep#") for n in names) == 3  # the whole (3-batch) epoch

    # Resume from the checkpoint: epoch 0 is not profiled again, epoch 1 is.
    prof2 = TorchProfiler(epoch_interval=1, num_steps=1, output_dir=str(out))
    _fit(tmp_path, prof2, epochs=2, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert sorted(os.listdir(out)) == ["trace_epoch000000_rank0.json", "trace_epoch000001_rank0.json"]


def test_disabled(tmp_path):
    prof = TorchProfiler(epoch_interval=0)
    _fit(tmp_path, prof, epochs=2)
    assert prof.trace_paths == [] and not (tmp_path / "traces").exists()


def test_trace_goes_to_the_run_folder_and_is_uploaded(tmp_path, monkeypatch):
    # The arena config's setup: Lightning's checkpointing off, PolicyCheckpoint + UploadCallback on.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # a trace written to ./traces would land here
    run = tmp_path / "prof"
    remote = tmp_path / "remote"  # a local folder as the remote prefix (any fsspec URL works the same)
    prof = TorchProfiler(epoch_interval=1, num_steps=1)
    upload = UploadCallback(remote_prefix=str(remote))
    trainer = L.Trainer(max_epochs=1, logger=False, accelerator="cpu", enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(run),
                        callbacks=[prof, PolicyCheckpoint(), upload])
    trainer.fit(TinyRL())
    trace = run / "traces" / "trace_epoch000000_rank0.json"
    assert prof.trace_paths == [str(trace)]
    assert not (cwd / "traces").exists()
    # Uploaded at the same place under the remote prefix as in the run folder, with the same bytes.
    copied = remote / "traces" / trace.name
    assert f"{remote}/traces/{trace.name}" in upload.uploaded
    assert copied.read_bytes() == trace.read_bytes() and json.loads(copied.read_text())["traceEvents"]
    assert (remote / "checkpoints" / "prof:v1.mpt").exists() is False  # TinyRL has no policy artifact
    assert (remote / "checkpoints" / "prof:v1.ckpt").read_bytes() == (run / "checkpoints" / "prof:v1.ckpt").read_bytes()


def test_trace_dir_is_the_run_folders_unless_given(tmp_path):
    def trainer(**kw):
        return L.Trainer(logger=False, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path / "r1"), **kw)

    assert TorchProfiler().resolve_dir(trainer()) == str(tmp_path / "r1" / "traces")
    assert TorchProfiler(output_dir=str(tmp_path / "mine")).resolve_dir(trainer()) == str(tmp_path / "mine")
