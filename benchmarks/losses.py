"""Losses and optimizers on learn_small (and a short arena run): kickstarting speed-up and the variants table.

    python benchmarks/losses.py teacher  --out /tmp/losses-bench            # trains the learn_small teacher
    python benchmarks/losses.py kickstart --out /tmp/losses-bench --epochs 3 --scratch-epochs 15 --seeds 0 1 [--coef 3]
    python benchmarks/losses.py table    --out /tmp/losses-bench --epochs 3 --seeds 0 1 [--game arena]
    python benchmarks/losses.py imitate  --out /tmp/losses-bench --epochs 3 --seeds 0 1 --episodes 64

Every run is `fit` in a subprocess (configs/learn_small.yaml plus overrides), read back from its CSV log
(`overview/reward` against `overview/agent_steps`). Results are appended to <out>/results.jsonl; the
summary is printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STUDENT = {"class_path": "models.Fast", "init_args": {"hidden_size": 64, "critic_hidden": 128, "actor_hidden": 64}}
VARIANTS = {
    "PPO": {},
    "PPO + contrastive": {"losses": [{"name": "ppo"}, {"name": "contrastive", "coef": 0.1, "args": {"k": 4}}]},
    "PPO + dynamics": {"losses": [{"name": "ppo"}, {"name": "dynamics", "coef": 0.5}]},
    "GRPO": {"losses": [{"name": "grpo"}]},
    "PPO + prioritized": {"prio_alpha": 0.6, "prio_beta0": 0.4},
    "PPO, Muon": {"optimizer_type": "muon"},
}
ARENA = {"game": "arena_basic_easy_shaped", "game_overrides": {"max_steps": 200}, "num_envs": 4, "horizon": 64,
         "rollouts_per_epoch": 10}


def run_fit(out: Path, name: str, seed: int, epochs: int, model: dict, data: dict | None = None,
            checkpoint: bool = False) -> list[tuple[int, float]]:
    """`fit` learn_small with `model` overrides; returns [(agent_steps, reward)] per logged rollout."""
    folder = out / name
    cfg = {"seed_everything": seed,
           "trainer": {"max_epochs": epochs, "default_root_dir": str(folder),
                       "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                  "init_args": {"save_dir": str(folder / "logs"), "name": "csv"}}},
           "model": model}
    if data:
        cfg["data"] = data
    if checkpoint:
        cfg["trainer"]["callbacks"] = [{"class_path": "callbacks.PolicyCheckpoint",
                                        "init_args": {"epoch_interval": epochs, "keep_states": 0}}]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "override.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "METTA_DATA_DIR": str(out / "data"), "WANDB_MODE": "offline"}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "metta_lightning", "fit", "--config",
                           str(ROOT / "configs" / "learn_small.yaml"), "--config", str(path)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{name}: fit failed\n{proc.stderr[-3000:]}")
    rows = []
    for f in glob.glob(str(folder / "logs" / "csv" / "*" / "metrics.csv")):
        with open(f) as fh:
            for r in csv.DictReader(fh):
                if r.get("overview/reward") and r.get("overview/agent_steps"):
                    rows.append((int(float(r["overview/agent_steps"])), float(r["overview/reward"])))
    rows.sort()
    with open(out / "results.jsonl", "a") as fh:
        fh.write(json.dumps({"name": name, "seed": seed, "epochs": epochs, "model": model, "seconds": time.time() - t0,
                             "curve": rows}) + "\n")
    return rows


def record_teacher(teacher_uri: str, folder: Path, episodes: int) -> str:
    """Replays of `episodes` episodes of the teacher playing learn_small's game (sampling, as in training)."""
    sys.path.insert(0, str(ROOT))
    from metta_lightning.simulation import run_suite

    if len(list(folder.rglob("*.json.z"))) < episodes:
        game = yaml.safe_load(open(ROOT / "configs" / "learn_small.yaml"))["data"]
        suite = {"name": "teacher", "simulations": {"learn_small": {
            "game": game["game"], "game_overrides": game["game_overrides"], "num_episodes": episodes,
            "num_envs": episodes}}}
        run_suite(teacher_uri, suite, replay_dir=str(folder), replay_episodes=episodes)
    return str(folder)


