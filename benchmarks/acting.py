"""Acting throughput: the policy's acting path now against the same policy class at an earlier commit, in one
process, alternating (foreign CPU load hits both alike).

Two figures, each for both versions with identical weights on the arena's sizes (`configs/arena.yaml`: 8 games
x 24 agents = 192 rows, rollouts of 128 steps):

- **forward**: `policy.forward_step` alone, without grad, on real arena observations (agent-steps/s);
- **collect**: whole rollouts through the TorchRL `Collector` with `data.RolloutActor` and the C++ env, as `fit`
  collects them (agent-steps/s), so what the policy gains is seen next to what the env and TorchRL cost.

The baseline's `models/` package is read from git (`--baseline`, default the commit before the acting work) and
imported beside the current one. Prints agent-steps per wall second and per CPU second of this process
(steadier on a shared machine) of each, and the ratios.

    python benchmarks/acting.py                         # Fast, 3 rounds
    python benchmarks/acting.py --rounds 5 --baseline HEAD~3 --policy Fast
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see metta_lightning/__main__.py)

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

DEFAULT_BASELINE = "bdd886c"  # main before the acting work (issue: training speed)


def import_models_at(rev: str, into: str):
    """The repo's `models` package as of git revision `rev`, imported as `baseline_models`."""
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev, "models"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    os.rename(os.path.join(into, "models"), os.path.join(into, "baseline_models"))
    sys.path.insert(0, into)
    return importlib.import_module("baseline_models")


def arena_observations(game, num_envs: int, steps: int = 60) -> torch.Tensor:
    import envs

    engine = envs.MettaGrid(game, num_envs=num_envs, seed=0)
    engine.reset()
    rng = np.random.default_rng(0)
    for _ in range(steps):
        engine.step(rng.integers(0, len(engine.action_names), engine.num_rows).astype(np.int32))
    return torch.from_numpy(engine.observations.copy())


def forward_rate(policy, obs: torch.Tensor, seconds: float) -> tuple[float, float]:
    """Agent-steps per wall second and per CPU second of this process of `forward_step` without grad, after a
    warm-up."""
    state = policy.initial_state(obs.shape[0]) if policy.is_recurrent else None
    is_init = torch.zeros(obs.shape[0], dtype=torch.bool)
    with torch.no_grad():
        for _ in range(5):
            policy.forward_step(obs, state, is_init)
        calls, start, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            policy.forward_step(obs, state, is_init)
            calls += 1
    return (calls * obs.shape[0] / (time.perf_counter() - start),
            calls * obs.shape[0] / (time.process_time() - cpu))


def collect_rate(policy, game, num_envs: int, horizon: int, rollouts: int) -> tuple[float, float]:
    """Agent-steps per wall second and per CPU second of whole rollouts through the Collector (after one warm-up
    rollout)."""
    from envs.torchrl_env import MettaGridEnv
    from metta_lightning.data import RolloutActor, make_collector

    env = MettaGridEnv(game, num_envs=num_envs, seed=0)
    collector = make_collector(env, RolloutActor(policy), env.batch_size[0] * horizon, "cpu")
    it = iter(collector)
    next(it)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(rollouts):
        next(it)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    collector.shutdown()
    frames = rollouts * env.batch_size[0] * horizon
    return frames / seconds, frames / cpu_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision of the baseline models/")
    parser.add_argument("--policy", default="Fast", help="policy class in models/ (both versions)")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--horizon", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="forward timing per round and version")
    parser.add_argument("--rollouts", type=int, default=3, help="collected rollouts per round and version")
    args = parser.parse_args()

    import models
    from envs.info import EnvInfo
    from envs.presets import resolve_game

    game = resolve_game("arena_basic_easy_shaped", None)
    info = EnvInfo.from_config(game)
    with tempfile.TemporaryDirectory() as tmp:
        baseline_models = import_models_at(args.baseline, tmp)
        torch.manual_seed(0)
        now = getattr(models, args.policy)(info).eval()
        then = getattr(baseline_models, args.policy)(info).eval()
        then.load_state_dict(now.state_dict())
        obs = arena_observations(game, args.num_envs)
        rates = {("forward", "now"): [], ("forward", "then"): [], ("collect", "now"): [], ("collect", "then"): []}
        for r in range(args.rounds):
            for label, policy in (("then", then), ("now", now)) if r % 2 else (("now", now), ("then", then)):
                rates[("forward", label)].append(forward_rate(policy, obs, args.seconds))
                rates[("collect", label)].append(collect_rate(policy, game, args.num_envs, args.horizon,
                                                              args.rollouts))
            print(f"round {r + 1} (per wall s / per CPU s): "
                  + ", ".join(f"{k[0]} {k[1]} {v[-1][0]:,.0f} / {v[-1][1]:,.0f}" for k, v in rates.items()), flush=True)

    rows = args.num_envs * info.num_agents
    print(f"\n{args.policy}, {rows} rows, baseline {args.baseline}; median agent-steps/s of {args.rounds} rounds")
    print("| path | clock | baseline | now | ratio |\n|---|---|---|---|---|")
    for what in ("forward", "collect"):
        for i, clock in enumerate(("wall", "CPU")):
            then_rate = statistics.median(r[i] for r in rates[(what, "then")])
            now_rate = statistics.median(r[i] for r in rates[(what, "now")])
            print(f"| {what} | per {clock} s | {then_rate:,.0f} | {now_rate:,.0f} | **{now_rate / then_rate:.2f}x** |")


if __name__ == "__main__":
    main()
