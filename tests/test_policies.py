"""Every policy: acting step by step equals training over a sequence, carried state equals a longer segment;
the ViT is a set encoder over tokens; the transformer's memory is cleared at episode starts; the new
policies train from the CLI, load from their artifacts and resume bit-identically."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import models
from envs import presets
from envs.info import EnvInfo
from metta_lightning.checkpoint import load_policy
from metta_lightning.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")

# Small sizes keep these tests to seconds; the structure is the defaults'.
SMALL = {
    "FeedForward": {"channels": 8, "hidden_size": 32},
    "Fast": {"cnn_channels": 16, "hidden_size": 32, "critic_hidden": 32, "actor_hidden": 32},
    "ViT": {"latent_dim": 32, "num_latents": 4, "hidden_size": 32, "actor_hidden": 32, "critic_hidden": 32,
            "cross_layers": 2, "self_layers": 1},
    "Transformer": {"latent_dim": 32, "num_latents": 4, "model_dim": 16, "memory": 3, "layers": 2,
                    "actor_hidden": 32, "critic_hidden": 32},
}


@pytest.fixture(scope="module")
def env_info() -> EnvInfo:
    return EnvInfo.from_config(presets.resolve_game("arena_basic_easy_shaped", None))


def random_obs(env_info: EnvInfo, *lead: int, seed: int = 0, valid: int = 60) -> torch.Tensor:
    """uint8 tokens `[*lead, tokens, 3]`: `valid` random in-view tokens (distinct cells per feature), then padding."""
    g = torch.Generator().manual_seed(seed)
    n = int(torch.Size(lead).numel())
    obs = torch.full((n, env_info.num_tokens, 3), 0xFF, dtype=torch.uint8)
    cells = env_info.obs_height * env_info.obs_width
    for i in range(n):
        cell = torch.randperm(cells, generator=g)[:valid]
        row, col = cell // env_info.obs_width, cell % env_info.obs_width
        obs[i, :valid, 0] = (row << 4 | col).to(torch.uint8)
        obs[i, :valid, 1] = torch.randint(0, len(env_info.feature_names), (valid,), generator=g).to(torch.uint8)
        obs[i, :valid, 2] = torch.randint(0, 30, (valid,), generator=g).to(torch.uint8)
    return obs.view(*lead, env_info.num_tokens, 3)


def build(name: str, env_info: EnvInfo, seed: int = 0) -> models.Policy:
    torch.manual_seed(seed)
    return getattr(models, name)(env_info, **SMALL[name]).eval()


def starts(b: int, t: int) -> torch.Tensor:
    """is_init `[B, T]`: all rows start at t=0; row 1 starts again at t=3, row 2 at t=5."""
    is_init = torch.zeros(b, t, dtype=torch.bool)
    is_init[:, 0] = True
    is_init[1, 3] = True
    is_init[2, 5] = True
    return is_init


@pytest.mark.parametrize("name", list(SMALL))
def test_forward_step_t_times_equals_forward_sequence(env_info, name):
    """Acting (one step at a time, the state handed on; the rollout actor's zeroing at episode starts) gives
    what training computes over the whole sequence: logits, values and final state."""
    policy = build(name, env_info)
    b, t = 4, 8
    obs, is_init = random_obs(env_info, b, t), starts(b, t)
    with torch.no_grad():
        seq = policy.forward_sequence(obs, policy.initial_state(b), is_init)
        state = policy.initial_state(b)
        logits, values = [], []
        for i in range(t):
            if state is not None:  # what RolloutActor does before each step
                state = state * (~is_init[:, i]).view(-1, *([1] * (state.dim() - 1))).to(state.dtype)
            out = policy.forward_step(obs[:, i], state, is_init[:, i])
            logits.append(out["logits"])
            values.append(out["values"])
            state = out.get("state", None)
    torch.testing.assert_close(torch.stack(logits, 1), seq["logits"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.stack(values, 1), seq["values"], atol=1e-5, rtol=1e-4)
    assert seq["features"].shape[:2] == (b, t)
    if policy.is_recurrent:
        torch.testing.assert_close(state, seq["state"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", list(SMALL))
def test_two_segments_with_carried_state_equal_one_twice_as_long(env_info, name):
    """A BPTT segment that starts from the state the previous one ended with (as the rollout stores it)
    equals one segment of both lengths, across an episode start inside either half."""
    policy = build(name, env_info)
    b, t = 4, 12
    obs, is_init = random_obs(env_info, b, t, seed=1), starts(b, t)
    is_init[3, 7] = True
    with torch.no_grad():
        whole = policy.forward_sequence(obs, None, is_init)
        first = policy.forward_sequence(obs[:, :6], None, is_init[:, :6])
        second = policy.forward_sequence(obs[:, 6:], first.get("state", None), is_init[:, 6:])
    torch.testing.assert_close(torch.cat([first["logits"], second["logits"]], 1), whole["logits"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.cat([first["values"], second["values"]], 1), whole["values"], atol=1e-5, rtol=1e-4)
    if policy.is_recurrent:
        torch.testing.assert_close(second["state"], whole["state"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["ViT", "Transformer"])
def test_token_policies_are_set_encoders(env_info, name):
    """Permuting the tokens (valid ones among themselves and among padding) or adding padding tokens leaves
    the output unchanged; a token of a feature the policy does not know is ignored."""
    policy = build(name, env_info)
    b = 5
    obs = random_obs(env_info, b, seed=2)
    is_init = torch.ones(b, dtype=torch.bool)
    with torch.no_grad():
        ref = policy.forward_step(obs, None, is_init)
        g = torch.Generator().manual_seed(0)
        permuted = torch.stack([o[torch.randperm(o.shape[0], generator=g)] for o in obs])
        padded = torch.cat([obs, torch.full((b, 50, 3), 0xFF, dtype=torch.uint8)], dim=1)
        unknown = obs.clone()
        unknown[:, 60] = torch.tensor([0x23, len(env_info.feature_names) + 3, 7], dtype=torch.uint8)
        for other in (permuted, padded, unknown):
            out = policy.forward_step(other, None, is_init)
            torch.testing.assert_close(out["logits"], ref["logits"], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(out["values"], ref["values"], atol=1e-5, rtol=1e-4)
        # and it does read the tokens
        assert not torch.allclose(policy.forward_step(random_obs(env_info, b, seed=3), None, is_init)["logits"],
                                  ref["logits"])
        # an observation with no valid token at all is defined (no NaN from an empty attention)
        empty = policy.forward_step(torch.full_like(obs, 0xFF), None, is_init)
        assert torch.isfinite(empty["logits"]).all() and torch.isfinite(empty["values"]).all()


def test_transformer_memory_is_cleared_at_an_episode_start(env_info):
    """After an episode start a row's outputs do not depend on anything before it, and its memory holds
    only steps of the new episode; without a start the past does matter."""
    policy = build("Transformer", env_info)
    b, t = 2, 6
    obs = random_obs(env_info, b, t, seed=4)
    other_past = random_obs(env_info, b, t, seed=5)
    is_init = torch.zeros(b, t, dtype=torch.bool)
    is_init[:, 0] = True
    with torch.no_grad():
        fresh = policy.forward_sequence(obs, None, is_init)
        for past in (obs, other_past):
            state = policy.forward_sequence(past, None, is_init)["state"]
            assert (state[..., -1] == 1).all()  # a full memory of valid steps
            again = policy.forward_sequence(obs, state, is_init)  # starts an episode at t=0
            torch.testing.assert_close(again["logits"], fresh["logits"], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(again["state"], fresh["state"], atol=1e-5, rtol=1e-4)
        # a start at t=4: only steps 4 and 5 are left in the memory (K=3 slots: one empty)
        mid = is_init.clone()
        mid[:, 4] = True
        out = policy.forward_sequence(obs, None, mid)
        assert out["state"][..., -1].tolist() == [[0.0, 1.0, 1.0]] * b
        assert (out["state"][:, 0] == 0).all()
        tail = policy.forward_sequence(obs[:, 4:], None, mid[:, 4:])
        torch.testing.assert_close(out["logits"][:, 4:], tail["logits"], atol=1e-5, rtol=1e-4)
        # without the start, the memory changes the outputs
        carried = policy.forward_sequence(obs, policy.forward_sequence(other_past, None, is_init)["state"],
                                          torch.zeros(b, t, dtype=torch.bool))
        assert not torch.allclose(carried["logits"], fresh["logits"])


def test_default_sizes(env_info):
    """The defaults are the small CPU sizes the configs and README quote."""
    vit, trf = models.ViT(env_info), models.Transformer(env_info)
    assert 0.1e6 < sum(p.numel() for p in vit.parameters()) < 0.3e6
    assert 0.1e6 < sum(p.numel() for p in trf.parameters()) < 0.3e6
    assert trf.initial_state(3).shape == (3, 16, 2 * 32 + 1)


@pytest.mark.parametrize("name", ["ViT", "Transformer"])
def test_cli_smoke_trains_and_the_artifact_loads(tmp_path, monkeypatch, name):
    """A few rollouts of configs/smoke.yaml with the policy from the CLI; the artifact rebuilds it and acts
    exactly as the trained module does."""
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", SMOKE, "--model.policy", f"models.{name}", "--trainer.logger", "false",
            "--trainer.callbacks+=callbacks.PolicyCheckpoint", "--trainer.callbacks.epoch_interval", "1",
            "--trainer.default_root_dir", str(tmp_path / "run")]
    for k, v in SMALL[name].items():
        args += [f"--model.policy.init_args.{k}", str(v)]
    cli = main(args)
    assert type(cli.model.policy).__name__ == name and cli.model.agent_steps == 3 * 128
    folder = tmp_path / "run"
    artifacts = sorted(folder.rglob("*.mpt"))
    assert artifacts, list(folder.rglob("*"))
    policy = load_policy(str(artifacts[-1]))
    assert type(policy).__name__ == name and policy.init_args == cli.model.policy.init_args
    obs = random_obs(cli.datamodule.env_info, 3, seed=6)
    is_init = torch.ones(3, dtype=torch.bool)
    with torch.no_grad():
        a = policy.forward_step(obs, None, is_init)
        b = cli.model.policy.eval().forward_step(obs, None, is_init)
    assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["values"], b["values"])
    for p in cli.model.policy.parameters():
        assert torch.isfinite(p).all()


def test_vit_resumes_bit_identically(tmp_path):
    """As tests/test_resume.py does for the default policy: 4 epochs straight == 2 epochs, then
    `--ckpt_path last` for 2 more, bit for bit on CPU (exact_resume), with the ViT."""
    import yaml

    def fit(folder: Path, epochs: int, *extra: str):
        cfg = {"trainer": {"max_epochs": epochs, "default_root_dir": str(folder / "vr"), "logger": False,
                           "callbacks": [{"class_path": "callbacks.checkpoint.PolicyCheckpoint",
                                          "init_args": {"epoch_interval": 1, "keep_states": 0, "exact_resume": True}}]},
               "model": {"policy": {"class_path": "models.ViT", "init_args": SMALL["ViT"]}},
               "data": {"rollouts_per_epoch": 1}}
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"vr-{epochs}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return main(["fit", "--config", SMOKE, "--config", str(path), *extra])

    straight = fit(tmp_path / "a", 4)
    fit(tmp_path / "b", 2)
    resumed = fit(tmp_path / "b", 4, "--ckpt_path", "last")
    assert resumed.model.agent_steps == straight.model.agent_steps
    for (name, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), name