def final_reward(curve: list[tuple[int, float]], last: int = 5) -> float:
    """Mean reward of the last `last` logged rollouts."""
    tail = [r for _, r in curve[-last:]]
    return sum(tail) / max(len(tail), 1)


def steps_to(curve: list[tuple[int, float]], target: float, window: int = 3) -> int | None:
    """First agent-step at which the running mean of `window` rollouts reaches `target`."""
    for i in range(window - 1, len(curve)):
        if sum(r for _, r in curve[i - window + 1: i + 1]) / window >= target:
            return curve[i][0]
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["teacher", "kickstart", "table", "imitate"])
    ap.add_argument("--out", default="/tmp/losses-bench")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--scratch-epochs", type=int, default=None,
                    help="kickstart: epochs of the from-scratch run (default: --epochs)")
    ap.add_argument("--runs", nargs="+", choices=["scratch", "kickstart"], default=["scratch", "kickstart"],
                    help="kickstart: which of the two students to train")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--coef", type=float, default=3.0, help="kickstart: the kickstarter's starting coefficient")
    ap.add_argument("--game", choices=["learn_small", "arena"], default="learn_small")
    ap.add_argument("--variants", nargs="*", default=None)
    ap.add_argument("--episodes", type=int, default=64, help="imitate: teacher episodes recorded as replays")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher_uri = str(out / "teacher" / "checkpoints" / "teacher:v8.mpt")
    if args.what == "teacher":
        curve = run_fit(out, "teacher", 0, 8, {}, checkpoint=True)
        print(f"teacher: final reward {final_reward(curve):.3f} at {curve[-1][0]} agent-steps -> {teacher_uri}")
        return
    if args.what == "kickstart":
        teacher = json.loads([line for line in open(out / "results.jsonl") if '"name": "teacher"' in line][-1])
        target = 0.9 * final_reward(teacher["curve"])
        print(f"teacher reward {final_reward(teacher['curve']):.3f}; target (90%) {target:.3f}")
        for seed in args.seeds:
            ks = {"policy": STUDENT, "losses": [{"name": "ppo"}, {"name": "kickstarter", "coef": args.coef, "args": {
                "teacher_uri": teacher_uri, "anneal_agent_steps": 100_000}}]}
            for label, model, epochs in (("scratch", {"policy": STUDENT}, args.scratch_epochs or args.epochs),
                                         ("kickstart", ks, args.epochs)):
                if label not in args.runs:
                    continue
                curve = run_fit(out, f"{label}-s{seed}", seed, epochs, model)
                print(f"seed {seed} {label}: steps to 90% of teacher {steps_to(curve, target)}, "
                      f"final {final_reward(curve):.3f} ({curve[-1][0]} agent-steps)")
        return
    if args.what == "imitate":
        teacher = json.loads([line for line in open(out / "results.jsonl") if '"name": "teacher"' in line][-1])
        target = 0.9 * final_reward(teacher["curve"])
        replays = record_teacher(teacher_uri, out / "teacher-replays", args.episodes)
        print(f"teacher reward {final_reward(teacher['curve']):.3f}; target (90%) {target:.3f}; {replays}")
        for seed in args.seeds:
            model = {"policy": STUDENT, "losses": [{"name": "ppo"}, {"name": "action_supervised", "args": {
                "replays": replays}}]}
            curve = run_fit(out, f"imitate-s{seed}", seed, args.epochs, model)
            print(f"seed {seed} imitate: steps to 90% of teacher {steps_to(curve, target)}, "
                  f"final {final_reward(curve):.3f} ({curve[-1][0]} agent-steps)", flush=True)
        return
    data = ARENA if args.game == "arena" else None
    names = args.variants or list(VARIANTS)
    print(f"| variant ({args.game}, {args.epochs} epochs) | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |")
    for name in names:
        rewards = []
        for seed in args.seeds:
            model = {"policy": STUDENT, **VARIANTS[name]}
            curve = run_fit(out, f"{args.game}-{name.replace(' ', '').replace(',', '').replace('+', '_')}-s{seed}",
                            seed, args.epochs, model, data)
            rewards.append(final_reward(curve))
        print(f"| {name} | " + " | ".join(f"{r:.3f}" for r in rewards) + f" | {sum(rewards) / len(rewards):.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
