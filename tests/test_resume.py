"""Full-state checkpoints and resume: straight vs interrupted runs, SIGKILL mid-run, artifacts in a fresh process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from metta_lightning.checkpoint import load_artifact, load_policy
from metta_lightning.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def write_cfg(tmp_path: Path, run: str, max_epochs: int, exact: bool = True, interval: int = 1,
              rollouts: int = 1, **cb) -> str:
    cfg = {"trainer": {"max_epochs": max_epochs, "default_root_dir": str(tmp_path / run), "callbacks": [{
        "class_path": "callbacks.checkpoint.PolicyCheckpoint",
        "init_args": {"epoch_interval": interval,
                      "keep_states": 0, "exact_resume": exact, **cb}}]},
        "data": {"rollouts_per_epoch": rollouts}}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{run}-{max_epochs}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def fit(tmp_path, run, max_epochs, *extra, **kw):
    args = ["fit", "--config", SMOKE, "--config", write_cfg(tmp_path, run, max_epochs, **kw),
            "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), *extra]
    return main(args)


def state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_training_state(a: dict, b: dict, exact: bool = True):
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]) if exact else v.shape == b["state_dict"][k].shape, k
    oa, ob = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert oa.keys() == ob.keys()
    for i in oa:
        for m in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(oa[i][m], ob[i][m]), (i, m)
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    assert a["agent_steps"] == b["agent_steps"]
    assert a["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"] == \
        b["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"]


def test_resume_equivalence_exact(tmp_path):
    """4 epochs straight == 2 epochs, then `--ckpt_path last` for 2 more: bit-identical on CPU."""
    straight = fit(tmp_path / "a", "eq", 4)
    fit(tmp_path / "b", "eq", 2)
    resumed = fit(tmp_path / "b", "eq", 4, "--ckpt_path", "last")
    da, db = tmp_path / "a" / "eq" / "checkpoints", tmp_path / "b" / "eq" / "checkpoints"
    assert sorted(os.listdir(da)) == sorted(os.listdir(db)) == sorted(
        f"eq:v{e}.{x}" for e in range(1, 5) for x in ("ckpt", "mpt"))  # no gap, no repeat
    assert resumed.model.agent_steps == straight.model.agent_steps
    assert resumed.trainer.global_step == straight.trainer.global_step
    for e in (3, 4):
        assert_same_training_state(state(da / f"eq:v{e}.ckpt"), state(db / f"eq:v{e}.ckpt"))
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_resume_from_explicit_path_continues_counters(tmp_path):
    fit(tmp_path, "cnt", 2, exact=False)
    d = tmp_path / "cnt" / "checkpoints"
    s2 = state(d / "cnt:v2.ckpt")
    assert s2["callbacks"]["PolicyCheckpoint"]["epoch"] == 2
    cli = fit(tmp_path, "cnt", 3, "--ckpt_path", f"{d}/cnt:latest", exact=False)
    s3 = state(d / "cnt:v3.ckpt")
    steps_per_epoch = s2["global_step"] // 2
    assert s3["global_step"] == s2["global_step"] + steps_per_epoch
    assert s3["agent_steps"] == s2["agent_steps"] * 3 // 2 == cli.model.agent_steps
    assert s3["epoch"] == 2 and s2["epoch"] == 1


def test_artifact_acts_identically_in_a_fresh_process(tmp_path):
    cli = fit(tmp_path, "art", 1)
    uri = str(tmp_path / "art" / "checkpoints" / "art:v1.mpt")
    env_info = cli.datamodule.env_info
    g = torch.Generator().manual_seed(3)
    obs = torch.randint(0, 40, (6, env_info.num_tokens, 3), dtype=torch.uint8, generator=g)
    obs[..., 1] %= len(env_info.feature_names)
    obs[:, 100:] = 0xFF
    with torch.no_grad():
        out = cli.model.policy.eval().forward_step(obs, None, torch.ones(6, dtype=torch.bool))
        logits, values = out["logits"], out["values"]
    torch.save({"obs": obs}, tmp_path / "obs.pt")
    code = (f"import torch; from metta_lightning.checkpoint import load_policy; p = load_policy({uri!r}); "
            f"o = torch.load({str(tmp_path / 'obs.pt')!r})['obs']; "
            "out = p.forward_step(o, None, torch.ones(len(o), dtype=torch.bool)); l, v = out['logits'], out['values']; "
            f"torch.save({{'l': l, 'v': v}}, {str(tmp_path / 'out.pt')!r})")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)
    out = torch.load(tmp_path / "out.pt")
    assert torch.equal(out["l"], logits) and torch.equal(out["v"], values)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path):
    """SIGKILL a training process mid-run; resuming continues from the last complete state, whose weights,
    optimizer moments and counters are exactly those of the uninterrupted run at that epoch."""
    run = "kill"
    cfg = write_cfg(tmp_path, run, 12, rollouts=2)
    d = tmp_path / run / "checkpoints"
    cmd = [sys.executable, "-m", "metta_lightning", "fit", "--config", SMOKE, "--config", cfg,
           "--trainer.logger.init_args.save_dir", str(tmp_path / "logs")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (d.exists() and any(n.endswith("v3.ckpt") for n in os.listdir(d))):
            time.sleep(0.05)
        time.sleep(0.3)  # somewhere inside a later epoch (possibly mid-write)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    states = sorted(n for n in os.listdir(d) if n.endswith(".ckpt") and not n.startswith("."))
    last = max(int(n.split(":v")[1].split(".")[0]) for n in states)
    assert 3 <= last < 12
    before = state(d / f"{run}:v{last}.ckpt")
    # resume in a fresh process, for a few more epochs
    cfg2 = write_cfg(tmp_path, run, last + 2, rollouts=2)
    subprocess.run(cmd[:-4] + ["--config", cfg2, "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"),
                              "--ckpt_path", "last"], cwd=ROOT, check=True, timeout=600,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = state(d / f"{run}:v{last + 2}.ckpt")
    assert after["global_step"] == before["global_step"] * (last + 2) // last
    assert after["agent_steps"] == before["agent_steps"] * (last + 2) // last
    # the uninterrupted run to the same epoch has the same weights, optimizer moments and counters
    straight = fit(tmp_path / "straight", run, last + 2, rollouts=2)
    assert_same_training_state(state(tmp_path / "straight" / run / "checkpoints" / f"{run}:v{last}.ckpt"), before)
    assert_same_training_state(state(tmp_path / "straight" / run / "checkpoints" / f"{run}:v{last + 2}.ckpt"), after)
    assert straight.trainer.global_step == after["global_step"]


def test_checkpoints_uploaded_to_s3_and_resumed_on_a_fresh_disk(tmp_path, moto_s3, s3_bucket, monkeypatch):
    """The local disk vanishes: resume from the bucket (`--ckpt_path s3://.../<run>:latest`)."""
    import fsspec

    monkeypatch.setitem(fsspec.config.conf, "s3", moto_s3.storage_options)
    up = ["--trainer.callbacks+=callbacks.upload.UploadCallback",
          "--trainer.callbacks.remote_prefix", f"s3://{s3_bucket}/s3run"]
    first = fit(tmp_path / "node1", "s3run", 2, *up, exact=False)
    assert first.trainer.global_step > 0
    fs = moto_s3.fs()
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{s3_bucket}/s3run/checkpoints"))
    assert names == ["s3run:v1.ckpt", "s3run:v1.mpt", "s3run:v2.ckpt", "s3run:v2.mpt"]
    # a new machine: nothing local; resume from the bucket
    cli = fit(tmp_path / "node2", "s3run", 3, *up, "--ckpt_path", f"s3://{s3_bucket}/s3run/checkpoints/s3run:latest",
              exact=False)
    assert cli.model.agent_steps == first.model.agent_steps * 3 // 2
    assert sorted(os.listdir(tmp_path / "node2" / "s3run" / "checkpoints")) == [".resume-cache", "s3run:v3.ckpt",
                                                                                 "s3run:v3.mpt"]
    fs.invalidate_cache()
    assert fs.exists(f"{s3_bucket}/s3run/checkpoints/s3run:v3.mpt")
    assert fs.exists(f"{s3_bucket}/s3run/checkpoints/s3run:v2.ckpt")  # the state resumed from is never deleted
    p, spec, _ = load_artifact(f"s3://{s3_bucket}/s3run/checkpoints/:latest")
    assert spec["epoch"] == 3 and spec["agent_steps"] == cli.model.agent_steps


def test_stop_mid_epoch_then_resume_has_no_gap_and_no_repeat(tmp_path):
    """A run cut inside an epoch (max_steps / max_time) writes one state, named after the epoch in progress;
    the resumed run finishes that epoch and reaches the straight run's counters."""
    straight = fit(tmp_path / "a", "mid", 3, exact=False, rollouts=3)
    fit(tmp_path / "b", "mid", 3, "--trainer.max_steps", "8", exact=False, rollouts=3)  # 4 of 9 rollouts
    d = tmp_path / "b" / "mid" / "checkpoints"
    assert sorted(os.listdir(d)) == ["mid:v1.ckpt", "mid:v1.mpt", "mid:v2.ckpt", "mid:v2.mpt"]
    cut = state(d / "mid:v2.ckpt")
    assert cut["global_step"] == 8 and cut["agent_steps"] == 4 * 128
    resumed = fit(tmp_path / "b", "mid", 3, "--ckpt_path", "last", exact=False, rollouts=3)
    assert sorted(os.listdir(d)) == sorted(f"mid:v{e}.{x}" for e in (1, 2, 3) for x in ("ckpt", "mpt"))
    assert resumed.model.agent_steps == straight.model.agent_steps == 9 * 128
    assert resumed.trainer.global_step == straight.trainer.global_step
    assert state(d / "mid:v3.ckpt")["global_step"] == straight.trainer.global_step


