"""The Gymnasium, PettingZoo and PufferLib adapters over the real engine and the real libraries."""

from __future__ import annotations

import os
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import parallel_api_test

from envs import MettaGrid, presets
from envs.adapters import MettaGridGymEnv, MettaGridPettingZooEnv, render_rgb
from envs.adapters.common import COLORS

ONE_AGENT = ["#####", "#@.m#", "#.n_#", "#####"]
THREE_AGENTS = ["######", "#@.m@#", "#.n_.#", "#@...#", "######"]


def one_agent(max_steps=30):
    return presets.ascii(ONE_AGENT, max_steps=max_steps)


def three_agents(max_steps=40):
    return presets.ascii(THREE_AGENTS, max_steps=max_steps)


@pytest.fixture(scope="module")
def pufferlib():
    """PufferLib (pufferlib-core, installed with --no-deps by the README's test line). Under CI a missing
    install fails these tests instead of skipping them."""
    if os.environ.get("CI"):
        import pufferlib
        import pufferlib.vector

        return pufferlib
    pl = pytest.importorskip("pufferlib")
    import pufferlib.vector  # noqa: F401

    return pl


def random_actions(rng, n, num_actions, steps):
    return rng.integers(0, num_actions, size=(steps, n)).astype(np.int32)


# ------------------------------------------------------------------------------------------ Gymnasium


