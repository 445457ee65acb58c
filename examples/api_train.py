"""Train with a typed config instead of YAML: the same Trainer, callbacks and loggers as `fit`.
Run: python examples/api_train.py [--max-epochs 8] [--out train_dir]"""

import argparse

from metta_lightning import api

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--max-epochs", type=int, default=8)
parser.add_argument("--rollouts-per-epoch", type=int, default=10)
parser.add_argument("--out", default="train_dir", help="logs go here (checkpoints under $METTA_DATA_DIR)")
args = parser.parse_args()

config = api.TrainerConfig(
    run="api_small",
    game="arena_basic_easy_shaped",
    game_overrides={"max_steps": 100,
                    "map_builder": {"kind": "ascii", "lines": ["#######", "#.....#", "#.m...#", "#..@..#",
                                                               "#.n._.#", "#.....#", "#######"]}},
    policy=api.PolicyConfig(class_path="FeedForward", init_args={"channels": 32, "hidden_size": 128}),
    rollout=api.RolloutConfig(num_envs=64, horizon=64, rollouts_per_epoch=args.rollouts_per_epoch),
    ppo=api.PPOConfig(bptt_horizon=16, minibatch_size=1024, update_epochs=2),
    optimizer=api.OptimizerConfig(learning_rate=0.001, lr_schedule="cosine"),
    checkpoint=api.CheckpointConfig(epoch_interval=2),
    evaluation=api.EvaluationConfig(suite="smoke", epoch_interval=4, replay_episodes=1),
    logging=api.LoggingConfig(logger="csv", save_dir=args.out),
    max_epochs=args.max_epochs, accelerator="cpu", devices=1, log_every_n_steps=1,
    trainer_extra={"enable_checkpointing": False, "enable_progress_bar": False},
)
result = api.train(config)
print(f"run folder {result.run_dir}: {result.agent_steps} agent-steps, "
      f"reward {result.metrics.get('overview/reward', float('nan')):.3f}, "
      f"eval score {result.metrics.get('eval/smoke/score', float('nan')):.3f}")
