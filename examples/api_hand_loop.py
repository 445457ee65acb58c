"""Train the small task of configs/learn_small.yaml by stepping the training phases yourself, then evaluate
the policy and save it. Run: python examples/api_hand_loop.py [--rollouts 40] [--out train_dir/hand_loop]"""

import argparse
import os

import lightning as L

from metta_lightning import api

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--rollouts", type=int, default=40, help="rollouts of 4096 agent-steps to train on")
parser.add_argument("--out", default="train_dir/hand_loop", help="where the artifact and the state go")
args = parser.parse_args()

config = api.TrainerConfig.from_yaml(os.path.join(os.path.dirname(__file__), "..", "configs", "learn_small.yaml"))
L.seed_everything(config.seed)
env = api.Environment(game=config.game, game_overrides=config.game_overrides, num_envs=config.rollout.num_envs,
                      seed=config.rollout.seed)
policy = api.make_policy(config.policy.class_path, env, **config.policy.init_args)
training = api.TrainingComponents.create(env, policy, config)

for i in range(args.rollouts):
    rollout = training.rollout()                    # 1. collect [rows, horizon] with the current weights
    training.compute_advantages()                   # 2. GAE with V-trace clipping
    for minibatch in training.minibatches():        # 3. update_epochs passes of shuffled BPTT segments
        training.train_minibatch(minibatch)         # 4. the PPO loss of this minibatch
        training.optimize_step()                    # 5. backward, clip the gradient norm, Adam step
    losses = training.metrics()
    rewards = [sum(ep["reward"]) / len(ep["reward"]) for ep in rollout.episodes]
    if rewards and (i % 5 == 4 or i == args.rollouts - 1):
        print(f"rollout {i + 1}: {training.agent_steps} agent-steps, reward {sum(rewards) / len(rewards):.3f}, "
              f"value loss {losses['value_loss']:.4f}, entropy {losses['entropy']:.3f}")

result = training.evaluate()  # 8 episodes of the training game; or a suite: evaluate("arena"), a YAML file
print("evaluation:", {k: round(v, 3) for k, v in result.log_dict("eval").items()})
print("saved", training.save_checkpoint(os.path.join(args.out, "hand_loop:v1.mpt")),
      training.save_checkpoint(os.path.join(args.out, "hand_loop:v1.ckpt")))
training.close()
