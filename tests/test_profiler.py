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


def test_trace_every_interval_next_to_checkpoints(tmp_path):
    prof = TorchProfiler(epoch_interval=2, num_steps=2)
    _fit(tmp_path, prof, epochs=4)
    trace_dir = tmp_path / "ckpt" / "traces"
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
    assert prof.trace_paths == [] and not (tmp_path / "ckpt" / "traces").exists()


def test_trace_goes_to_the_policy_checkpoint_folder_and_is_uploaded(tmp_path, monkeypatch):
    # The arena config's setup: Lightning's checkpointing off, PolicyCheckpoint + UploadCallback on.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # a trace written to ./traces would land here
    run_ckpts = tmp_path / "run" / "checkpoints"
    remote = tmp_path / "remote"  # a local folder as the remote prefix (any fsspec URL works the same)
    prof = TorchProfiler(epoch_interval=1, num_steps=1)
    upload = UploadCallback(remote_prefix=str(remote))
    trainer = L.Trainer(max_epochs=1, logger=False, accelerator="cpu", enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path / "root"),
                        callbacks=[prof, PolicyCheckpoint(run="prof", dirpath=str(run_ckpts)), upload])
    trainer.fit(TinyRL())
    trace = run_ckpts / "traces" / "trace_epoch000000_rank0.json"
    assert prof.trace_paths == [str(trace)]
    assert not (cwd / "traces").exists() and not (tmp_path / "root" / "traces").exists()
    # Uploaded under the checkpoint folder's name (UploadCallback watches it), with the same bytes.
    copied = remote / "checkpoints" / "traces" / trace.name
    assert f"{remote}/checkpoints/traces/{trace.name}" in upload.uploaded
    assert copied.read_bytes() == trace.read_bytes() and json.loads(copied.read_text())["traceEvents"]


def test_trace_dir_fallbacks(tmp_path, monkeypatch):
    monkeypatch.setenv("METTA_DATA_DIR", str(tmp_path / "data"))
    prof = TorchProfiler()

    def trainer(*callbacks, **kw):
        return L.Trainer(logger=False, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path / "root"), callbacks=[prof, *callbacks], **kw)

    # PolicyCheckpoint not set up yet (no dirpath): its default run folder is resolved.
    assert prof.resolve_dir(trainer(PolicyCheckpoint(run="r1"), enable_checkpointing=False)) == \
        os.path.join(str(tmp_path / "data"), "r1", "checkpoints", "traces")
    # Preferred over Lightning's checkpoint callback when both are there.
    both = trainer(PolicyCheckpoint(run="r2"), ModelCheckpoint(dirpath=str(tmp_path / "lt")))
    assert prof.resolve_dir(both) == os.path.join(str(tmp_path / "data"), "r2", "checkpoints", "traces")
    assert prof.resolve_dir(trainer(ModelCheckpoint(dirpath=str(tmp_path / "lt")))) == str(tmp_path / "lt" / "traces")
    assert prof.resolve_dir(trainer(enable_checkpointing=False)) == str(tmp_path / "root" / "traces")
