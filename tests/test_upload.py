"""UploadCallback and policy artifacts against a real S3 API (moto server on 127.0.0.1, via s3fs)."""

from __future__ import annotations

import logging
import os
import threading
import time

import fsspec
import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from callbacks.upload import UploadCallback
from metta_lightning.checkpoint import CheckpointError, load_artifact, load_policy, save_policy
from test_checkpoint import env_info, make_policy


@pytest.fixture
def s3_conf(moto_s3, monkeypatch):
    """Make plain `s3://` URLs (as users type them) reach the moto server."""
    monkeypatch.setitem(fsspec.config.conf, "s3", moto_s3.storage_options)
    return moto_s3


def test_upload_to_s3_and_load_back(s3_conf, s3_bucket, tmp_path):
    ck = tmp_path / "run1" / "checkpoints"
    ck.mkdir(parents=True)
    up = UploadCallback(f"s3://{s3_bucket}/runs/run1", watch=[str(ck)], storage_options=s3_conf.storage_options)
    for e in (1, 2):
        save_policy(make_policy(seed=e), env_info(), str(ck / f"run1:v{e}.mpt"))
    (ck / ".run1:v3.mpt.tmp-1234").write_bytes(b"partial")  # a write in progress is never uploaded
    extra = tmp_path / "replay.json.z"
    extra.write_bytes(b"replay")
    assert up.scan() == 2
    up.enqueue(str(extra), key="replays/ep1.json.z")
    assert up.flush(30)
    fs = s3_conf.fs()
    assert sorted(fs.ls(f"{s3_bucket}/runs/run1/checkpoints")) == [
        f"{s3_bucket}/runs/run1/checkpoints/run1:v1.mpt", f"{s3_bucket}/runs/run1/checkpoints/run1:v2.mpt"]
    assert fs.cat_file(f"{s3_bucket}/runs/run1/checkpoints/run1:v2.mpt") == (ck / "run1:v2.mpt").read_bytes()
    assert fs.cat_file(f"{s3_bucket}/runs/run1/replays/ep1.json.z") == b"replay"
    assert up.scan() == 0  # unchanged files are not uploaded twice
    up.close()

    # the uploaded artifact loads straight from the bucket, by path and by :latest
    q, spec, _ = load_artifact(f"s3://{s3_bucket}/runs/run1/checkpoints/:latest")
    p = make_policy(seed=2)
    assert spec["epoch"] == 2
    assert all(torch.equal(v, q.state_dict()[k]) for k, v in p.state_dict().items())
    # artifacts can also be written to the bucket directly (one PUT)
    save_policy(p, env_info(), f"s3://{s3_bucket}/direct/run1:v7.mpt")
    assert load_artifact(f"s3://{s3_bucket}/direct/run1:v7.mpt").spec["epoch"] == 7


def test_s3_errors_name_the_uri(s3_conf, s3_bucket):
    with pytest.raises(CheckpointError, match=r"s3://no-such-bucket-x/a/r:v1.mpt: bucket 'no-such-bucket-x' does not exist"):
        load_policy("s3://no-such-bucket-x/a/r:v1.mpt")
    with pytest.raises(CheckpointError, match=rf"s3://{s3_bucket}/nope/r:v1.mpt: checkpoint not found"):
        load_policy(f"s3://{s3_bucket}/nope/r:v1.mpt")


def test_missing_bucket_gives_up_and_logs(s3_conf, tmp_path, caplog):
    f = tmp_path / "r:v1.mpt"
    f.write_bytes(b"x")
    up = UploadCallback("s3://no-such-bucket-y/run", max_attempts=2, backoff_s=0.05,
                        storage_options=s3_conf.storage_options)
    with caplog.at_level(logging.WARNING, logger="callbacks.upload"):
        up.enqueue(str(f))
        assert up.flush(20)  # nothing left: given up, not hanging
    assert up.failed == [str(f)] and not up.uploaded
    assert "giving up on" in caplog.text and "no-such-bucket-y" in caplog.text, caplog.text


class _Tiny(pl.LightningModule):
    def __init__(self, step_s=0.0):
        super().__init__()
        self.step_s = step_s
        self.lin = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        time.sleep(self.step_s)  # stands in for compute
        return self.lin(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class _WriteEachEpoch(pl.Callback):
    """Stands in for the checkpoint callback: writes a file per epoch into the run folder's checkpoints/."""

    def __init__(self):
        self.epoch_times = []

    def on_train_epoch_end(self, trainer, pl_module):
        t = time.monotonic()
        d = os.path.join(trainer.default_root_dir, "checkpoints")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"r:v{trainer.current_epoch + 1}.mpt"), "wb") as f:
            f.write(os.urandom(2048))
        self.epoch_times.append(time.monotonic() - t)


