"""Policies side by side: FeedForward, Fast, ViT and Transformer (the sizes of their arena configs:
configs/arena.yaml's Fast, FeedForward's defaults, configs/arena_vit.yaml, configs/arena_transformer.yaml).

For each policy, in one process, one after the other:
- parameters (built for the arena: 27 features, 16 actions);
- acting time per agent-step: `forward_step` without grad on 192 rows of real arena observations (8 games x 24
  agents), the state handed on, median over repeats;
- training agent-steps/s through `fit` with configs/arena.yaml's sizes (192 rows x horizon 128, minibatch 4096,
  BPTT 64), after one warm-up rollout;
- `learn_small` reward: configs/learn_small.yaml trained for a fixed agent-step budget; the mean reward of the last
  5 updates, and the agent-steps at which the mean of 3 consecutive updates first reached `--threshold`;
- arena (with `--arena-steps N`): configs/arena.yaml trained for N agent-steps; `env_agent/heart.gained` and
  reward of the last updates that finished episodes, with the wall time (`--json` keeps the whole curve).

    python benchmarks/policies.py                                 # a few minutes per policy on 2 CPU cores
    python benchmarks/policies.py --policies ViT Fast --learn-steps 655360 --arena-steps 2000000   # hours
    python benchmarks/policies.py --json policies.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see metta_lightning/__main__.py)

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

POLICIES = ["FeedForward", "Fast", "ViT", "Transformer"]
QUIET = ["--trainer.logger", "false", "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar",
         "false", "--trainer.enable_model_summary", "false", "--trainer.callbacks", "[]"]


def arena_obs(rows_games: int = 8, steps: int = 30, seed: int = 0) -> tuple[torch.Tensor, object]:
    """Observations of 8 arena games after `steps` random steps (`[192, 200, 3]`) and the EnvInfo."""
    from metta_lightning import api

    env = api.Environment(game="arena_basic_easy_shaped", num_envs=rows_games, seed=seed)
    tenv = env.make_torchrl_env()
    td = tenv.reset()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        td["action"] = torch.randint(0, env.env_info.num_actions, (env.num_rows,), generator=g)
        td = tenv.step(td)["next"]
    obs = td["observation"].clone()
    tenv.close()
    return obs, env.env_info


@torch.no_grad()
def acting_us(policy, obs: torch.Tensor, repeats: int) -> float:
    """Median microseconds per agent-step of `forward_step` (no grad) on `obs` `[rows, tokens, 3]`."""
    policy.eval()
    rows = obs.shape[0]
    state = policy.initial_state(rows, obs.device)
    is_init = torch.zeros(rows, dtype=torch.bool)
    times = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        out = policy.forward_step(obs, state, is_init)
        if i >= 3:
            times.append(time.perf_counter() - start)
        state = out.get("state", None)
    policy.train()
    return statistics.median(times) / rows * 1e6


class Recorder:
    """A Lightning callback keeping (agent-steps, wall s, reward, hearts) after every update."""

    def __new__(cls):
        import lightning as L

        class _Recorder(L.Callback):
            def __init__(self):
                self.rows, self.start = [], None

            def on_train_start(self, trainer, module):
                self.start = time.perf_counter()

            def on_train_batch_end(self, trainer, module, *args):
                m = trainer.callback_metrics
                get = lambda k: float(m[k]) if k in m else float("nan")  # noqa: E731
                self.rows.append({"agent_steps": int(module.agent_steps), "wall_s": time.perf_counter() - self.start,
                                  "reward": get("overview/reward"), "hearts": get("env_agent/heart.gained"),
                                  "sps": get("overview/sps")})

        return _Recorder()


def policy_args(policy: str) -> dict:
    """The policy's sizes in its arena config (configs/arena_vit.yaml, ...); the class defaults if it has none."""
    import yaml

    path = ROOT / "configs" / f"arena_{policy.lower()}.yaml"
    if not path.exists():
        return {}
    return yaml.safe_load(path.read_text())["model"]["policy"].get("init_args", {})