def test_gym_passes_check_env():
    env = gymnasium.make("metta_lightning/MettaGrid-v0", config=one_agent(), render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        check_env(env.unwrapped)
    assert env.observation_space == gymnasium.spaces.Box(0, 255, (200, 3), np.uint8)
    assert env.action_space == gymnasium.spaces.Discrete(len(one_agent().action_names))


def test_gym_matches_raw_env_across_episodes():
    cfg = one_agent(max_steps=12)
    raw = MettaGrid(cfg, num_envs=1, seed=5, auto_reset=False)
    raw.reset()
    env = MettaGridGymEnv(cfg, seed=5)
    obs, info = env.reset()
    assert info == {"seed": 5, "episode": 0}
    np.testing.assert_array_equal(obs, raw.observations[0])
    acts = random_actions(np.random.default_rng(0), 1, env.action_space.n, 30)
    episodes = 0
    for a in acts:
        o, r, term, trunc, info = env.step(int(a[0]))
        ro, rr, rt, rtr = raw.step(a)
        np.testing.assert_array_equal(o, ro[0])
        assert r == float(rr[0]) and term == bool(rt[0]) and trunc == bool(rtr[0])
        assert isinstance(r, float) and isinstance(term, bool)
        if term or trunc:
            episodes += 1
            stats = info["episode_stats"]
            assert stats["steps"] == 12 and stats["episode"] == episodes - 1
            assert "ore_red.gained" in stats["agent"] and "objects.wall" in stats["game"]
            obs, info = env.reset()
            raw.reset_games(np.ones(1, dtype=bool))
            assert info == {"seed": 5, "episode": episodes}
            np.testing.assert_array_equal(obs, raw.observations[0])
        else:
            assert "episode_stats" not in info
    assert episodes == 2


def test_gym_seeded_reset_replays_the_episode():
    env = MettaGridGymEnv(one_agent())
    first, _ = env.reset(seed=7)
    steps = [env.step(a)[0] for a in (1, 2, 3, 4)]
    again, info = env.reset(seed=7)
    assert info["seed"] == 7 and info["episode"] == 0
    np.testing.assert_array_equal(first, again)
    for a, o in zip((1, 2, 3, 4), steps):
        np.testing.assert_array_equal(env.step(a)[0], o)


def test_gym_bad_input():
    with pytest.raises(ValueError, match="single-agent games; this game has 3 agents"):
        MettaGridGymEnv(three_agents())
    with pytest.raises(ValueError, match="render_mode"):
        MettaGridGymEnv(one_agent(), render_mode="human")
    env = MettaGridGymEnv(one_agent(max_steps=3))
    with pytest.raises(gymnasium.error.ResetNeeded, match="reset\\(\\) before step"):
        env.step(0)
    with pytest.raises(ValueError, match="seed must be a non-negative int or None, got -1"):
        env.reset(seed=-1)
    env.reset(seed=0)
    n = env.action_space.n
    with pytest.raises(gymnasium.error.InvalidAction, match=f"action {n} is outside Discrete\\({n}\\)"):
        env.step(n)
    with pytest.raises(ValueError, match="outside Discrete"):
        env.step(-1)
    with pytest.raises(gymnasium.error.InvalidAction, match="must be an int"):
        env.step(np.array([1, 2]))
    with pytest.raises(gymnasium.error.InvalidAction, match="must be an int"):
        env.step(1.5)
    for _ in range(3):
        *_, term, trunc, _ = env.step(0)
    assert term or trunc
    with pytest.raises(gymnasium.error.ResetNeeded, match="after the episode ended"):
        env.step(0)
    env.reset()
    env.step(np.int64(1))  # numpy ints and 0-d arrays are fine
    env.step(np.array(2))


# ------------------------------------------------------------------------------------------ PettingZoo


def test_pettingzoo_passes_parallel_api_test():
    env = MettaGridPettingZooEnv(three_agents(), render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parallel_api_test(env, num_cycles=100)
    assert env.possible_agents == ["agent_0", "agent_1", "agent_2"]
    assert env.observation_space("agent_2") == gymnasium.spaces.Box(0, 255, (200, 3), np.uint8)


def test_pettingzoo_matches_raw_env_and_reports_stats():
    cfg = three_agents(max_steps=10)
    raw = MettaGrid(cfg, num_envs=1, seed=3, auto_reset=False)
    raw.reset()
    env = MettaGridPettingZooEnv(cfg, seed=3)
    obs, infos = env.reset()
    assert infos["agent_1"] == {"seed": 3, "episode": 0}
    for i, a in enumerate(env.possible_agents):
        np.testing.assert_array_equal(obs[a], raw.observations[i])
    acts = random_actions(np.random.default_rng(1), 3, env.num_actions, 10)
    for t, a in enumerate(acts):
        obs, rew, term, trunc, infos = env.step({f"agent_{i}": int(x) for i, x in enumerate(a)})
        ro, rr, rt, rtr = raw.step(a)
        for i, name in enumerate(env.possible_agents):
            np.testing.assert_array_equal(obs[name], ro[i])
            assert rew[name] == float(rr[i]) and term[name] == bool(rt[i]) and trunc[name] == bool(rtr[i])
    assert env.agents == [] and all(term[a] or trunc[a] for a in env.possible_agents)
    returns = [infos[a]["episode_stats"]["reward"] for a in env.possible_agents]
    assert infos["agent_0"]["episode_stats"]["steps"] == 10
    assert "action.noop.success" in infos["agent_2"]["episode_stats"]["agent"]
    assert returns == pytest.approx([float(x) for x in raw.episode_stats()[0]["reward"]])
    obs, infos = env.reset()  # the next episode of the stream
    raw.reset_games(np.ones(1, dtype=bool))
    assert infos["agent_0"]["episode"] == 1 and env.agents == env.possible_agents
    np.testing.assert_array_equal(obs["agent_0"], raw.observations[0])


def test_pettingzoo_bad_input():
    env = MettaGridPettingZooEnv(three_agents(max_steps=2))
    with pytest.raises(AssertionError, match="reset\\(\\) needs to be called before step"):
        env.step({})
    env.reset(seed=0)
    ok = {a: 0 for a in env.possible_agents}
    with pytest.raises(ValueError, match="must be a dict"):
        env.step([0, 0, 0])
    with pytest.raises(ValueError, match=r"missing actions for live agents \['agent_2'\]"):
        env.step({"agent_0": 0, "agent_1": 0})
    with pytest.raises(ValueError, match=r"unknown or finished agents \['agent_9'\]"):
        env.step({**ok, "agent_9": 0})
    with pytest.raises(ValueError, match="action 99 for agent_1 is outside Discrete"):
        env.step({**ok, "agent_1": 99})
    with pytest.raises(ValueError, match="action for agent_0 must be an int"):
        env.step({**ok, "agent_0": 1.5})
    with pytest.raises(KeyError, match="unknown agent 'agent_7'"):
        env.action_space("agent_7")
    env.step(ok)
    env.step(ok)
    assert env.agents == []
    with pytest.raises(AssertionError, match="episode has ended"):
        env.step(ok)


# ------------------------------------------------------------------------------------------ PufferLib


def test_puffer_matches_raw_env(pufferlib):
    from envs.adapters import MettaGridPufferEnv

    cfg = three_agents(max_steps=15)
    raw = MettaGrid(cfg, num_envs=2, seed=4)
    raw.reset()
    env = MettaGridPufferEnv(cfg, num_envs=2, seed=4)
    assert isinstance(env, pufferlib.PufferEnv)
    assert env.num_agents == 6 and env.single_action_space == gymnasium.spaces.Discrete(raw.num_actions)
    obs, infos = env.reset()
    assert obs is env.observations and infos == []
    np.testing.assert_array_equal(obs, raw.observations)
    finished = []
    for a in random_actions(np.random.default_rng(2), 6, raw.num_actions, 40):
        o, r, t, tr, infos = env.step(a)
        ro, rr, rt, rtr = raw.step(a)
        np.testing.assert_array_equal(o, ro)
        np.testing.assert_array_equal(r, rr)
        np.testing.assert_array_equal(t, rt)
        np.testing.assert_array_equal(tr, rtr)
        finished += infos
    assert len(finished) == 4  # 2 games x 2 finished episodes of 15 steps
    info = finished[0]
    assert info["episode_length"] == 15 and isinstance(info["episode_return"], float)
    flat = dict(pufferlib.unroll_nested_dict(info))
    assert "agent/heart.gained" in flat and "game/objects.wall" in flat


def test_puffer_vector_serial_steps_our_env(pufferlib):
    from envs.adapters import MettaGridPufferEnv

    vec = pufferlib.vector.make(MettaGridPufferEnv, env_kwargs={"config": three_agents(max_steps=8), "num_envs": 2},
                                backend=pufferlib.vector.Serial, num_envs=2, seed=10)
    assert vec.num_agents == 12
    obs, infos = vec.reset(seed=10)
    # Each of our envs writes straight into its slice of the backend's buffers.
    assert all(np.shares_memory(e.observations, vec.observations) for e in vec.envs)
    assert all(e.engine.observations is e.observations for e in vec.envs)
    twin = MettaGrid(three_agents(max_steps=8), num_envs=2, seed=11)  # the second env got seed 10 + 1
    twin.reset()
    np.testing.assert_array_equal(obs[6:], twin.observations)
    stats = []
    for a in random_actions(np.random.default_rng(3), 12, vec.driver_env.num_actions, 8):
        obs, rew, term, trunc, infos = vec.step(a)
        np.testing.assert_array_equal(obs[6:], twin.step(a[6:])[0])
        stats += infos
    assert term.all() and len(stats) == 4  # 2 envs x 2 games, all ended at step 8
    assert {s["episode_length"] for s in stats} == {8}
    vec.close()


def test_puffer_bad_input(pufferlib):
    from envs.adapters import MettaGridPufferEnv

    env = MettaGridPufferEnv(three_agents(), num_envs=2)
    with pytest.raises(pufferlib.APIUsageError, match="reset\\(\\) before step"):
        env.step(np.zeros(6, np.int32))
    env.reset(seed=1)
    with pytest.raises(pufferlib.APIUsageError, match=r"shape \(6,\) \(one per agent row\), got \(3,\)"):
        env.step(np.zeros(3, np.int32))
    with pytest.raises(pufferlib.APIUsageError, match="must be integers, got dtype float"):
        env.step(np.zeros(6, np.float32))
    bad = np.zeros(6, np.int64)
    bad[4] = env.num_actions
    with pytest.raises(pufferlib.APIUsageError, match=f"action {env.num_actions} at row 4 is outside"):
        env.step(bad)
    with pytest.raises(pufferlib.APIUsageError, match="num_envs must be a positive int"):
        MettaGridPufferEnv(three_agents(), num_envs=0)
    with pytest.raises(TypeError, match="must be an envs.GameConfig"):
        MettaGridPufferEnv({"num_agents": 3})


# ------------------------------------------------------------------------------------------ render


def test_render_returns_the_map_as_rgb():
    env = MettaGridGymEnv(one_agent(), render_mode="rgb_array", tile=4)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (4 * 4, 5 * 4, 3) and frame.dtype == np.uint8
    assert tuple(frame[0, 0]) == COLORS["wall"]          # the border
    assert tuple(frame[2 * 4 + 1, 3 * 4 + 1]) == COLORS["altar"]  # '_' at row 2, column 3
    assert tuple(frame[4 + 2, 4 + 2]) != COLORS[""]      # the agent at row 1, column 1
    pz = MettaGridPettingZooEnv(three_agents(), render_mode="rgb_array")
    pz.reset()
    np.testing.assert_array_equal(pz.render(), render_rgb(pz.engine, 0, 8))
    assert MettaGridPettingZooEnv(three_agents()).render() is None


# ------------------------------------------------------------------------------------------ PufferLib's trainer


def load_vs_pufferlib():
    """benchmarks/vs_pufferlib.py as a module (its torch advantage port and PufferLib policy wrapper)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "vs_pufferlib.py"
    spec = importlib.util.spec_from_file_location("vs_pufferlib", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_advantage_port_matches_the_recursion():
    import torch

    bench = load_vs_pufferlib()
    g = torch.Generator().manual_seed(0)
    values, rewards = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    dones = (torch.rand(5, 7, generator=g) < 0.2).float()
    ratio = torch.rand(5, 7, generator=g) * 2
    out = bench.puff_advantage(values, rewards, dones, ratio, torch.full((5, 7), 9.0), 0.9, 0.8, 1.0, 0.7)
    for s in range(5):
        acc = 0.0
        for t in range(5, -1, -1):
            live = 1.0 - dones[s, t + 1].item()
            delta = min(ratio[s, t].item(), 1.0) * (rewards[s, t + 1].item() + 0.9 * values[s, t + 1].item() * live
                                                    - values[s, t].item())
            acc = delta + 0.9 * 0.8 * min(ratio[s, t].item(), 0.7) * acc * live
            assert out[s, t].item() == pytest.approx(acc, abs=1e-5)
        assert out[s, 6].item() == 9.0  # the last step is left as it was


@pytest.mark.filterwarnings("ignore:In CPU autocast")
def test_pufferlib_trainer_drives_our_env(pufferlib, monkeypatch, tmp_path):
    """PufferLib's own PPO trainer (PuffeRL) collects from and trains on our env through the adapter."""
    import torch
    import pufferlib.vector

    from envs.adapters import MettaGridPufferEnv
    from envs.info import EnvInfo
    from models import Fast

    bench = load_vs_pufferlib()
    pufferl = bench.import_pufferl()
    monkeypatch.setattr(pufferl, "compute_puff_advantage", bench.puff_advantage)
    monkeypatch.setattr(pufferl.PuffeRL, "print_dashboard", lambda self, *a, **k: None)
    cfg = three_agents(max_steps=10)
    vec = pufferlib.vector.make(MettaGridPufferEnv, env_kwargs={"config": cfg, "num_envs": 2},
                                backend=pufferlib.vector.Serial, num_envs=1, seed=0)
    torch.manual_seed(0)
    policy = bench.PufferFast(Fast(EnvInfo.from_config(cfg), cnn_channels=8, hidden_size=16, critic_hidden=32,
                                   actor_hidden=32))
    hp = dict(bptt_horizon=8, minibatch_size=48, update_epochs=1, learning_rate=1e-3, adam_betas=(0.9, 0.999),
              adam_eps=1e-8, gamma=0.99, gae_lambda=0.95, vtrace_rho_clip=1.0, vtrace_c_clip=1.0, clip_coef=0.2,
              vf_clip_coef=0.2, vf_coef=0.5, ent_coef=0.01, max_grad_norm=0.5)
    trainer = pufferl.PuffeRL(bench.puffer_config(hp, 96, str(tmp_path), 0), vec, policy)
    try:
        before = [p.detach().clone() for p in policy.parameters()]
        stats = trainer.evaluate()
        assert trainer.global_step >= 96
        assert {"episode_return", "episode_length", "agent/heart.gained"} <= set(stats)
        assert set(stats["episode_length"]) == {10}
        trainer.train()
        assert all(torch.isfinite(p).all() for p in policy.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    finally:
        trainer.utilization.stop()
        vec.close()