def test_damaged_training_state_is_refused_or_skipped(tmp_path):
    """`--ckpt_path <file>` on a truncated, bit-flipped or foreign state fails naming it; `last` falls back to
    the newest intact state."""
    import lightning.pytorch as pl

    from callbacks.checkpoint import PolicyCheckpoint, resolve_ckpt_path
    from metta_lightning.checkpoint import CheckpointError

    fit(tmp_path, "dmg", 2, exact=False)
    d = tmp_path / "dmg" / "checkpoints"
    good = (d / "dmg:v2.ckpt").read_bytes()
    trainer = pl.Trainer(logger=False, default_root_dir=str(tmp_path / "dmg"), callbacks=[PolicyCheckpoint()])
    assert resolve_ckpt_path(trainer, "last") == str(d / "dmg:v2.ckpt")

    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF  # inside the tensors: caught by the zip CRC
    (d / "dmg:v2.ckpt").write_bytes(bytes(flipped))
    assert resolve_ckpt_path(trainer, "last") == str(d / "dmg:v1.ckpt")  # the last good one
    with pytest.raises(CheckpointError, match=r"dmg:v2\.ckpt: training state is corrupted"):
        resolve_ckpt_path(trainer, str(d / "dmg:v2.ckpt"))

    (d / "dmg:v2.ckpt").write_bytes(good[:-200])
    with pytest.raises(CheckpointError, match=r"dmg:v2\.ckpt: training state is truncated or corrupted"):
        resolve_ckpt_path(trainer, str(d / "dmg:v2.ckpt"))
    (d / "dmg:v2.ckpt").write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match=r"dmg:v2\.ckpt: training state is truncated or corrupted"):
        resolve_ckpt_path(trainer, str(d / "dmg:v2.ckpt"))


