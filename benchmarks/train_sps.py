"""Training throughput: the full `fit` path (Lightning Trainer + callbacks) vs the same training phases
driven by hand without Lightning (`metta_lightning.api.TrainingComponents`: the collector, advantages,
minibatches, loss, optimizer step that `PPOModule.training_step` composes).

Both run in this process, on the same game, sizes and model class, alternating so that foreign CPU load
hits both alike. Prints agent-steps/s of each and the ratio (what Lightning's loop costs).

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


def hand_loop(config: str, overrides: dict, rollouts: int, seed: int) -> float:
    """The training phases of `metta_lightning.api.TrainingComponents` driven by hand (no Lightning):
    collect, advantages, minibatches, loss, optimizer step. Agent-steps/s after a warm-up rollout."""
    import lightning as L

    from metta_lightning import api

    cfg = api.TrainerConfig.from_yaml(config)
    if overrides:
        cfg = cfg.model_copy(update=overrides)
    L.seed_everything(seed, verbose=False)
    env = api.Environment(game=cfg.game, game_overrides=cfg.game_overrides, num_envs=cfg.rollout.num_envs, seed=seed)
    policy = (api.make_policy(cfg.policy.class_path, env, **cfg.policy.init_args) if cfg.policy
              else api.make_policy("Fast", env))
    training = api.TrainingComponents.create(env, policy, cfg)
    start = None
    for it in range(rollouts + 1):
        if it == 1:
            start = time.perf_counter()  # the first rollout is warm-up
        training.rollout()
        training.compute_advantages()
        for minibatch in training.minibatches():
            training.train_minibatch(minibatch)
            training.optimize_step()
    seconds = time.perf_counter() - start
    training.close()
    return rollouts * env.num_rows * cfg.rollout.horizon / seconds


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

    from metta_lightning import api
    from metta_lightning.cli import main as cli_main

    overrides = [] if args.policy == "fast" else ["--model.policy", "models.FeedForward"]
    hand_overrides = {} if args.policy == "fast" else {"policy": api.PolicyConfig(class_path="FeedForward")}
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
        hands.append(hand_loop(args.config, hand_overrides, args.rollouts, seed=r))
        print(f"round {r}: fit {fits[-1]:,.0f} agent-steps/s, hand loop over the phases {hands[-1]:,.0f} agent-steps/s")
    f, h = statistics.median(fits), statistics.median(hands)
    print(f"median: fit {f:,.0f} agent-steps/s, hand loop {h:,.0f} agent-steps/s, fit/hand = {f / h:.2f}x")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
