"""Training throughput: the full `fit` path (Trainer + Collector) vs a hand-written PPO loop.

Both run in this process, on the same game, sizes, model class and update (ppo.py functions),
alternating so that foreign CPU load hits both alike. Prints agent-steps/s of each and the ratio.

    python benchmarks/train_sps.py                       # Fast policy, arena sizes of configs/arena.yaml
    python benchmarks/train_sps.py --policy feedforward --rollouts 4 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see metta_lightning/__main__.py)

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def hand_loop(game, policy, hp: dict, num_envs: int, horizon: int, rollouts: int, seed: int) -> float:
    """Collect with the raw engine into preallocated [N, T] buffers, update with ppo.py; agent-steps/s."""
    from envs import MettaGrid
    from metta_lightning import ppo

    env = MettaGrid(game, num_envs=num_envs, seed=seed, auto_reset=False)
    n, t, a = env.num_rows, horizon, env.num_agents
    obs_now = torch.from_numpy(env.reset().copy())
    obs = torch.empty(n, t, *obs_now.shape[1:], dtype=torch.uint8)
    next_obs = torch.empty_like(obs)
    is_init = torch.zeros(n, t, dtype=torch.bool)
    actions = torch.empty(n, t, dtype=torch.int64)
    logp = torch.empty(n, t)
    values = torch.empty(n, t)
    rewards = torch.empty(n, t)
    term = torch.empty(n, t, dtype=torch.bool)
    trunc = torch.empty(n, t, dtype=torch.bool)
    state = policy.initial_state(n) if policy.is_recurrent else None
    states = torch.empty(n, t, *state.shape[1:]) if state is not None else None
    init_now = torch.ones(n, dtype=torch.bool)
    opt = torch.optim.Adam(policy.parameters(), lr=hp["learning_rate"], eps=hp["adam_eps"])
    bptt, mb = hp["bptt_horizon"], hp["minibatch_size"]
    start = None
    for it in range(rollouts + 1):
        if it == 1:
            start = time.perf_counter()  # the first rollout is warm-up
        with torch.no_grad():
            for s in range(t):
                obs[:, s] = obs_now
                is_init[:, s] = init_now
                if state is not None:
                    state = state * (~init_now).view(-1, 1, 1, 1)
                    states[:, s] = state
                logits, v, state = policy.forward_step(obs_now, state, init_now)
                lp = torch.log_softmax(logits, -1)
                act = (logits - torch.log(-torch.log(torch.rand_like(logits).clamp_(1e-20, 1.0)))).argmax(-1)
                actions[:, s], values[:, s] = act, v
                logp[:, s] = lp.gather(-1, act.unsqueeze(-1)).squeeze(-1)
                o, r, te, tr = env.step(act.to(torch.int32).numpy())
                next_obs[:, s] = torch.from_numpy(o)
                rewards[:, s] = torch.from_numpy(r)
                term[:, s], trunc[:, s] = torch.from_numpy(te), torch.from_numpy(tr)
                done_rows = term[:, s] | trunc[:, s]
                if done_rows.any():
                    env.reset_games(done_rows.view(num_envs, a).any(1).numpy())
                obs_now = torch.from_numpy(env.observations.copy())
                init_now = done_rows.clone()
            # bootstrap values: truncated steps and the last step, replayed from the stored state
            need = trunc.clone()
            need[:, -1] = True
            rows, steps = need.nonzero(as_tuple=True)
            final = torch.zeros(n, t)
            if state is not None:
                seq = torch.stack([obs[rows, steps], next_obs[rows, steps]], 1)
                ii = torch.stack([is_init[rows, steps], torch.zeros_like(rows, dtype=torch.bool)], 1)
                final[rows, steps] = policy.forward_sequence(seq, states[rows, steps], ii)[1][:, 1]
            else:
                final[rows, steps] = policy.forward_sequence(
                    next_obs[rows, steps].unsqueeze(1), None, torch.ones(len(rows), 1, dtype=torch.bool))[1][:, 0]
        done = term | trunc
        nv = ppo.next_values(values, final, done)
        adv = ppo.advantages(rewards, values, nv, term, done, hp["gamma"], hp["gae_lambda"])
        seg = lambda x: ppo.segment(x, bptt)  # noqa: E731
        returns = seg(adv + values)
        adv_s = seg(ppo.normalize_advantages(adv))
        o_s, i_s, a_s, lp_s, v_s = seg(obs), seg(is_init), seg(actions), seg(logp), seg(values)
        st0 = seg(states)[:, 0] if states is not None else None
        for _ in range(hp["update_epochs"]):
            for idx in ppo.minibatch_segments(o_s.shape[0], mb // bptt):
                logits, new_v, _ = policy.forward_sequence(o_s[idx], st0[idx] if st0 is not None else None, i_s[idx])
                loss, _, _ = ppo.ppo_loss(logits, a_s[idx], lp_s[idx], new_v, v_s[idx], returns[idx], adv_s[idx],
                                          hp["clip_coef"], hp["vf_clip_coef"], hp["ent_coef"], hp["vf_coef"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), hp["max_grad_norm"])
                opt.step()
    return rollouts * n * t / (time.perf_counter() - start)


def fit_path(config: str, overrides: list[str], rollouts: int) -> float:
    """`trainer.fit` through the CLI classes (no logger/checkpoints); agent-steps/s after the first rollout."""
    import lightning as L

    from metta_lightning.cli import main

    class Clock(L.Callback):
        def __init__(self):
            self.times = []

        def on_train_batch_end(self, trainer, *args):
            self.times.append(time.perf_counter())

    clock = Clock()
    cli = main(["--config", config, *overrides, "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
                "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                "--trainer.max_epochs", "1", "--data.rollouts_per_epoch", str(rollouts + 1)],
               run=False, save_config_callback=None)
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    frames = cli.datamodule.batch_size
    return rollouts * frames / (clock.times[-1] - clock.times[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/arena.yaml")
    p.add_argument("--policy", choices=["fast", "feedforward"], default="fast")
    p.add_argument("--rollouts", type=int, default=3, help="timed rollouts per measurement (+1 warm-up)")
    p.add_argument("--rounds", type=int, default=2, help="alternations of fit and hand-written")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from metta_lightning.cli import main as cli_main
    from models.base import build_policy

    overrides = [] if args.policy == "fast" else ["--model.policy", "models.FeedForward"]
    cli = cli_main(["--config", args.config, *overrides], run=False)
    dm, model = cli.datamodule, cli.model
    hp = dict(model.hparams)
    spec = hp["policy"]
    n_params = sum(p.numel() for p in model.policy.parameters())
    print(f"policy {spec['class_path']} ({n_params / 1e6:.2f}M params), rows {dm.num_rows}, horizon {dm.horizon}, "
          f"batch {dm.batch_size}, minibatch {hp['minibatch_size']}, bptt {hp['bptt_horizon']}, "
          f"epochs {hp['update_epochs']}, threads {torch.get_num_threads()}")
    fits, hands = [], []
    for r in range(args.rounds):
        fits.append(fit_path(args.config, overrides, args.rollouts))
        policy = build_policy(spec, model.env_info)
        hands.append(hand_loop(dm.game, policy, hp, dm.num_envs, dm.horizon, args.rollouts, seed=r))
        print(f"round {r}: fit {fits[-1]:,.0f} agent-steps/s, hand-written {hands[-1]:,.0f} agent-steps/s")
    f, h = statistics.median(fits), statistics.median(hands)
    print(f"median: fit {f:,.0f} agent-steps/s, hand-written {h:,.0f} agent-steps/s, fit/hand = {f / h:.2f}x")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