def _central_directory(data: bytes) -> int:
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return z.start_dir


def test_every_byte_flip_in_a_state_directory_is_caught(tmp_path):
    """Zip CRCs cover member data only: flips in the central directory passed them and broke the resume.
    Every single-byte flip from the directory to the end is now refused (and `last` takes the state before),
    or leaves a state that loads to the same tensors."""
    import lightning.pytorch as pl

    from callbacks.checkpoint import PolicyCheckpoint, resolve_ckpt_path
    from metta_lightning.checkpoint import CheckpointError, check_training_state

    fit(tmp_path, "flip", 2, exact=False)
    d = tmp_path / "flip" / "checkpoints"
    good = (d / "flip:v2.ckpt").read_bytes()
    reference = state(d / "flip:v2.ckpt")["state_dict"]
    trainer = pl.Trainer(logger=False, default_root_dir=str(tmp_path / "flip"), callbacks=[PolicyCheckpoint()])
    refused = 0
    for offset in range(_central_directory(good), len(good)):
        damaged = bytearray(good)
        damaged[offset] ^= 0x55
        (d / "flip:v2.ckpt").write_bytes(bytes(damaged))
        try:
            check_training_state(str(d / "flip:v2.ckpt"))
        except CheckpointError:
            refused += 1
            assert resolve_ckpt_path(trainer, "last") == str(d / "flip:v1.ckpt"), offset
            continue
        loaded = state(d / "flip:v2.ckpt")["state_dict"]  # accepted: it must load, to the same weights
        assert all(torch.equal(v, loaded[k]) for k, v in reference.items()), offset
    assert refused >= len(good) - _central_directory(good) - 80  # only flips in the seal's own prefix pass