def run_fit(config: str, policy: str, agent_steps: int, seed: int = 0):
    """`fit` of `config` with `models.<policy>` (sizes of `policy_args`) until `agent_steps`; returns the recorder."""
    from metta_lightning.cli import main

    extra = [a for k, v in policy_args(policy).items() for a in (f"--model.policy.init_args.{k}", str(v))]
    rec = Recorder()
    with tempfile.TemporaryDirectory(prefix="policies-") as tmp:
        os.environ["METTA_DATA_DIR"] = tmp  # the run folder (nothing is written there with QUIET)
        cli = main(["--config", config, "--model.policy", f"models.{policy}", *QUIET, "--seed_everything", str(seed),
                    "--run", f"bench-{policy}", "--trainer.max_epochs", "1", *extra],
                   run=False, save_config_callback=None)
        per_rollout = cli.datamodule.batch_size
        rollouts = max(1, -(-agent_steps // per_rollout))
        cli.datamodule.rollouts_per_epoch = rollouts  # one epoch of the whole budget
        cli.trainer.callbacks.append(rec)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return rec


def train_sps(policy: str, rollouts: int) -> float:
    """Agent-steps/s of `fit` with configs/arena.yaml's sizes, after one warm-up rollout."""
    rec = run_fit(str(ROOT / "configs" / "arena.yaml"), policy, (rollouts + 1) * 24576)
    first, last = rec.rows[0], rec.rows[-1]
    return (last["agent_steps"] - first["agent_steps"]) / (last["wall_s"] - first["wall_s"])


def learn_small(policy: str, agent_steps: int, threshold: float, seed: int) -> dict:
    rec = run_fit(str(ROOT / "configs" / "learn_small.yaml"), policy, agent_steps, seed)
    rewards = [r["reward"] for r in rec.rows]
    tail = [x for x in rewards[-5:] if x == x]
    reached = None
    for i in range(2, len(rewards)):
        if statistics.mean(rewards[i - 2:i + 1]) >= threshold:
            reached = rec.rows[i]["agent_steps"]
            break
    return {"reward": statistics.mean(tail) if tail else float("nan"), "steps_to_threshold": reached,
            "wall_s": rec.rows[-1]["wall_s"], "agent_steps": rec.rows[-1]["agent_steps"],
            "curve": [(r["agent_steps"], r["reward"]) for r in rec.rows]}


def arena(policy: str, agent_steps: int, seed: int) -> dict:
    rec = run_fit(str(ROOT / "configs" / "arena.yaml"), policy, agent_steps, seed)
    tail = [r for r in rec.rows if r["hearts"] == r["hearts"]][-3:]  # updates that finished episodes
    mean = lambda k: statistics.mean(r[k] for r in tail) if tail else float("nan")  # noqa: E731
    return {"hearts": mean("hearts"), "reward": mean("reward"), "wall_s": rec.rows[-1]["wall_s"],
            "agent_steps": rec.rows[-1]["agent_steps"],
            "curve": [(r["agent_steps"], round(r["wall_s"], 1), r["hearts"]) for r in rec.rows]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policies", nargs="+", default=POLICIES, choices=POLICIES)
    p.add_argument("--act-repeats", type=int, default=20, help="timed forward_step calls at 192 rows")
    p.add_argument("--train-rollouts", type=int, default=2, help="timed arena rollouts through fit (+1 warm-up)")
    p.add_argument("--learn-steps", type=int, default=327680, help="learn_small agent-step budget (the config's 8 epochs)")
    p.add_argument("--threshold", type=float, default=0.5, help="learn_small reward whose agent-steps are reported")
    p.add_argument("--arena-steps", type=int, default=0,
                   help="arena agent-step budget (0: skip). Arena episodes last 1000 steps, so hearts appear only past "
                        "~200k agent-steps and differ between policies from ~1M (hours on 2 CPU cores for all four)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="write the figures (and curves) here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import warnings

    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    import models

    obs, env_info = arena_obs()
    results = {}
    for name in args.policies:
        torch.manual_seed(args.seed)
        policy = getattr(models, name)(env_info, **policy_args(name))
        r = {"params": sum(q.numel() for q in policy.parameters()), "act_us": acting_us(policy, obs, args.act_repeats)}
        r["train_sps"] = train_sps(name, args.train_rollouts)
        r["learn_small"] = learn_small(name, args.learn_steps, args.threshold, args.seed)
        if args.arena_steps:
            r["arena"] = arena(name, args.arena_steps, args.seed)
        results[name] = r
        ls = r["learn_small"]
        print(f"{name}: {r['params'] / 1e6:.3f}M params, act {r['act_us']:.1f} us/agent-step, "
              f"fit {r['train_sps']:,.0f} agent-steps/s, learn_small reward {ls['reward']:.3f} after "
              f"{ls['agent_steps']:,} ({ls['wall_s']:.0f} s), >= {args.threshold} at {ls['steps_to_threshold']}"
              + (f", arena hearts {r['arena']['hearts']:.3f} reward {r['arena']['reward']:.3f} after "
                 f"{r['arena']['agent_steps']:,} ({r['arena']['wall_s']:.0f} s)" if "arena" in r else ""), flush=True)

    print(f"\nthreads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} at the end\n")
    print(f"| policy | params | act us/agent-step (192 rows) | fit agent-steps/s (arena) | learn_small reward "
          f"({args.learn_steps:,} steps) | steps to reward {args.threshold} | arena hearts / reward ({args.arena_steps:,} "
          f"steps) | arena wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        ls, ar = r["learn_small"], r.get("arena", {})
        print(f"| {name} | {r['params'] / 1e6:.3f}M | {r['act_us']:.1f} | {r['train_sps']:,.0f} | {ls['reward']:.3f} | "
              f"{ls['steps_to_threshold'] or 'not reached'} | "
              + (f"{ar['hearts']:.3f} / {ar['reward']:.3f} | {ar['wall_s']:.0f} |" if ar else "- | - |"))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
