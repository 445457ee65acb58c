"""The Python API: typed configs that cannot drift from the YAML, `api.train`, and the exposed phases, which
train bit-identically to `fit`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from metta_lightning import api
from metta_lightning.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def _hand_loop(cfg: api.TrainerConfig, rollouts: int) -> dict[str, torch.Tensor]:
    L.seed_everything(cfg.seed, verbose=False)
    env = api.Environment(game=cfg.game, game_overrides=cfg.game_overrides, num_envs=cfg.rollout.num_envs,
                          seed=cfg.rollout.seed)
    policy = api.make_policy(cfg.policy.class_path, env, **cfg.policy.init_args) if cfg.policy else api.make_policy("Fast", env)
    training = api.TrainingComponents.create(env, policy, cfg)
    for _ in range(rollouts):
        training.rollout()
        training.compute_advantages()
        for minibatch in training.minibatches():
            training.train_minibatch(minibatch)
            training.optimize_step()
    training.close()
    return policy.state_dict()


@pytest.mark.parametrize("policy", ["FeedForward", "Fast"])
def test_fit_api_train_and_hand_loop_are_bit_identical(tmp_path, monkeypatch, policy):
    """Same seed and sizes on CPU: `fit` from the CLI, `api.train(config)` and the exposed phases driven by
    hand give the same parameters, bit for bit, after several updates (2 passes: V-trace ratios used)."""
    monkeypatch.chdir(tmp_path)
    init = {"hidden_size": 32, "critic_hidden": 64, "actor_hidden": 64} if policy == "Fast" else {
        "channels": 16, "hidden_size": 64}
    overrides = ["--model.policy", f"models.{policy}", "--model.update_epochs", "2", "--trainer.logger", "false"]
    overrides += [a for k, v in init.items() for a in (f"--model.policy.init_args.{k}", str(v))]
    cli = main(["fit", "--config", SMOKE, *overrides])
    by_cli = {k: v.clone() for k, v in cli.model.policy.state_dict().items()}

    cfg = api.TrainerConfig.from_yaml(SMOKE)
    cfg = cfg.model_copy(update={"logging": api.LoggingConfig(logger="none", save_dir=str(tmp_path)),
                                 "ppo": cfg.ppo.model_copy(update={"update_epochs": 2}),
                                 "policy": api.PolicyConfig(class_path=policy, init_args=init)})
    result = api.train(cfg)
    by_hand = _hand_loop(cfg, cfg.rollout.rollouts_per_epoch)
    assert result.agent_steps == cli.model.agent_steps == 3 * 128
    assert "losses/policy_loss" in result.metrics
    by_api = result.policy.state_dict()
    for k, v in by_cli.items():
        assert torch.equal(v, by_hand[k]) and torch.equal(v, by_api[k]), k


def _resolved(capsys, config: Path) -> dict:
    """What `fit --config <config> --print_config` prints."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(config), "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


FIT_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml")
                     if {"trainer", "model", "data"} & set(yaml.safe_load(p.read_text()) or {}))


@pytest.mark.parametrize("path", FIT_CONFIGS, ids=lambda p: p.name)
def test_every_config_file_reads_into_trainer_config_without_drift(tmp_path, capsys, path):
    """Each YAML in configs/ loads into TrainerConfig, and what that gives back to the CLI resolves to exactly
    what `fit --config <file> --print_config` resolves."""
    cfg = api.TrainerConfig.from_yaml(str(path))
    back = tmp_path / "back.yaml"
    back.write_text(yaml.safe_dump(cfg.to_cli()))
    assert _resolved(capsys, back) == _resolved(capsys, path)


def test_defaults_equal_the_cli_defaults(tmp_path, capsys):
    """TrainerConfig() is `fit` with no config file."""
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    back = tmp_path / "defaults.yaml"
    back.write_text(yaml.safe_dump(api.TrainerConfig().to_cli()))
    assert _resolved(capsys, back) == _resolved(capsys, empty)