def test_state_without_a_seal_is_checked_by_loading(tmp_path):
    """States written before the seal existed still resume; a broken unsealed one is refused."""
    from metta_lightning.checkpoint import CheckpointError, check_training_state

    torch.save({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, tmp_path / "old:v1.ckpt")
    assert check_training_state(str(tmp_path / "old:v1.ckpt"))
    torch.save({"epoch": 1}, tmp_path / "other:v1.ckpt")
    with pytest.raises(CheckpointError, match=r"other:v1\.ckpt: not a training state \(no 'state_dict'"):
        check_training_state(str(tmp_path / "other:v1.ckpt"))


def test_state_without_artifact_and_stale_temporaries_are_repaired_on_resume(tmp_path):
    """A kill between the state and the artifact (or mid-write) leaves `vN.ckpt` without `vN.mpt` and
    `.tmp-*` files: the resumed run writes the missing artifact (the state's weights) and removes them."""
    fit(tmp_path, "kill", 2, exact=False)
    d = tmp_path / "kill" / "checkpoints"
    (d / "kill:v2.mpt").unlink()
    for stale in (".kill:v3.ckpt.tmp-4242", ".kill:v3.mpt.tmp-0a1b2c3d"):
        (d / stale).write_bytes(b"partial")
    (d / ".notes.tmp-1").write_bytes(b"not ours")  # only our own temporaries are removed
    fit(tmp_path, "kill", 3, "--ckpt_path", "last", exact=False)
    assert sorted(os.listdir(d)) == [".notes.tmp-1"] + [f"kill:v{e}.{x}" for e in (1, 2, 3) for x in ("ckpt", "mpt")]
    weights = state(d / "kill:v2.ckpt")["state_dict"]
    policy = load_policy(str(d / "kill:v2.mpt"))
    assert all(torch.equal(v, weights["policy." + k]) for k, v in policy.state_dict().items())


def test_resume_past_max_time_says_so(tmp_path, capsys):
    """max_time counts every segment of a run: a resume that has no time left says so instead of silently
    training nothing; one with time left says how much."""
    fit(tmp_path, "late", 1000, "--trainer.max_time", "00:00:00:02", exact=False)
    capsys.readouterr()
    cli = fit(tmp_path, "late", 1000, "--trainer.max_time", "00:00:00:02", "--ckpt_path", "last", exact=False)
    err = capsys.readouterr().err
    # the first segment stops after the batch that crosses 2 s: under load that can be 0:00:03
    assert re.search(r"warning: nothing to train: this run already trained 0:00:0\d of its --trainer.max_time "
                     r"0:00:02", err), err
    assert "To train longer, raise it, e.g. --trainer.max_time 00:00:01:00" in err
    steps = cli.trainer.global_step
    fit(tmp_path, "late", 1000, "--trainer.max_time", "00:00:00:04", "--ckpt_path", "last", exact=False)
    err = capsys.readouterr().err
    assert re.search(r"0:00:0(\d) of --trainer.max_time 0:00:04 already used; training at most 0:00:0\d more\.", err), err
    assert steps > 0
