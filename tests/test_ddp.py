"""DDP on CPU (gloo): `fit --trainer.strategy ddp --trainer.devices 2` as users run it, Lightning launching the
second rank as a subprocess. Each rank dumps what it saw through `ddp_probe.DDPProbe` (a test-only callback
loaded by class path)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from metta_lightning.cli import main
from metta_lightning.module import merge_episode_means

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
ROLLOUTS = 2  # per epoch


def child_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", METTA_TORCH_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def write_cfg(tmp: Path, name: str, max_epochs: int, probe_tag: str, ddp: bool = True, timeout: str | None = None,
              eval_sleep_s: float | None = None, exact: bool = False) -> str:
    callbacks = [
        {"class_path": "callbacks.checkpoint.PolicyCheckpoint",
         "init_args": {"keep_states": 0,
                       "exact_resume": exact}},
        {"class_path": "ddp_probe.DDPProbe", "init_args": {"out_dir": str(tmp / "probe"), "tag": probe_tag}}]
    if eval_sleep_s is not None:
        callbacks.insert(1, {"class_path": "ddp_probe.SlowEvaluate", "init_args": {
            "suite": "smoke", "epoch_interval": 1, "replay_episodes": 1, "sleep_s": eval_sleep_s}})
    trainer = {"max_epochs": max_epochs, "callbacks": callbacks, "default_root_dir": str(tmp / "ddp"),
               "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                          "init_args": {"save_dir": str(tmp / "logs"), "name": name}}}
    if ddp:
        trainer.update(accelerator="cpu", devices=2, strategy="ddp" if timeout is None else {
            "class_path": "lightning.pytorch.strategies.DDPStrategy", "init_args": {"timeout": timeout}})
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"trainer": trainer, "data": {"rollouts_per_epoch": ROLLOUTS}}))
    return str(path)


def ddp_fit(cfg: str, *extra: str, timeout_s: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "metta_lightning", "fit", "--config", SMOKE, "--config", cfg, *extra]
    return subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout_s)


def probes(tmp: Path, tag: str, world: int = 2) -> list[dict]:
    return [torch.load(tmp / "probe" / f"{tag}-rank{r}.pt", weights_only=False) for r in range(world)]


def assert_same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def logged_rows(tmp: Path, name: str) -> list[dict]:
    with open(next((tmp / "logs" / name).rglob("metrics.csv"))) as f:
        return list(csv.DictReader(f))


def test_ddp_two_ranks_fit_long_evaluation_then_resume(tmp_path):
    """2 ranks: identical parameters after 8 updates, different games and RNG streams, merged stats, files from
    rank zero only, an evaluation longer than the collective timeout, then `--ckpt_path last` on 2 ranks and
    on 1 rank."""
    # Evaluation sleeps 30 s (in rank zero's background thread) with a 25 s collective timeout: an evaluation
    # inside the collective path would make rank one's next all-reduce time out and fail the run.
    cfg = write_cfg(tmp_path, "fit", 2, "fit", timeout="0:00:25", eval_sleep_s=30)
    proc = ddp_fit(cfg)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    r0, r1 = probes(tmp_path, "fit")
    assert r0["world_size"] == r1["world_size"] == 2

    # Gradients averaged: the same parameters on both ranks after 2 epochs x 2 rollouts x 2 updates.
    assert r0["global_step"] == r1["global_step"] == 2 * ROLLOUTS * 2
    assert_same_params(r0["params"], r1["params"])

    # Each rank its own games and its own torch RNG stream, derived from the run seed and the rank.
    assert (r0["env_seed"], r1["env_seed"]) == (0, 1000)
    assert r0["first_obs_sum"] != r1["first_obs_sum"]
    assert (r0["torch_seed"], r1["torch_seed"]) == (0, 1000)

    # Stats merged over ranks: every rank logs the same numbers; agent steps count both ranks; the episode
    # means are those of both ranks' episodes together.
    frames = r0["frames"]
    assert r0["agent_steps"] == r1["agent_steps"] == 2 * frames * 2 * ROLLOUTS
    assert [row["overview/agent_steps"] for row in r0["logged"]] == [2.0 * frames * (i + 1) for i in range(4)]
    assert r0["logged"] == r1["logged"]
    for i, (e0, e1) in enumerate(zip(r0["episodes"], r1["episodes"])):
        if not e0 and not e1:
            continue
        episodes = e0 + e1
        length = sum(e["steps"] for e in episodes) / len(episodes)
        assert r0["logged"][i]["overview/episode_length"] == pytest.approx(length)
        keys = [k for k in r0["logged"][i] if k.startswith("env_agent/")]
        assert "env_agent/action.noop.success" in keys
        for key in keys:
            want = sum(float(np.mean(e["agent"].get(key[len("env_agent/"):], 0.0))) for e in episodes)
            assert r0["logged"][i][key] == pytest.approx(want / len(episodes), rel=1e-5, abs=1e-7), key

    # Only rank zero wrote checkpoints (and nothing half-written is left), evaluated, logged the evaluation.
    ckpt_dir = tmp_path / "ddp" / "checkpoints"
    assert sorted(os.listdir(ckpt_dir)) == [f"ddp:v{e}.{x}" for e in (1, 2) for x in ("ckpt", "mpt")]
    assert [Path(p).name for p in r0["saved"]] == ["ddp:v1.ckpt", "ddp:v2.ckpt"] and r1["saved"] == []
    assert r0["eval_metrics"]["eval/epoch"] == 1.0 and "eval/smoke/score" in r0["eval_metrics"]
    assert r1["eval_metrics"] == {}
    evals = [row for row in logged_rows(tmp_path, "fit") if row.get("eval/smoke/score")]
    assert [float(row["eval/epoch"]) for row in evals] == [1.0]
    assert (tmp_path / "ddp" / "eval.duckdb").exists()
    assert "skipping v2" in proc.stdout + proc.stderr  # v1 was still running when v2 was due

    # The state holds both ranks' RNG states.
    state = torch.load(ckpt_dir / "ddp:v2.ckpt", weights_only=True)
    rngs = state["callbacks"]["PolicyCheckpoint"]["rng_by_rank"]
    assert len(rngs) == 2 and not torch.equal(rngs[0]["torch"], rngs[1]["torch"])

    # Resume as DDP on 2 ranks: counters continue, each rank gets back its own RNG states and games.
    proc = ddp_fit(write_cfg(tmp_path, "resume", 3, "resume"), "--ckpt_path", "last")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    q0, q1 = probes(tmp_path, "resume")
    assert q0["start_step"] == q1["start_step"] == r0["global_step"]
    assert q0["global_step"] == r0["global_step"] + ROLLOUTS * 2
    assert q0["agent_steps"] == r0["agent_steps"] + 2 * frames * ROLLOUTS
    assert_same_params(q0["params"], q1["params"])
    assert torch.equal(q0["rng_at_first_epoch"], rngs[0]["torch"])
    assert torch.equal(q1["rng_at_first_epoch"], rngs[1]["torch"])
    assert q0["env_seed"] != q1["env_seed"]
    assert sorted(os.listdir(ckpt_dir))[-2:] == ["ddp:v3.ckpt", "ddp:v3.mpt"]
    assert [Path(p).name for p in q0["saved"]] == ["ddp:v3.ckpt"] and q1["saved"] == []

    # The same state on 1 rank (weights and optimizer moments are replicated, so it loads as is).
    cli = main(["fit", "--config", SMOKE, "--config", write_cfg(tmp_path, "single", 4, "single", ddp=False),
                "--ckpt_path", "last"])
    (s0,) = probes(tmp_path, "single", world=1)
    assert s0["start_step"] == q0["global_step"] and s0["agent_steps"] == q0["agent_steps"] + frames * ROLLOUTS
    assert torch.equal(s0["rng_at_first_epoch"], torch.load(ckpt_dir / "ddp:v3.ckpt", weights_only=True)[
        "callbacks"]["PolicyCheckpoint"]["rng_by_rank"][0]["torch"])
    assert cli.trainer.world_size == 1 and (ckpt_dir / "ddp:v4.ckpt").exists()


def test_ddp_bad_sizes_fail_before_launch_with_the_single_process_error(tmp_path):
    """A per-rank batch the minibatch does not divide: the single-process message, once, no hung rank."""
    with pytest.raises(ValueError) as single:
        main(["fit", "--config", SMOKE, "--config", write_cfg(tmp_path, "bad1", 1, "bad", ddp=False),
              "--model.minibatch_size", "96"])
    proc = ddp_fit(write_cfg(tmp_path, "bad2", 1, "bad"), "--model.minibatch_size", "96", timeout_s=120)
    assert proc.returncode != 0
    assert str(single.value) in proc.stderr
    assert "(sizes per rank: world size 2, data.batch_semantics=per_rank)" in proc.stderr
    assert "Initializing distributed" not in proc.stdout + proc.stderr  # failed before launching rank one
    assert not (tmp_path / "probe").exists()


def test_global_batch_semantics_split_games_and_minibatches(tmp_path):
    """`data.batch_semantics=global`: sizes are totals that each rank divides; bad splits name the numbers."""
    from metta_lightning.data import RolloutDataModule
    from metta_lightning.module import PPOModule

    dm = RolloutDataModule(num_envs=4, horizon=16, batch_semantics="global")
    model = PPOModule(env_info=dm.env_info, bptt_horizon=8, minibatch_size=256)
    agents = dm.env_info.num_agents
    assert dm.envs_per_rank(1) == 4 and dm.envs_per_rank(2) == 2 and dm.rows_per_rank(4) == agents
    assert model.minibatch_per_rank(2, "global") == 128 and model.minibatch_per_rank(2, "per_rank") == 256
    model.validate_sizes(dm.rows_per_rank(2), 16, 2, "global")
    with pytest.raises(ValueError, match=r"data.num_envs=4 is not divisible by the world size 3"):
        dm.envs_per_rank(3)
    with pytest.raises(ValueError, match=r"model.minibatch_size=256 is not divisible by the world size 3"):
        model.minibatch_per_rank(3, "global")
    per_rank = RolloutDataModule(num_envs=4, horizon=16)
    assert per_rank.envs_per_rank(8) == 4
    with pytest.raises(ValueError, match="batch_semantics"):
        RolloutDataModule(batch_semantics="total")


def test_merge_episode_means_weights_by_episode_counts():
    # Rank 0: 3 episodes with mean reward 1 (key "x" in some of them: mean 0.5 over its 3 episodes);
    # rank 1: 1 episode with reward 5 and no "x"; rank 2 finished none (it still takes part in the gather).
    merged = merge_episode_means([(3, {"overview/reward": 1.0, "x": 0.5}), (1, {"overview/reward": 5.0}), (0, {})])
    assert merged == {"overview/reward": pytest.approx(2.0), "x": pytest.approx(1.5 / 4)}
    assert merge_episode_means([(0, {}), (0, {})]) == {}


@pytest.mark.slow
def test_ddp_exact_resume_is_bit_identical_on_the_same_world_size(tmp_path):
    """exact_resume on 2 ranks: 3 epochs straight == 2 epochs + `--ckpt_path last` for 1 more, both ranks."""
    a, b = tmp_path / "a", tmp_path / "b"
    runs = [(a, write_cfg(a, "straight", 3, "straight", exact=True)),
            (b, write_cfg(b, "first", 2, "first", exact=True)),
            (b, write_cfg(b, "resumed", 3, "resumed", exact=True))]
    for i, (_, cfg) in enumerate(runs):
        proc = ddp_fit(cfg, *(["--ckpt_path", "last"] if i == 2 else []))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    straight, resumed = probes(a, "straight"), probes(b, "resumed")
    for rank in (0, 1):
        assert_same_params(straight[rank]["params"], resumed[rank]["params"])
        assert straight[rank]["agent_steps"] == resumed[rank]["agent_steps"]
    sa = torch.load(a / "ddp" / "checkpoints" / "ddp:v3.ckpt", weights_only=True)
    sb = torch.load(b / "ddp" / "checkpoints" / "ddp:v3.ckpt", weights_only=True)
    for k, v in sa["state_dict"].items():
        assert torch.equal(v, sb["state_dict"][k]), k
    for ra, rb in zip(sa["callbacks"]["PolicyCheckpoint"]["rng_by_rank"], sb["callbacks"]["PolicyCheckpoint"]["rng_by_rank"]):
        assert torch.equal(ra["torch"], rb["torch"])


def test_background_evaluation_single_process_is_logged_and_uploaded(tmp_path):
    """`background: true` on one process: the snapshot's evaluation runs in a thread while training goes on;
    fit waits for it at the end, logs it (with eval/epoch) and has the upload callback pick up its files."""
    import fsspec

    run_dir = tmp_path / "ddp"
    cfg = yaml.safe_load(Path(write_cfg(tmp_path, "bg", 1, "bg", ddp=False, eval_sleep_s=3)).read_text())
    cfg["trainer"]["callbacks"][1]["init_args"]["background"] = True
    # Listed first: its own fit-end scan comes before the evaluation is done.
    cfg["trainer"]["callbacks"].insert(0, {"class_path": "callbacks.upload.UploadCallback", "init_args": {
        "remote_prefix": "memory://bg-upload", "watch": [str(run_dir)]}})
    (tmp_path / "bg.yaml").write_text(yaml.safe_dump(cfg))
    start = time.perf_counter()
    main(["fit", "--config", SMOKE, "--config", str(tmp_path / "bg.yaml")])
    assert time.perf_counter() - start >= 3  # fit waited for the evaluation
    (p,) = probes(tmp_path, "bg", world=1)
    assert p["eval_metrics"]["eval/epoch"] == 1.0 and "eval/smoke/score" in p["eval_metrics"]
    evals = [row for row in logged_rows(tmp_path, "bg") if row.get("eval/smoke/score")]
    assert [float(row["eval/epoch"]) for row in evals] == [1.0]
    fs = fsspec.filesystem("memory")
    uploaded = [Path(f).name for f in fs.find("/bg-upload")]
    assert "eval.duckdb" in uploaded and any(n.endswith(".json.z") for n in uploaded)
