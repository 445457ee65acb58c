"""Curriculum: per-game configs in one batch (engine), the curricula, their state, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs import MettaGrid, presets
from envs.config import GameConfig
from envs.curriculum import (Bucketed, BucketedTasks, CurriculumConfig, LearningProgress, RandomTasks, SingleTask,
                             Task, TaskList)


def small_arena(**changes) -> GameConfig:
    """A 6-agent arena in two small rooms (fast), with `changes` (GameConfig fields) over it."""
    cfg = presets.arena(num_agents=6)
    cfg.map_builder = cfg.map_builder.model_copy(update={"rooms": (1, 2), "room_size": 9, "border": 2, "objects": {
        "wall": 3, "altar": 2, "mine_red": 3, "generator_red": 2, "lasery": 1, "armory": 1}})
    fields = cfg.model_dump()
    for path, value in changes.items():
        node = fields
        parts = path.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return GameConfig.model_validate(fields)


def variant() -> GameConfig:
    """Differs from small_arena() in everything a task may change: rewards, caps, converter stock, attack
    cost, episode length, the map's objects."""
    return small_arena(**{"agent.rewards": {"heart": 1.0, "ore_red": 0.5, "battery_red": 0.9},
                          "agent.reward_caps": {"ore_red": 2.0}, "objects.mine_red.initial_resource_count": 1,
                          "objects.altar.initial_resource_count": 1, "actions.attack.consumed_resources": {"laser": 100},
                          "max_steps": 37, "map_builder.objects": {"wall": 1, "altar": 1, "mine_red": 5,
                                                                   "generator_red": 3, "lasery": 0, "armory": 2}})


def run(env: MettaGrid, actions: np.ndarray):
    """Steps `env` through `actions` [steps, rows]; returns copies of obs, rewards, terminals per step."""
    out = []
    for a in actions:
        obs, rew, term, trunc = env.step(a)
        out.append((obs.copy(), rew.copy(), term.copy(), trunc.copy()))
    return out


# ---------------------------------------------------------------------------------------------------- engine
def test_games_with_different_configs_match_each_config_alone():
    base, other = small_arena(), variant()
    n, steps = 3, 90  # game 1 runs `other`; game 2 switches to it after its first episode
    rng = np.random.default_rng(0)
    actions = rng.integers(0, len(base.action_names), size=(steps, n * base.num_agents), dtype=np.int32)

    mixed = MettaGrid(base, num_envs=n, seed=5)
    slot = mixed.add_config(other)
    mixed.set_next_config(1, slot, task=7)
    mixed.reset()
    mixed.set_next_config(2, slot, task=7)  # from game 2's next episode on
    alone_base = MettaGrid(base, num_envs=n, seed=5)
    alone_other = MettaGrid(other, num_envs=n, seed=5)
    assert mixed.game_config(0) == (0, 0) and mixed.game_config(1) == (slot, 7)

    got, want_base, want_other = run(mixed, actions), run(alone_base, actions), run(alone_other, actions)
    A = base.num_agents
    rows = lambda g: slice(g * A, (g + 1) * A)  # noqa: E731
    for t in range(steps):
        for k in range(4):
            np.testing.assert_array_equal(got[t][k][rows(0)], want_base[t][k][rows(0)])
            np.testing.assert_array_equal(got[t][k][rows(1)], want_other[t][k][rows(1)])
    # Game 2 played `base` until its first episode ended (max_steps 1000 > 90: never), so it matches base.
    for t in range(steps):
        np.testing.assert_array_equal(got[t][0][rows(2)], want_base[t][0][rows(2)])
    assert any(r for _, _, term, _ in got for r in term[rows(1)])  # `other`'s 37-step episodes ended
    eps = mixed.episode_stats()
    assert {(e["env"], e["config"], e["task"]) for e in eps} == {(1, slot, 7)}
    assert eps[0]["steps"] == 37
    assert eps[0]["game"]["objects.mine_red"] == 2 * 5  # the variant's map: 5 mines per room
    assert mixed.current_step(1) == steps - 2 * 37


