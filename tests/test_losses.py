"""Losses, prioritized sampling and optimizers: each loss trains what it should, the kickstarter's KL against
itself is 0, GRPO's advantages by hand, prioritized sampling's edge cases, Muon's near-orthogonal update,
exact resume with Muon + prioritized sampling + a loss head + imitation from replays, and bad input named before
training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from metta_lightning import api, ppo
from metta_lightning.losses import Kickstarter, LossError, build_losses
from metta_lightning.optimizers import build_optimizers, muon_split

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
FAST = {"cnn_channels": 8, "hidden_size": 16, "critic_hidden": 16, "actor_hidden": 16}


def _training(losses, policy=None, prio_alpha=0.0, seed=0, env=None):
    torch.manual_seed(seed)
    env = env or api.Environment(num_agents=4, width=12, height=12, num_envs=2, seed=seed)
    policy = policy or api.make_policy("Fast", env, **FAST)
    cfg = api.TrainerConfig(rollout=api.RolloutConfig(horizon=16),
                            ppo=api.PPOConfig(bptt_horizon=8, minibatch_size=64, losses=losses, prio_alpha=prio_alpha))
    return api.TrainingComponents.create(env, policy, cfg)


def _grads_of_one_minibatch(training):
    training.rollout()
    training.compute_advantages()
    mb = next(iter(training.minibatches()))
    loss = training.train_minibatch(mb)
    loss.backward()
    named = dict(training.policy.named_parameters())
    named.update({f"loss_modules.{k}": p for k, p in training.losses.modules.named_parameters()})
    return {k: p.grad is not None and bool(p.grad.abs().sum() > 0) for k, p in named.items()}


HEADS = ("critic.", "actor.", "action_embeddings", "actor_bilinear", "actor_bias")


@pytest.mark.parametrize("losses,moved,still", [
    (None, ("cnn.", "encoder.", "lstm.", "critic.", "actor.", "actor_bilinear"), ()),
    ([{"name": "grpo"}], ("cnn.", "lstm.", "actor.", "actor_bilinear", "action_embeddings"), ("critic.",)),
    ([{"name": "contrastive", "args": {"k": 2}}], ("encoder.", "lstm.", "loss_modules.contrastive."), HEADS),
    ([{"name": "dynamics"}], ("encoder.", "lstm.", "loss_modules.dynamics."), HEADS),
    ([{"name": "kickstarter"}], ("encoder.", "lstm.", "critic.", "actor."), ()),
    ([{"name": "action_supervised"}], ("encoder.", "lstm.", "actor."), ("critic.",)),
])
def test_each_loss_moves_what_it_should_and_nothing_else(losses, moved, still):
    env = api.Environment(num_agents=4, width=12, height=12, num_envs=2, seed=0)
    teachers = None
    if losses and losses[0]["name"] in ("kickstarter", "action_supervised"):
        torch.manual_seed(5)
        teachers = {losses[0]["name"]: api.make_policy("FeedForward", env, channels=8, hidden_size=16)}
    policy = api.make_policy("Fast", env, **FAST)
    training = _training(None if teachers else losses, policy=policy, env=env)
    if teachers:  # a teacher given as an object instead of args.teacher_uri
        training.losses = build_losses(losses, env.env_info, policy, teachers=teachers)
    grads = _grads_of_one_minibatch(training)
    for prefix in moved:
        hits = [v for k, v in grads.items() if k.startswith(prefix)]
        assert hits and any(hits), prefix
    for prefix in still:
        hits = [v for k, v in grads.items() if k.startswith(prefix)]
        assert hits and not any(hits), (prefix, [k for k, v in grads.items() if k.startswith(prefix) and v])
    if losses and losses[0]["name"] in ("contrastive", "dynamics"):  # heads are trained by the optimizer
        head = next(training.losses.modules.parameters())
        assert any(head is p for o in training.optimizers for g in o.param_groups for p in g["params"])


def test_kickstarter_with_the_student_as_teacher_has_zero_kl():
    """Feed-forward, so the teacher sees exactly what the student sees (a recurrent teacher restarts each
    segment from its initial state, and Fast's no-grad path rounds differently)."""
    env = api.Environment(num_agents=4, width=12, height=12, num_envs=2, seed=0)
    policy = api.make_policy("FeedForward", env, channels=8, hidden_size=16)
    training = _training(None, policy=policy, env=env)
    training.losses = build_losses([{"name": "kickstarter"}], env.env_info, policy, teachers={"kickstarter": policy})
    training.rollout()
    training.compute_advantages()
    for mb in training.minibatches():
        loss = training.train_minibatch(mb)
        assert float(loss) == 0.0
    m = training.metrics()
    assert m["kickstarter/kl"] == 0.0 and m["kickstarter/value_loss"] == 0.0
    assert "policy_loss" not in m  # kickstarter alone: no PPO term
    training.close()


def test_kickstarter_coefficient_anneals_to_zero():
    env = api.Environment(num_agents=2, width=8, height=8, num_envs=1)
    policy = api.make_policy("FeedForward", env, channels=4, hidden_size=8)
    k = Kickstarter(env.env_info, "kickstarter", teacher=policy, anneal_agent_steps=1000)
    assert [k.coefficient_scale(s) for s in (0, 250, 1000, 5000)] == [1.0, 0.75, 0.0, 0.0]


def test_grpo_advantages_equal_a_hand_computation():
    rewards = torch.tensor([[0., 1., 0., 2.], [1., 0., 0., 0.], [0., 0., 3., 0.], [0., 1., 1., 1.]])
    done = torch.tensor([[0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    gamma = 0.5
    g = torch.zeros(4, 4)
    for r in range(4):
        acc = 0.0
        for t in reversed(range(4)):
            acc = rewards[r, t].item() + (0.0 if done[r, t] else gamma * acc)
            g[r, t] = acc
    assert torch.allclose(ppo.returns_to_go(rewards, done, gamma), g)
    groups = torch.tensor([0, 0, 1, 1])
    expect = torch.empty(4, 4)
    for gid in (0, 1):
        x = g[groups == gid]
        expect[groups == gid] = (x - x.mean()) / (x.std() + 1e-8)
    assert torch.allclose(ppo.group_relative_advantages(rewards, done, gamma, groups), expect)
    one = ppo.group_relative_advantages(rewards, done, gamma, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(one, (g - g.mean()) / (g.std() + 1e-8))


def test_prioritized_sampling_alpha_zero_is_uniform_and_beta_one_undoes_the_bias():
    adv = torch.randn(12, 8, generator=torch.Generator().manual_seed(0)) * torch.arange(1, 13).view(-1, 1)
    uniform = ppo.segment_priorities(adv, 0.0)
    assert torch.equal(uniform, torch.full((12,), 1 / 12))
    assert torch.equal(ppo.importance_weights(uniform, torch.arange(12), 0.4), torch.ones(12))
    probs = ppo.segment_priorities(adv, 0.8)
    assert torch.allclose(probs, adv.abs().mean(1) ** 0.8 / (adv.abs().mean(1) ** 0.8).sum())
    f = torch.randn(12, dtype=torch.float64)
    w = ppo.importance_weights(probs.double(), torch.arange(12), 1.0)
    assert torch.allclose((probs.double() * w * f).sum(), f.mean(), atol=1e-12)  # E_P[w f] = uniform mean
    # alpha 0 in training keeps today's shuffle: the same minibatches as prio_alpha absent
    a, b = _training(None, prio_alpha=0.0), _training(None)
    for t in (a, b):
        t.rollout()
        t.compute_advantages()
    torch.manual_seed(1)
    ia = [mb.index for mb in a.minibatches()]
    torch.manual_seed(1)
    ib = [mb.index for mb in b.minibatches()]
    assert all(torch.equal(x, y) for x, y in zip(ia, ib)) and len(ia) == len(ib)
    c = _training(None, prio_alpha=1.0)
    c.rollout()
    c.compute_advantages()
    mbs = list(c.minibatches())
    assert len(mbs) == len(ia) and all(mb.weights is not None and mb.weights.shape == mb.index.shape for mb in mbs)
    for t in (a, b, c):
        t.close()


def test_muon_update_of_a_2d_weight_is_close_to_orthogonal():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(32, 32))
    u, _, v = torch.linalg.svd(torch.randn(32, 32))
    grad = u @ torch.diag(torch.logspace(0, -2, 32)) @ v  # condition number 100
    opt = torch.optim.Muon([w], lr=1.0, weight_decay=0.0, momentum=0.0, nesterov=False)
    before = w.detach().clone()
    w.grad = grad
    opt.step()
    s = torch.linalg.svdvals(before - w.detach())
    assert s.min() > 0.6 and s.max() < 1.2, s  # the gradient's spread (1 .. 0.01) is gone
    delta = (before - w.detach()) / s.mean()
    assert (delta @ delta.T - torch.eye(32)).abs().max() < 0.35


def test_muon_split_puts_hidden_matrices_on_muon_and_the_rest_on_adam():
    env = api.Environment(num_agents=2, width=8, height=8, num_envs=1)
    fast = api.make_policy("Fast", env, cnn_channels=8, hidden_size=24, critic_hidden=32, actor_hidden=32)
    muon, adam = muon_split(fast, env.env_info.num_actions)
    names = {n for n, _ in muon}
    assert {"encoder.0.weight", "encoder.2.weight", "lstm.weight_ih_l0", "critic.0.weight", "actor.0.weight"} <= names
    assert not names & {"action_embeddings.weight", "actor_bilinear", "critic.2.weight", "cnn.0.weight"}
    assert all(p.ndim == 2 for _, p in muon) and len(muon) + len(adam) == len(list(fast.parameters()))
    opts = build_optimizers(fast, [], "muon", 1e-3, (0.9, 0.999), 1e-8, num_actions=env.env_info.num_actions)
    assert [type(o).__name__ for o in opts] == ["Muon", "Adam"]
    ff = api.make_policy("FeedForward", env, channels=4, hidden_size=8)
    assert {n for n, _ in muon_split(ff, env.env_info.num_actions)[0]} == {"trunk.0.weight", "trunk.2.weight"}


def _smoke_replays(folder):
    """Replays of smoke.yaml's game (random actions), for the replay-imitation loss."""
    import numpy as np

    from envs import MettaGrid
    from envs.presets import resolve_game

    data = yaml.safe_load(open(SMOKE))["data"]
    env = MettaGrid(resolve_game(data["game"], data["game_overrides"]), num_envs=1, seed=4)
    recorder = env.record_replays([0], str(folder))
    rng = np.random.default_rng(4)
    while len(recorder.paths) < 2:
        env.step(rng.integers(0, env.num_actions, env.num_rows).astype(np.int32))
    return str(folder)


def _fit(tmp_path, run, max_epochs, *extra):
    from metta_lightning.cli import main

    replays = tmp_path / "replays"
    if not replays.exists():
        _smoke_replays(replays)
    cfg = {"trainer": {"max_epochs": max_epochs, "default_root_dir": str(tmp_path / run), "callbacks": [{
        "class_path": "callbacks.checkpoint.PolicyCheckpoint",
        "init_args": {"epoch_interval": 1, "keep_states": 0, "exact_resume": True}}]},
        "model": {"optimizer_type": "muon", "prio_alpha": 0.6, "prio_beta0": 0.4, "prio_beta_agent_steps": 1000,
                  "losses": [{"name": "ppo"}, {"name": "contrastive", "coef": 0.1, "args": {"k": 2}},
                             {"name": "action_supervised", "coef": 0.2, "args": {"replays": str(replays)}}]}}
    path = tmp_path / f"{run}-{max_epochs}.yaml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return main(["fit", "--config", SMOKE, "--config", str(path), "--trainer.logger.init_args.save_dir",
                 str(tmp_path / "logs"), *extra])


def test_resume_with_muon_prioritized_sampling_a_loss_head_and_replays_is_bit_identical(tmp_path):
    straight = _fit(tmp_path / "a", "mu", 3)
    _fit(tmp_path / "b", "mu", 2)
    resumed = _fit(tmp_path / "b", "mu", 3, "--ckpt_path", "last")
    assert resumed.model.agent_steps == straight.model.agent_steps
    load = lambda p: torch.load(p, map_location="cpu", weights_only=True)  # noqa: E731
    a, b = load(tmp_path / "a" / "mu" / "checkpoints" / "mu:v3.ckpt"), load(tmp_path / "b" / "mu" / "checkpoints" / "mu:v3.ckpt")
    assert any(k.startswith("loss_modules.contrastive.") for k in a["state_dict"])
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert len(a["optimizer_states"]) == 2  # Muon and Adam
    for oa, ob in zip(a["optimizer_states"], b["optimizer_states"]):
        assert oa["state"].keys() == ob["state"].keys() and oa["state"]
        for i in oa["state"]:
            for m, v in oa["state"][i].items():
                assert torch.equal(v, ob["state"][i][m]), (i, m)
    assert "momentum_buffer" in a["optimizer_states"][0]["state"][0]
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
    logged = straight.trainer.callback_metrics
    assert "losses/contrastive/infonce" in logged and "losses/policy_loss" in logged
    assert "losses/action_supervised/cross_entropy" in logged


def test_bad_loss_lists_are_named_before_training(tmp_path):
    env = api.Environment(num_agents=2, width=8, height=8, num_envs=1)
    policy = api.make_policy("FeedForward", env, channels=4, hidden_size=8)
    info = env.env_info
    with pytest.raises(LossError, match=r"model.losses\[1\]: unknown loss 'ppo2' \(known: ppo, grpo"):
        build_losses([{"name": "ppo"}, {"name": "ppo2"}], info, policy)
    with pytest.raises(LossError, match=r"model.losses\[0\] \(contrastive\): coef must be a number >= 0, got -0.5"):
        build_losses([{"name": "contrastive", "coef": -0.5}], info, policy)
    with pytest.raises(LossError, match=r"unknown args \['kk'\] \(accepted: \['k', 'temperature', 'projection_dim'\]"):
        build_losses([{"name": "contrastive", "args": {"kk": 2}}], info, policy)
    with pytest.raises(LossError, match="ppo and grpo are alternatives"):
        build_losses(["ppo", "grpo"], info, policy)
    with pytest.raises(LossError, match=r"prio_alpha=0.5 samples segments by \|advantage\|, but none of the losses "
                                        r"\(kickstarter\) computes advantages"):
        build_losses([{"name": "kickstarter"}], info, policy, prio_alpha=0.5, teachers={"kickstarter": policy})
    with pytest.raises(LossError, match="needs args.teacher_uri"):
        build_losses([{"name": "kickstarter"}], info, policy)
    # a teacher trained on a game with attacks, the student's game without: the message says which actions
    from metta_lightning.checkpoint import save_policy

    other = api.Environment(num_agents=2, width=8, height=8, num_envs=1,
                            game_overrides={"actions": {"attack": {"enabled": False}}})
    teacher = api.make_policy("FeedForward", other, channels=4, hidden_size=8)
    uri = save_policy(teacher, other.env_info, str(tmp_path / "teacher:v1.mpt"))
    with pytest.raises(LossError, match=r"its game does not match the student's: actions differ \(missing "
                                        r"\['attack_0'"):
        build_losses([{"name": "kickstarter", "args": {"teacher_uri": uri}}], info, policy)


def test_cli_rejects_an_unknown_loss_in_one_line(tmp_path):
    env = {"METTA_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-m", "metta_lightning", "fit", "--config", "configs/smoke.yaml",
                           "--model.losses", '[{"name": "ppo"}, {"name": "contrastiv"}]'], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "model.losses[1]: unknown loss 'contrastiv'" in proc.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------------- imitation from replays
def _record(game, directory, episodes=1, num_envs=2, seed=3, policy=None):
    """Record `episodes` episodes of game 1 (actions: `policy(t, num_rows)`, default uniform random)."""
    import numpy as np

    from envs import MettaGrid

    env = MettaGrid(game, num_envs=num_envs, seed=seed)
    recorder = env.record_replays([1], str(directory))
    rng = np.random.default_rng(seed)
    seen = []
    t = 0
    while len(recorder.paths) < episodes:
        if len(seen) < game.max_steps:
            seen.append(env.observations[game.num_agents:2 * game.num_agents].copy())
        act = policy(t, env.num_rows) if policy else rng.integers(0, env.num_actions, env.num_rows)
        env.step(act)
        t += 1
    return recorder.paths, seen


def test_a_replay_played_again_recovers_what_every_agent_observed(tmp_path):
    from envs.replay import ReplayError, demonstration, load

    env = api.Environment(num_agents=4, width=12, height=12, num_envs=1, game_overrides={"max_steps": 40})
    paths, seen = _record(env.game, tmp_path, episodes=2)
    demo = demonstration(load(paths[0]), paths[0])
    assert demo.obs.shape == (40, 4, env.game.num_observation_tokens, 3)
    assert all((demo.obs[t] == seen[t]).all() for t in range(40))
    assert demonstration(load(paths[1])).obs.shape[0] == 40  # episode 1 starts from its own seed too
    # a replay whose recorded actions were changed no longer reproduces the episode: the step is named
    replay = load(paths[0])
    agent = next(o for o in replay["objects"] if o.get("agent_id") == 0)
    moves = agent["action"] if isinstance(agent["action"], list) else [[0, agent["action"]]]
    agent["action"] = [[0, moves[0][1]], [1, (moves[-1][1] + 1) % len(replay["action_names"])]] + \
        [[s, v] for s, v in moves if s > 1]
    with pytest.raises(ReplayError, match="differs from the recording"):
        demonstration(replay, "tampered")
    old = {k: v for k, v in load(paths[0]).items() if k != "seed"}
    with pytest.raises(ReplayError, match="lacks seed"):
        demonstration(old, "old.json.z")


def test_action_supervised_from_replays_trains_the_actor_and_imitates(tmp_path):
    env = api.Environment(num_agents=4, width=12, height=12, num_envs=2, seed=0, game_overrides={"max_steps": 48})
    # the demonstrator always takes action 3, which a fresh policy picks ~1/num_actions of the time
    import numpy as np

    _record(env.game, tmp_path, episodes=1, policy=lambda t, rows: np.full(rows, 3, dtype=np.int32))
    losses = [{"name": "action_supervised", "args": {"replays": str(tmp_path)}}]
    policy = api.make_policy("Fast", env, **FAST)
    training = _training(losses, policy=policy, env=env)
    grads = _grads_of_one_minibatch(training)
    for prefix in ("encoder.", "lstm.", "actor."):
        assert any(v for k, v in grads.items() if k.startswith(prefix)), prefix
    assert not any(v for k, v in grads.items() if k.startswith("critic.")), "the critic is not imitated"
    first = None
    for _ in range(6):
        training.rollout()
        training.compute_advantages()
        for mb in training.minibatches():
            training.train_minibatch(mb)
            training.optimize_step()
        m = training.metrics()
        first = first if first is not None else m["action_supervised/cross_entropy"]
    assert m["action_supervised/accuracy"] > 0.9, m
    assert m["action_supervised/cross_entropy"] < first
    training.close()


def test_replays_of_play_imitate_the_agent_the_person_controlled(tmp_path):
    """`play` names the agent a person controlled in the replay's metadata: only its moves are imitated,
    unless args.agents says otherwise."""
    import numpy as np

    from envs import MettaGrid
    from metta_lightning.losses.teacher import load_demonstrations

    env = api.Environment(num_agents=4, width=12, height=12, num_envs=1, game_overrides={"max_steps": 16})
    game = MettaGrid(env.game, num_envs=1, seed=2)
    recorder = game.record_replays([0], str(tmp_path))
    recorder.metadata = {"mode": "play", "controlled_agent": 2}
    rng = np.random.default_rng(0)
    while not recorder.paths:
        game.step(rng.integers(0, game.num_actions, game.num_rows).astype(np.int32))
    person = load_demonstrations(str(tmp_path), env.env_info, None, "action_supervised")
    assert len(person.actions) == 1 and person.actions[0].shape == (16,)
    assert person.actions[0].tolist() == load_demonstrations(str(tmp_path), env.env_info, [0, 2], "x").actions[1].tolist()


def test_play_replays_follow_the_person_across_an_agent_switch(tmp_path):
    """A person plays agent 3 for 5 steps, then agent 1: each step is learned from the agent played then."""
    from metta_lightning.losses.teacher import load_demonstrations
    from metta_lightning.viewer.play import PlaySession

    env = api.Environment(num_agents=4, width=12, height=12, num_envs=1, game_overrides={"max_steps": 40})
    session = PlaySession(env.game, agent=3, others="random", replay_dir=str(tmp_path), seed=1)
    for _ in range(5):
        session.step("noop")
    session.set_agent(1)
    for _ in range(4):
        session.step("noop")
    session.save()
    demos = load_demonstrations(str(tmp_path), env.env_info, None, "action_supervised")
    assert len(demos.acted) == 2  # agents 1 and 3, in that order
    assert demos.acted[0].tolist() == [False] * 5 + [True] * 4 and demos.acted[1].tolist() == [True] * 5 + [False] * 4
    noop = env.env_info.action_names.index("noop")
    assert demos.actions[0][5:].tolist() == [noop] * 4 and demos.actions[1][:5].tolist() == [noop] * 5


def test_action_supervised_replays_bad_input_is_named(tmp_path):
    env = api.Environment(num_agents=4, width=12, height=12, num_envs=2, seed=0, game_overrides={"max_steps": 24})
    policy = api.make_policy("Fast", env, **FAST)
    with pytest.raises(LossError, match="no such replay file or folder"):
        build_losses([{"name": "action_supervised", "args": {"replays": str(tmp_path / "nope")}}], env.env_info, policy)
    with pytest.raises(LossError, match="exactly one of args.teacher_uri"):
        build_losses([{"name": "action_supervised", "args": {"replays": "x", "teacher_uri": "y"}}], env.env_info, policy)
    paths, _ = _record(env.game, tmp_path, episodes=1)
    with pytest.raises(LossError, match=r"args.agents \[7\]"):
        build_losses([{"name": "action_supervised", "args": {"replays": paths[0], "agents": [7]}}], env.env_info, policy)
    other = api.Environment(num_agents=4, width=12, height=12, num_envs=1,
                            game_overrides={"actions": {"attack": {"enabled": False}}})
    with pytest.raises(LossError, match=r"replay .*game does not match.*actions differ"):
        build_losses([{"name": "action_supervised", "args": {"replays": paths[0]}}], other.env_info,
                     api.make_policy("Fast", other, **FAST))