def test_config_classes_carry_the_constructors_types_defaults_and_docs():
    ppo = api.PPOConfig()
    assert (ppo.clip_coef, ppo.gamma, ppo.bptt_horizon) == (0.264, 0.977, 64)
    assert "PPO policy ratio clip" in api.PPOConfig.model_fields["clip_coef"].description
    assert api.OptimizerConfig().learning_rate == 0.00115
    with pytest.raises(api.ConfigError, match=r"^ppo\.clip_coef: Input should be a valid number"):
        api.TrainerConfig.parse({"ppo": {"clip_coef": "wide"}})
    with pytest.raises(api.ConfigError, match=r"rollout\.num_envz: Extra inputs are not permitted"):
        api.TrainerConfig.parse({"rollout": {"num_envz": 4}})
    with pytest.raises(ValueError, match=r"^game: map_builder\.lines: unknown map character 'Q'"):
        api.Environment(game={"map_builder": {"kind": "ascii", "lines": ["#Q#"]}})


def test_phases_called_out_of_order_say_what_to_call_first(tmp_path):
    env = api.Environment(num_agents=4, width=12, height=12, num_envs=2)
    assert env.env_info.num_agents == 4 and env.num_rows == 8
    cfg = api.TrainerConfig(rollout=api.RolloutConfig(horizon=16), ppo=api.PPOConfig(bptt_horizon=8, minibatch_size=64))
    training = api.TrainingComponents.create(env, api.make_policy("FeedForward", env, channels=8, hidden_size=16), cfg)
    with pytest.raises(api.PhaseOrderError, match=r"compute_advantages\(\) needs a rollout: call rollout\(\) first"):
        training.compute_advantages()
    rollout = training.rollout()
    assert rollout.data.batch_size == torch.Size([8, 16]) and rollout.seconds > 0
    with pytest.raises(api.PhaseOrderError, match=r"call compute_advantages\(\) first"):
        next(iter(training.minibatches()))
    with pytest.raises(api.PhaseOrderError, match=r"call train_minibatch\(minibatch\) first"):
        training.optimize_step()
    training.compute_advantages()
    before = [p.detach().clone() for p in training.policy.parameters()]
    for minibatch in training.minibatches():
        loss = training.train_minibatch(minibatch)
        assert loss.requires_grad
        training.optimize_step()
    assert any(not torch.equal(a, b) for a, b in zip(before, training.policy.parameters()))
    assert set(training.metrics()) >= {"policy_loss", "value_loss", "entropy", "approx_kl", "explained_variance"}
    assert "grad/global_norm" in training.gradient_stats()
    assert "monitor/rss_mb" in training.system_monitor.sample() or training.system_monitor.sample()

    # checkpoints in fit's formats: the artifact loads with load_policy; the state restores weights and Adam
    from metta_lightning.checkpoint import check_training_state, load_policy

    training.save_checkpoint(str(tmp_path / "api:v1.mpt"))
    training.save_checkpoint(str(tmp_path / "api:v1.ckpt"))
    assert check_training_state(str(tmp_path / "api:v1.ckpt"))
    loaded = load_policy(str(tmp_path / "api:v1.mpt"))
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in training.policy.state_dict().items())
    other = api.TrainingComponents.create(env, api.make_policy("FeedForward", env, channels=8, hidden_size=16), cfg)
    other.load_checkpoint(str(tmp_path / "api:v1.ckpt"))
    assert other.agent_steps == training.agent_steps == 128
    assert all(torch.equal(v, other.policy.state_dict()[k]) for k, v in training.policy.state_dict().items())
    assert other.optimizer.state_dict()["state"].keys() == training.optimizer.state_dict()["state"].keys()
    result = training.evaluate(episodes=2)
    assert "eval/train/score" in result.log_dict("eval")
    training.close()


@pytest.mark.parametrize("script,args,expect", [
    ("api_hand_loop.py", ["--rollouts", "2"], "saved"),
    ("api_train.py", ["--max-epochs", "1", "--rollouts-per-epoch", "2"], "run folder"),
])
def test_examples_run(tmp_path, script, args, expect):
    env = {"PATH": "/usr/bin:/bin", "WANDB_MODE": "offline", "METTA_DATA_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args, "--out", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert expect in proc.stdout