def test_a_finished_game_resets_into_a_new_config_without_rebuilding():
    base = small_arena(max_steps=10)
    other = small_arena(max_steps=4, **{"agent.rewards": {"heart": 1.0, "ore_red": 1.0}})
    env = MettaGrid(base, num_envs=2, seed=1)
    slot = env.add_config(other)
    env.set_next_config(0, slot, task=3)
    noop = np.zeros(env.num_rows, dtype=np.int32)
    for _ in range(10):
        env.step(noop)
    assert env.game_config(0) == (slot, 3) and env.game_config(1) == (0, 0)
    for _ in range(4):
        env.step(noop)
    lengths = sorted((e["env"], e["task"], e["steps"]) for e in env.episode_stats())
    assert lengths == [(0, 0, 10), (0, 3, 4), (1, 0, 10)]
    # a slot replaced while a game runs it: the game keeps the old config until its next reset
    env.set_config(slot, small_arena(max_steps=6))
    for _ in range(4):
        env.step(noop)
    assert [(e["env"], e["steps"]) for e in env.episode_stats()] == [(0, 4)]
    for _ in range(6):
        env.step(noop)
    assert [(e["env"], e["steps"]) for e in env.episode_stats()] == [(1, 10), (0, 6)]


def test_a_replay_of_a_game_on_another_slot_carries_that_slots_config_and_plays_again(tmp_path):
    from envs.replay import demonstration, load

    other = small_arena(max_steps=4, **{"agent.rewards": {"heart": 1.0, "ore_red": 1.0}})
    env = MettaGrid(small_arena(max_steps=10), num_envs=2, seed=1)
    env.set_next_config(1, env.add_config(other))
    recorder = env.record_replays([1], str(tmp_path))
    rng = np.random.default_rng(0)
    while len(recorder.paths) < 2:
        env.step(rng.integers(0, env.num_actions, env.num_rows).astype(np.int32))
    first, second = (load(p) for p in recorder.paths)
    assert GameConfig.model_validate(first["config"]).max_steps == 10  # episode 0 ran slot 0
    assert GameConfig.model_validate(second["config"]) == other and second["max_steps"] == 4
    assert demonstration(second).obs.shape[0] == 4


def test_incompatible_configs_are_refused_naming_what_differs():
    env = MettaGrid(small_arena(), num_envs=1)
    with pytest.raises(ValueError, match="agents per game"):
        env.add_config(presets.arena(num_agents=24))
    changed_actions = small_arena()
    changed_actions.actions.swap.enabled = True
    with pytest.raises(ValueError, match="actions"):
        env.add_config(changed_actions)
    with pytest.raises(ValueError, match="items"):
        env.add_config(small_arena(items=["ore_red", "battery_red", "heart", "armor", "laser", "blueprint",
                                          "ore_blue", "ore_green", "battery_blue", "battery_green"]))
    with pytest.raises(ValueError, match="observation"):
        env.add_config(small_arena(obs_width=9))
    # the engine refuses too (its own check, for callers that bypass MettaGrid)
    with pytest.raises(ValueError, match="number of agents"):
        env._core.add_config(presets.arena(num_agents=24).engine_spec())
    with pytest.raises(IndexError):
        env.set_next_config(0, 5)


