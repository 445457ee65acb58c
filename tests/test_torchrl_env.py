"""MettaGridEnv: TorchRL specs, reset masks, copies out of the engine, terminated vs truncated."""

import torch
from torchrl.envs.utils import check_env_specs

from envs import presets
from envs.torchrl_env import MettaGridEnv
from metta_lightning.module import summarize_episode_stats

ROOM = ["#######",
        "#@...m#",
        "#..n..#",
        "#_..@.#",
        "#######"]


def make_env(num_envs=3, **overrides):
    overrides.setdefault("max_steps", 7)
    return MettaGridEnv(presets.ascii(ROOM, **overrides), num_envs=num_envs, seed=1)


def test_specs_and_shapes():
    env = make_env()
    assert env.batch_size == torch.Size([6])  # 3 games x 2 agents
    check_env_specs(env)
    td = env.reset()
    assert td["observation"].dtype == torch.uint8 and td["observation"].shape == (6, 200, 3)
    assert td["is_init"].all()


def test_next_obs_is_next_step_obs_except_at_episode_ends():
    env = make_env()
    td = env.rollout(20, break_when_any_done=False)  # random actions; episodes of 7 steps
    done = td["next", "done"][..., 0]
    assert done.any() and not done.all()
    same = (td["next", "observation"][:, :-1] == td["observation"][:, 1:]).flatten(2).all(-1)
    assert same[~done[:, :-1]].all()
    # After an episode end the next obs is the new episode's first obs, flagged is_init.
    assert td["is_init"][:, 1:][done[:, :-1]].all()
    assert not td["is_init"][:, 1:][~done[:, :-1]].any()
    # Steps are copies, not views of the engine's buffers (which would make every step equal).
    assert not (td["observation"][:, 1] == td["observation"][:, 2]).all()
    assert (td["next", "done"] == td["next", "terminated"] | td["next", "truncated"]).all()


def test_terminated_and_truncated_are_kept_apart():
    env = make_env(episode_end="truncation")
    td = env.rollout(7, break_when_any_done=False)
    assert td["next", "truncated"][:, -1].all() and not td["next", "terminated"].any()
    env = make_env(episode_end="terminal")
    td = env.rollout(7, break_when_any_done=False)
    assert td["next", "terminated"][:, -1].all() and not td["next", "truncated"].any()


def test_partial_reset_only_resets_finished_games():
    env = make_env(num_envs=2)
    td = env.reset()
    td = env.rand_step(td)
    before = env.engine.current_step(1)
    mask = torch.tensor([True, True, False, False]).view(4, 1)  # game 0 only
    env.reset(td.set("_reset", mask))
    assert env.engine.current_step(0) == 0 and env.engine.current_step(1) == before


def test_episode_stats_are_drained_and_summarised():
    env = make_env(num_envs=2)
    env.rollout(7, break_when_any_done=False)
    episodes = env.episode_stats()
    assert len(episodes) == 2 and env.episode_stats() == []
    summary = summarize_episode_stats(episodes)
    assert "env_agent/heart.gained" in summary and "overview/reward" in summary
    assert any(k.startswith("env_game/") for k in summary)
