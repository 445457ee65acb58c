"""End to end: the CLI on configs/smoke.yaml, rollouts reproduce the actor, bad configs, resume keys."""

import csv
import math
from pathlib import Path

import pytest
import torch

from metta_lightning.cli import main
from metta_lightning.data import RolloutActor
from metta_lightning.module import PPOModule
from metta_lightning import ppo

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
FAST = ["--model.policy", "models.Fast", "--model.policy.hidden_size", "32", "--model.policy.critic_hidden", "32",
        "--model.policy.actor_hidden", "32", "--model.policy.cnn_channels", "16"]


def fit(tmp_path, *extra):
    args = ["fit", "--config", SMOKE, "--trainer.logger.init_args.save_dir", str(tmp_path), *extra]
    return main(args)


def read_metrics(tmp_path):
    path = next(Path(tmp_path).rglob("metrics.csv"))
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("policy", ["feedforward", "fast"])
def test_fit_smoke_logs_keys(tmp_path, policy):
    # Monitors at every chance, so a seconds-long run logs monitor/* and grad/* too.
    cli = fit(tmp_path, "--monitor.interval_s", "0", "--grad_stats.every_n_updates", "1",
              *(FAST if policy == "fast" else []))
    model = cli.model
    assert model.agent_steps == 3 * cli.datamodule.batch_size
    rows = read_metrics(tmp_path)
    keys = set(rows[0])
    for key in ["overview/sps", "overview/reward", "overview/agent_steps", "env_agent/heart.gained",
                "env_agent/ore_red.gained", "losses/policy_loss", "losses/value_loss", "losses/entropy",
                "losses/approx_kl", "losses/clipfrac", "losses/explained_variance"]:
        assert key in keys, key
    assert any(k.startswith("env_game/") for k in keys)
    for key in ["timing/rollout", "timing/update", "timing/env_step", "timing/policy_forward",
                "monitor/rss_mb", "monitor/cpu_percent", "monitor/available_mb", "grad/global_norm"]:
        assert key in keys, key
        assert any(r[key] != "" and math.isfinite(float(r[key])) for r in rows), key
    # Sampled values (monitor/*, grad/*) have rows of their own; every training step's row has the losses.
    loss_rows = [r for r in rows if r["losses/value_loss"] != ""]
    assert len(loss_rows) == 3 and all(math.isfinite(float(r["losses/value_loss"])) for r in loss_rows)
    assert all(r["grad/global_norm"] == "" for r in loss_rows)  # never repeated, stale, into other rows
    assert cli.trainer.global_step == 3 * 2 * (cli.datamodule.batch_size // model.minibatch_size)


def test_checkpoint_roundtrip_keeps_hparams_and_agent_steps(tmp_path):
    cli = fit(tmp_path)
    path = tmp_path / "model.ckpt"
    cli.trainer.save_checkpoint(path)
    loaded = PPOModule.load_from_checkpoint(path)  # weights_only=True: hparams must be plain
    assert loaded.agent_steps == cli.model.agent_steps
    assert type(loaded.policy) is type(cli.model.policy)
    for a, b in zip(loaded.policy.parameters(), cli.model.policy.parameters()):
        assert torch.equal(a, b)


def test_training_segments_reproduce_the_actor(tmp_path):
    """Each BPTT segment restarts from the stored state: the training forward gives back the
    log-probs and values the actor had while collecting (state zeroed at episode starts)."""
    from torchrl.collectors import Collector

    cli = main(["--config", SMOKE, *FAST], run=False)
    dm, model = cli.datamodule, cli.model
    env = dm.make_env(seed=3)
    collector = Collector(env, RolloutActor(model.policy), frames_per_batch=dm.num_rows * 32, total_frames=-1,
                          track_traj_ids=False)
    it = iter(collector)
    next(it)
    td = next(it)  # second rollout: starts mid-episode from a non-zero state
    collector.shutdown()
    assert td["is_init"].any() and td["recurrent_state"][:, 0].abs().sum() > 0
    seg = lambda x: ppo.segment(x, 8)  # noqa: E731
    with torch.no_grad():
        out = model.policy.forward_sequence(
            seg(td["observation"]), seg(td["recurrent_state"])[:, 0], seg(td["is_init"][..., 0]))
    logits, values = out["logits"], out["values"]
    log_prob = torch.log_softmax(logits, -1).gather(-1, seg(td["action"]).unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(log_prob, seg(td["action_log_prob"]), atol=1e-4)
    assert torch.allclose(values, seg(td["state_value"]), atol=1e-4)


def test_size_mismatch_names_the_numbers(tmp_path):
    with pytest.raises(ValueError, match=r"minibatch_size=96 does not divide the batch \(8 rows x horizon 16 = 128"):
        fit(tmp_path, "--model.minibatch_size", "96", "--model.bptt_horizon", "8")
    with pytest.raises(ValueError, match="bptt_horizon=32 is longer than the rollout horizon=16"):
        fit(tmp_path, "--model.bptt_horizon", "32")


@pytest.mark.parametrize("args,needle", [
    (["--model.no_such_knob", "1"], "no_such_knob"),
    (["--model.clip_coef", "wide"], "model.clip_coef"),
    (["--data.num_envs", "two"], "data.num_envs"),
])
def test_bad_config_stops_with_the_key(tmp_path, capsys, args, needle):
    with pytest.raises(SystemExit):
        fit(tmp_path, *args)
    assert needle in capsys.readouterr().err


def test_unknown_yaml_key_is_an_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  horizn: 16\n")
    with pytest.raises(SystemExit):
        fit(tmp_path, "--config", str(bad))
    assert "horizn" in capsys.readouterr().err


def test_bad_game_override_names_the_field(tmp_path):
    with pytest.raises(Exception, match="max_stepz"):
        fit(tmp_path, "--data.game_overrides", "{max_stepz: 3}")


def test_help_documents_the_knobs(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    for knob in ["--model.learning_rate", "--model.clip_coef", "--model.bptt_horizon", "--model.minibatch_size",
                 "--data.num_envs", "--data.horizon", "--data.game", "Adam learning rate", "environment steps per rollout"]:
        assert knob in out, knob
    assert "--model.env_info.action_names" not in out  # linked from data.env_info, never typed


@pytest.mark.slow
def test_learns_small_task(tmp_path):
    """configs/learn_small.yaml: 1-2 minutes on a 2-core CPU. A uniformly random policy scores reward
    0.06 and makes 0.05 batteries per episode there (measured over 320 episodes); PPO reaches ~0.6
    (mine -> ore -> generator -> battery, kept). A broken PPO stays near random."""
    fit(tmp_path, "--config", str(ROOT / "configs" / "learn_small.yaml"),
        "--trainer.logger.init_args.save_dir", str(tmp_path))
    rows = [r for r in read_metrics(tmp_path) if r.get("overview/reward")]
    last = rows[-5:]
    reward = sum(float(r["overview/reward"]) for r in last) / len(last)
    batteries = sum(float(r["env_agent/battery_red.gained"]) for r in last) / len(last)
    print(f"final reward {reward:.3f}, batteries {batteries:.2f} per episode (random: 0.06, 0.05)")
    assert reward > 0.4 and batteries > 0.5