# ---------------------------------------------------------------------------------------------------- curricula
@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_learning_progress_concentrates_on_the_rising_task(noise):
    """Eight tasks: task 3's score rises with practice, the others stay flat (never solved, or solved from
    the start). Flat scores give no progress, so all but the random-task rate goes to task 3; with noise on
    the scores the standardised sigmoid weights are soft (METTA-SPEC 4.2), but task 3 still leads clearly."""
    base = small_arena()
    tasks = TaskList([Task(i, f"t{i}", base) for i in range(8)])
    lp = LearningProgress(tasks, seed=0, num_active_tasks=8, ema_timescale=0.05)
    rng = np.random.default_rng(0)
    rising = 0.0
    counts = np.zeros(8)
    for step in range(4000):
        task = lp.sample()
        if step >= 2000:
            counts[task.id] += 1
        if task.id == 3:
            rising += 0.002
        score = rising if task.id == 3 else (0.0 if task.id % 2 else 2.0)
        lp.update(task.id, score + noise * rng.standard_normal())
    share = counts / counts.sum()
    others = np.delete(share, 3)
    if noise == 0:
        assert share[3] > 0.7 and others.max() < 0.05, share
    else:
        assert share[3] > others.max() + 0.08 and share[3] > 2 * others.mean(), share
    w = lp.weights()
    assert max(w, key=w.get) == 3
    assert lp.stats()["curriculum/sampling_entropy"] < np.log(8)


def test_learning_progress_pool_is_bounded_and_evicts_flat_tasks():
    gen = BucketedTasks(small_arena(), {"agent.rewards.ore_red": [0, 0.1, 0.5, 0.9, 1.0],
                                        "actions.attack.consumed_resources.laser": [1, 100]})
    assert gen.num_tasks == 10
    lp = LearningProgress(gen, seed=1, num_active_tasks=4, sample_threshold=3)
    seen = set()
    for _ in range(200):
        t = lp.sample()
        seen.add(t.id)
        lp.update(t.id, 1.0)
        assert len(lp.active) == 4
    assert lp.evictions > 0 and len(seen) > 4
    assert lp.stats()["curriculum/pool_size"] == 4


def test_state_dict_round_trips_and_continues_the_sequence():
    gen = BucketedTasks(small_arena(), {"agent.rewards.ore_red": [0, 0.5, 1.0], "max_steps": [50, 100]})
    for make in (lambda: LearningProgress(gen, seed=3, num_active_tasks=4, sample_threshold=2),
                 lambda: Bucketed(gen, seed=3),
                 lambda: RandomTasks([Task(0, "a", small_arena()), Task(1, "b", small_arena(max_steps=5))],
                                     weights=[1, 3], seed=3)):
        a = make()
        for i in range(30):
            t = a.sample()
            a.update(t.id, float(i % 7))
        buffer = __import__("io").BytesIO()
        torch.save(a.state_dict(), buffer)
        buffer.seek(0)
        b = make()
        b.load_state_dict(torch.load(buffer, weights_only=True))
        assert b.state_dict() == a.state_dict()
        for i in range(40):
            ta, tb = a.sample(), b.sample()
            assert ta.id == tb.id
            a.update(ta.id, float(i % 5))
            b.update(tb.id, float(i % 5))
        assert a.stats() == b.stats()


def test_random_tasks_follow_their_weights_and_single_task_is_one_game():
    a, b = small_arena(), small_arena(max_steps=5)
    r = RandomTasks([Task(0, "a", a), Task(1, "b", b)], weights=[1, 3], seed=0)
    ids = [r.sample().id for _ in range(2000)]
    assert 0.7 < np.mean(ids) < 0.8
    s = SingleTask(a)
    assert {s.sample().game.max_steps for _ in range(5)} == {a.max_steps}
    assert s.stats()["curriculum/sampling_entropy"] == 0.0
    with pytest.raises(ValueError, match="weights"):
        RandomTasks([Task(0, "a", a)], weights=[-1])


def test_bucketed_tasks_apply_every_combination():
    gen = BucketedTasks(small_arena(), {"agent.rewards.ore_red": [0, 0.5], "objects.altar.initial_resource_count": [0, 1],
                                        "agent.reward_caps.ore_red": [1, 2]})
    combos = {(t.game.agent.rewards.get("ore_red"), t.game.objects["altar"].initial_resource_count,
               t.game.agent.reward_caps["ore_red"]) for t in (gen.task(i) for i in range(gen.num_tasks))}
    assert len(combos) == 8
    assert gen.task(5).name == "agent.rewards.ore_red=0.5,objects.altar.initial_resource_count=0,agent.reward_caps.ore_red=2"