def test_training_with_s3_down_for_part_of_the_run(s3_conf, s3_bucket, tmp_path):
    """The bucket is down for the first epochs: training is not slowed, uploads succeed once it is back."""
    writer = _WriteEachEpoch()
    up = UploadCallback(f"s3://{s3_bucket}/run", backoff_s=0.2, max_backoff_s=1.0, flush_timeout_s=60,
                        storage_options=s3_conf.storage_options)

    class Outage(pl.Callback):
        """Stops the server when fit starts; a thread restarts it once uploads have failed twice."""

        down = False

        def on_fit_start(self, trainer, pl_module):
            s3_conf.stop()
            self.down = True
            self.stopped_at = time.monotonic()
            threading.Thread(target=self._restart, daemon=True).start()

        def _restart(self):
            while up.errors < 2 and time.monotonic() - self.stopped_at < 20:
                time.sleep(0.05)
            s3_conf.start()
            self.down = False

    data = DataLoader(TensorDataset(torch.randn(32, 4)), batch_size=8)
    trainer = pl.Trainer(max_epochs=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                         default_root_dir=str(tmp_path / "run"),
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[Outage(), writer, up])
    outage = trainer.callbacks[0]
    t0 = time.monotonic()
    trainer.fit(_Tiny(step_s=0.15), data)
    fit_s = time.monotonic() - t0
    while outage.down:
        time.sleep(0.1)
    assert max(writer.epoch_times) < 0.05, writer.epoch_times  # writing never waits for the bucket
    fs = s3_conf.fs()
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{s3_bucket}/run/checkpoints"))
    assert names == [f"r:v{e}.mpt" for e in range(1, 7)], (names, up.failed)
    assert not up.failed and up.errors >= 2  # tries failed during the outage, then succeeded
    for e in range(1, 7):
        assert fs.cat_file(f"{s3_bucket}/run/checkpoints/r:v{e}.mpt") == \
            (tmp_path / "run" / "checkpoints" / f"r:v{e}.mpt").read_bytes()
    # 24 steps of 0.15 s compute: the outage (and the flush at the end) cost little
    assert fit_s < 3.6 + 25, fit_s


def test_scan_skips_hidden_files_and_folders(tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    for rel in ["run:v1.ckpt", "run:v1.mpt", "evals/run:v1.json.z",          # uploaded
                ".run:v2.ckpt.tmp-1", ".resume-cache/run:v7.ckpt",           # hidden file, hidden folder
                ".resume-cache/deeper/run:v6.mpt", "notes.txt"]:            # inside it; no pattern match
        (ckpts / rel).parent.mkdir(parents=True, exist_ok=True)
        (ckpts / rel).write_bytes(rel.encode())
    remote = tmp_path / "remote"
    up = UploadCallback(remote_prefix=str(remote), watch=[str(ckpts)])
    try:
        assert up.scan() == 3
        assert up.flush(timeout=30)
    finally:
        up.close(timeout=5)
    got = sorted(str(p.relative_to(remote)) for p in remote.rglob("*") if p.is_file())
    assert got == ["checkpoints/evals/run:v1.json.z", "checkpoints/run:v1.ckpt", "checkpoints/run:v1.mpt"]
    assert up.scan() == 0  # nothing new


def test_dead_bucket_waits_once_at_the_end(s3_conf, s3_bucket, tmp_path):
    """The bucket dies for good: fit end and teardown together wait at most flush_timeout_s, not twice."""
    up = UploadCallback(f"s3://{s3_bucket}/run", backoff_s=0.2, max_backoff_s=0.5, max_attempts=1000,
                        flush_timeout_s=3, storage_options=s3_conf.storage_options)

    class DiesAtTheEnd(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == trainer.max_epochs - 1:  # before the last epoch's file is announced
                s3_conf.stop()
                self.died = time.monotonic()

    dies = DiesAtTheEnd()
    data = DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=8)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         default_root_dir=str(tmp_path / "run"),
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[dies, _WriteEachEpoch(), up])
    try:
        trainer.fit(_Tiny(), data)
        waited = time.monotonic() - dies.died
    finally:
        s3_conf.start()
    assert not any(u.endswith("r:v2.mpt") for u in up.uploaded) and not up.failed  # still pending when closed
    assert 2.9 < waited < 3 + 1.5, waited  # one wait of flush_timeout_s (3 s) in all, not 3 + 3
