"""The acting path: `Fast.forward_step` without grad (its one-step fast path) gives bitwise the outputs of the
generic length-1 sequence path, the token convolution equals the dense box + convolution within float
rounding, and a whole collected rollout (actions, log-probs, values, states) is bitwise unchanged."""

from __future__ import annotations

import numpy as np
import torch

import envs
from envs import presets
from envs.info import EnvInfo
from envs.torchrl_env import MettaGridEnv
from metta_lightning.data import RolloutActor, make_collector
from models import Fast
from models.base import Policy

GAME = presets.resolve_game("arena_basic_easy_shaped", None)
INFO = EnvInfo.from_config(GAME)


def engine_observations(steps: int = 30, num_envs: int = 2, seed: int = 0) -> torch.Tensor:
    """Real arena observations `[rows, tokens, 3]` after `steps` random actions."""
    engine = envs.MettaGrid(GAME, num_envs=num_envs, seed=seed)
    engine.reset()
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        engine.step(rng.integers(0, len(engine.action_names), engine.num_rows).astype(np.int32))
    return torch.from_numpy(engine.observations.copy())


def test_fast_acting_step_is_bitwise_the_sequence_path():
    torch.manual_seed(0)
    policy = Fast(INFO).eval()
    obs = engine_observations()
    state = torch.randn(obs.shape[0], 2, 2, 128)
    is_init = torch.rand(obs.shape[0]) < 0.3
    with torch.no_grad():
        fast = policy.forward_step(obs, state, is_init)
        generic = Policy.forward_step(policy, obs, state, is_init)
    assert set(fast.keys()) == set(generic.keys()) == {"logits", "values", "state", "features"}
    for key in generic.keys():
        assert torch.equal(fast[key], generic[key]), key
    # With grad the generic path runs (the fast path is for acting only), and agrees.
    with_grad = policy.forward_step(obs, state, is_init)
    assert with_grad["logits"].requires_grad
    assert torch.allclose(with_grad["logits"], fast["logits"], atol=1e-5)


def test_token_convolution_equals_box_and_convolution():
    torch.manual_seed(0)
    policy = Fast(INFO).eval()
    obs = engine_observations()
    # A token the policy cannot place (feature id past its features; a cell outside the window) adds nothing.
    obs[0, -1] = torch.tensor([0x23, 200, 7], dtype=torch.uint8)
    obs[1, -1] = torch.tensor([0xF2, 1, 9], dtype=torch.uint8)
    with torch.no_grad():
        dense = policy.cnn(policy.box(obs))
        sparse = policy._sparse_cnn(obs)
    assert torch.allclose(sparse, dense, atol=1e-5, rtol=1e-5)
    # With grad (training minibatches) the same function, and gradients reach the first convolution.
    sparse_grad = policy._sparse_cnn(obs)
    sparse_grad.sum().backward()
    assert torch.allclose(sparse_grad.detach(), dense, atol=1e-5, rtol=1e-5)
    assert policy.cnn[0].weight.grad is not None and policy.cnn[0].weight.grad.abs().sum() > 0


def collect(policy: Fast, generic: bool, rollouts: int = 2):
    """`rollouts` rollouts of 2 games x 16 steps with the policy's fast acting step, or the generic one."""
    if generic:
        policy.forward_step = lambda obs, state, is_init: Policy.forward_step(policy, obs, state, is_init)
    torch.manual_seed(1)
    env = MettaGridEnv(GAME.model_copy(update={"max_steps": 10}), num_envs=2, seed=3)
    collector = make_collector(env, RolloutActor(policy), env.batch_size[0] * 16, "cpu")
    out = [td.clone() for _, td in zip(range(rollouts), collector)]
    collector.shutdown()
    return out


def test_collected_rollouts_are_bitwise_unchanged():
    torch.manual_seed(0)
    policy = Fast(INFO)
    fast, generic = collect(policy, generic=False), collect(policy, generic=True)
    for a, b in zip(fast, generic):
        assert a["is_init"].any()  # episodes of 10 steps: the state is reset inside the rollout
        for key in ("action", "action_log_prob", "state_value", "recurrent_state", "observation"):
            assert torch.equal(a[key], b[key]), key


def test_bf16_mixed_precision_acts_and_trains_in_float32_tensors(tmp_path):
    """`trainer.precision=bf16-mixed` runs the acting step under the trainer's autocast too (so acting computes
    as training does); what the rollout stores and what the optimizer updates is float32."""
    import lightning as L

    from metta_lightning.cli import main

    cli = main(["--config", "configs/smoke.yaml", "--trainer.precision", "bf16-mixed", "--trainer.logger", "false",
                "--model.policy", "models.Fast", "--model.policy.init_args",
                '{"hidden_size": 32, "critic_hidden": 32, "actor_hidden": 32, "cnn_channels": 16}',
                "--trainer.default_root_dir", str(tmp_path)], run=False, save_config_callback=None)
    policy = cli.model.policy
    steps, rollouts = [], []
    step = policy.forward_step

    def spy_step(obs, state, is_init):
        out = step(obs, state, is_init)
        steps.append((torch.is_autocast_enabled("cpu"), {v.dtype for v in out.values()}))
        return out

    class RolloutDtypes(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            rollouts.append({k: batch.data[k].dtype for k in ("action_log_prob", "state_value", "recurrent_state")})

    policy.forward_step = spy_step
    cli.trainer.callbacks.append(RolloutDtypes())
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert steps and all(autocast and torch.bfloat16 in dtypes for autocast, dtypes in steps)
    assert rollouts and all(set(r.values()) == {torch.float32} for r in rollouts)
    after = policy.state_dict()
    assert all(v.dtype == torch.float32 for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)