# ---------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("buckets, message", [
    ({"agent.rewardz.ore_red": [1]}, r"'agent.rewardz' does not exist"),
    ({"agent.rewards.ore_redd": [1]}, r"agent.rewards.ore_redd.*unknown item 'ore_redd'"),
    ({"agent.rewards.ore_red": ["lots"]}, r"agent.rewards.ore_red'\] = 'lots'.*valid number"),
    ({"objects.altar.initial_resource_count": [0.5]}, r"initial_resource_count'\] = 0.5"),
    ({"max_steps.limit": [1]}, r"'max_steps' is a value"),
    ({"map_builder.num_agents": [5]}, r"map_builder.num_agents'\] = 5.*agents per game"),
    ({"agent.rewards.ore_red": []}, r"at least one value"),
])
def test_bad_buckets_are_refused_naming_the_path(buckets, message):
    with pytest.raises(ValueError, match=message):
        CurriculumConfig(kind="learning_progress", buckets=buckets).build(small_arena())


def test_incompatible_tasks_are_refused_naming_the_task():
    cfg = CurriculumConfig(kind="random", tasks=[
        {"name": "plain"}, {"name": "glyphs", "overrides": {"actions": {"change_glyph": {"enabled": True}}}}])
    with pytest.raises(ValueError, match="task 'glyphs'.*actions"):
        cfg.build(small_arena())
    with pytest.raises(ValueError, match=r"tasks\[0\] \('bad'\).*max_steps"):
        CurriculumConfig(kind="random", tasks=[{"name": "bad", "overrides": {"max_steps": -3}}]).build(small_arena())
    with pytest.raises(ValueError, match="task 'b' cannot be trained with task 'a'"):
        TaskList([Task(0, "a", small_arena()), Task(1, "b", presets.arena())])


def test_torchrl_env_plays_the_curriculum_tasks_and_scores_them():
    from envs.torchrl_env import MettaGridEnv

    short, long = small_arena(max_steps=5), small_arena(max_steps=8)
    curriculum = RandomTasks([Task(0, "short", short), Task(1, "long", long)], seed=0)
    env = MettaGridEnv(short, num_envs=4, seed=0, curriculum=curriculum)
    env.rollout(40, break_when_any_done=False)
    episodes = env.episode_stats()
    assert episodes and {e["task_name"] for e in episodes} == {"short", "long"}
    assert all(e["steps"] == {"short": 5, "long": 8}[e["task_name"]] for e in episodes)
    assert curriculum.num_updates == len(episodes)
    assert curriculum.num_sampled == 4 + len(episodes)  # one per game at the start, one per reset


# ---------------------------------------------------------------------------------------------------- training
CURRICULUM = {"kind": "learning_progress", "num_active_tasks": 3, "sample_threshold": 2, "ema_timescale": 0.1,
              "buckets": {"agent.rewards.ore_red": [0, 0.5, 1.0], "max_steps": [5, 7],
                          "actions.attack.consumed_resources.laser": [1, 100]}}


def test_resumed_curriculum_run_continues_the_straight_runs_task_sequence(tmp_path):
    """fit 3 epochs straight == 2 epochs + `--ckpt_path last` for 1 more (exact_resume): the same curriculum
    state (RNG, pool, scores, counts) at every checkpoint, and the same weights."""
    from tests.test_resume import assert_same_training_state, fit, state

    curriculum = ["--data.curriculum", __import__("json").dumps(CURRICULUM)]
    straight = fit(tmp_path / "a", "cur", 3, *curriculum, rollouts=2)
    fit(tmp_path / "b", "cur", 2, *curriculum, rollouts=2)
    resumed = fit(tmp_path / "b", "cur", 3, "--ckpt_path", "last", *curriculum, rollouts=2)
    da, db = tmp_path / "a" / "cur" / "checkpoints", tmp_path / "b" / "cur" / "checkpoints"
    for e in (2, 3):
        sa, sb = state(da / f"cur:v{e}.ckpt"), state(db / f"cur:v{e}.ckpt")
        ca, cb = sa["RolloutDataModule"]["curriculum_by_rank"], sb["RolloutDataModule"]["curriculum_by_rank"]
        assert ca == cb, e
        assert_same_training_state(sa, sb)
    final = straight.datamodule.curriculum
    assert final.num_updates > 3 * 4 and final.evictions > 0
    assert resumed.datamodule.curriculum.state_dict() == final.state_dict()
    logged = (tmp_path / "a").rglob("metrics.csv")
    header = next(iter(logged)).read_text().splitlines()[0]
    assert "curriculum/pool_size" in header and "curriculum/sampling_entropy" in header
    assert "curriculum/score/max_steps=5" in header


def test_bad_curriculum_fails_before_training(tmp_path, capsys):
    from tests.test_resume import fit

    bad = {"kind": "bucketed", "buckets": {"agent.rewards.ore_red": [0], "objects.altarr.initial_resource_count": [1]}}
    with pytest.raises((ValueError, SystemExit)) as info:
        fit(tmp_path, "bad", 1, "--data.curriculum", __import__("json").dumps(bad))
    said = str(info.value) + capsys.readouterr().err
    assert "'objects.altarr' does not exist in the game config" in said
    assert not (tmp_path / "bad" / "checkpoints").exists() or not list((tmp_path / "bad" / "checkpoints").iterdir())


def test_python_api_takes_a_curriculum():
    from metta_lightning import api

    cur = {"kind": "random", "tasks": [{"name": "short", "overrides": {"max_steps": 6}},
                                       {"name": "long", "overrides": {"max_steps": 9}, "weight": 2}]}
    cfg = api.TrainerConfig(curriculum=cur)
    assert api.TrainerConfig.from_cli(cfg.to_cli()).curriculum == cfg.curriculum
    env = api.Environment(num_agents=4, width=12, height=12, num_envs=2, curriculum=cur)
    small = api.TrainerConfig(rollout=api.RolloutConfig(horizon=24), ppo=api.PPOConfig(bptt_horizon=8, minibatch_size=64))
    training = api.TrainingComponents.create(env, api.make_policy("FeedForward", env, channels=8, hidden_size=16), small)
    episodes = training.rollout().episodes
    assert {e["task_name"] for e in episodes} <= {"short", "long"} and episodes
    assert all(e["steps"] == {"short": 6, "long": 9}[e["task_name"]] for e in episodes)
    assert env.curriculum.num_updates == len(episodes)
    with pytest.raises(ValueError, match=r"curriculum.buckets\['agent.nope'\]"):
        api.Environment(curriculum={"kind": "bucketed", "buckets": {"agent.nope": [1]}})


@pytest.mark.slow
def test_ddp_ranks_have_their_own_curricula_and_merged_logs(tmp_path):
    """2 gloo ranks: each rank's curriculum is seeded by its rank (different task sequences), both states are
    in the .ckpt, and the logged counts are the sum over the ranks."""
    import json

    from tests.test_ddp import ddp_fit, logged_rows, write_cfg

    cfg = write_cfg(tmp_path, "cur_ddp", 1, "cur")
    done = ddp_fit(cfg, "--data.curriculum", json.dumps(CURRICULUM))
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = next((tmp_path / "ddp").rglob("*:v1.ckpt"))
    by_rank = torch.load(ckpt, weights_only=True)["RolloutDataModule"]["curriculum_by_rank"]
    assert len(by_rank) == 2 and by_rank[0]["rng"] != by_rank[1]["rng"]
    assert [a for a, _ in by_rank[0]["active"]] != [a for a, _ in by_rank[1]["active"]]
    last = [r for r in logged_rows(tmp_path, "cur_ddp") if r.get("curriculum/tasks_sampled")][-1]
    assert float(last["curriculum/tasks_sampled"]) == by_rank[0]["num_sampled"] + by_rank[1]["num_sampled"]
