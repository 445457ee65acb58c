"""Agent-steps per second of the arena env: our C++ engine vs the `mettagrid` package from PyPI.

    .venv/bin/python benchmarks/env_sps.py            # ours (1 and 16 games) + the peer, one table
    .venv/bin/python benchmarks/env_sps.py --no-peer  # ours only

Ours: `presets.arena()` (24 agents, 62x62, combat), uniformly random actions over its 16 actions,
pre-generated, one thread, `num_envs` games stepped per call. The peer, `mettagrid==0.26.22`, runs
in its own virtualenv (`.venv-mettagrid`, created here if missing) as a subprocess of this script:
`make_arena(num_agents=24, combat=True)`, uniformly random actions over its action list written
into the simulator's action buffer, one simulation, a new one when an episode ends.

An agent step is one agent acting once; `agent-steps/s = steps * agents * games / seconds`.
Each figure is the median of `--repeats` timed runs of about `--seconds` each, after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEER_VENV = ROOT / ".venv-mettagrid"
PEER_VERSION = "0.26.22"
PEER_TORCH = "torch==2.13.0"  # mettagrid depends on torch; the pinned CPU build keeps the download small
GOAL_PEER_RATIO = 10.0        # ours, 1 game, one core: at least 10x the peer
GOAL_BATCHED = 1_000_000      # ours, 16 games per call: at least 1M agent-steps/s
NUM_PREGENERATED = 1024       # distinct action rows, cycled


def _timed_runs(step_once, agent_steps_per_call: int, seconds: float, repeats: int,
                warmup: float) -> tuple[list[float], list[float]]:
    """Calls `step_once(i)` repeatedly; returns agent-steps/s of each timed run, per wall-clock second
    and per CPU second of this process (the latter is what one core does, even on a busy machine)."""
    end = time.perf_counter() + warmup
    i = 0
    while time.perf_counter() < end:
        step_once(i)
        i += 1
    wall, cpu = [], []
    for _ in range(repeats):
        calls = 0
        start, cpu_start = time.perf_counter(), time.process_time()
        deadline = start + seconds
        # Check the clock every 64 calls only: the call itself is a few microseconds.
        while True:
            for _ in range(64):
                step_once(i)
                i += 1
            calls += 64
            now = time.perf_counter()
            if now >= deadline:
                break
        cpu_now = time.process_time()
        wall.append(calls * agent_steps_per_call / (now - start))
        cpu.append(calls * agent_steps_per_call / max(cpu_now - cpu_start, 1e-9))
    return wall, cpu


def _result(name: str, num_envs: int, agents: int, map_desc: str, actions: int, wall, cpu) -> dict:
    return {"name": name, "num_envs": num_envs, "agents": agents, "map": map_desc, "actions": actions,
            "wall": wall, "cpu": cpu, "median_wall": statistics.median(wall), "median_cpu": statistics.median(cpu)}


# ----------------------------------------------------------------------------------------- ours
def bench_ours(num_envs: int, seconds: float, repeats: int, warmup: float, seed: int = 0) -> dict:
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from envs import MettaGrid, presets

    cfg = presets.arena()
    env = MettaGrid(cfg, num_envs=num_envs, seed=seed)
    env.reset()
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, len(env.action_names), size=(NUM_PREGENERATED, env.num_rows), dtype=np.int32)
    step = env.step

    def step_once(i: int) -> None:
        step(actions[i % NUM_PREGENERATED])
        if i % 4096 == 4095:
            env.episode_stats()  # hand finished episodes over, as a trainer would

    wall, cpu = _timed_runs(step_once, env.num_rows, seconds, repeats, warmup)
    h, w = env.map_size(0)
    return _result(f"ours, {num_envs} game{'s' if num_envs > 1 else ''}/call", num_envs, env.num_agents,
                   f"{h}x{w}", len(env.action_names), wall, cpu)


# ----------------------------------------------------------------------------------------- peer
def peer_worker(seconds: float, repeats: int, warmup: float, seed: int = 0) -> dict:
    """Runs inside .venv-mettagrid: steps mettagrid 0.26.22's arena with random actions."""
    import numpy as np
    from mettagrid.builder.envs import make_arena
    from mettagrid.simulator import Simulator

    try:
        from mettagrid.mettagrid_c import dtype_actions
    except ImportError:  # pragma: no cover - older layouts
        dtype_actions = np.int32

    cfg = make_arena(num_agents=24, combat=True)
    simulator = Simulator()
    state = {"sim": simulator.new_simulation(cfg, seed=seed), "episodes": 1}
    sim = state["sim"]
    num_agents, num_actions = sim.num_agents, len(sim.action_names)
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, num_actions, size=(NUM_PREGENERATED, num_agents)).astype(dtype_actions)
    state["buf"] = sim._c_sim.actions()

    def step_once(i: int) -> None:
        s = state["sim"]
        state["buf"][:] = actions[i % NUM_PREGENERATED]
        s.step()
        if s.is_done():
            s.close()
            state["sim"] = simulator.new_simulation(cfg, seed=seed + state["episodes"])
            state["episodes"] += 1
            state["buf"] = state["sim"]._c_sim.actions()

    try:
        map_desc = f"{sim.map_height}x{sim.map_width}"
    except AttributeError:
        map_desc = "?"
    wall, cpu = _timed_runs(step_once, num_agents, seconds, repeats, warmup)
    import importlib.metadata

    version = importlib.metadata.version("mettagrid")
    return _result(f"mettagrid {version} (PyPI), 1 sim", 1, num_agents, map_desc, num_actions, wall, cpu)


def ensure_peer_venv() -> Path:
    python = PEER_VENV / "bin" / "python"
    ok = python.exists() and subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; assert m.version('mettagrid') == '{PEER_VERSION}'"],
        capture_output=True).returncode == 0
    if not ok:
        print(f"creating {PEER_VENV.name} with mettagrid=={PEER_VERSION} (one-time download)...", flush=True)
        subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", PEER_TORCH, f"mettagrid=={PEER_VERSION}"],
                       check=True)
    return python


def bench_peer(seconds: float, repeats: int, warmup: float) -> dict:
    python = ensure_peer_venv()
    cmd = [str(python), str(Path(__file__).resolve()), "--peer-worker", "--seconds", str(seconds),
           "--repeats", str(repeats), "--warmup", str(warmup)]
    # One thread, like ours.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    if out.returncode != 0:
        raise RuntimeError(f"peer benchmark failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------- report
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=3.0, help="length of one timed run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per figure (the median is reported)")
    p.add_argument("--warmup", type=float, default=1.0, help="untimed stepping before the timed runs")
    p.add_argument("--num-envs", type=int, nargs="+", default=[1, 16], help="games per call for ours")
    p.add_argument("--no-peer", action="store_true", help="skip the mettagrid PyPI peer")
    p.add_argument("--json", type=str, default=None, help="also write the results to this JSON file")
    p.add_argument("--peer-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.peer_worker:
        print(json.dumps(peer_worker(args.seconds, args.repeats, args.warmup)))
        return

    results = [bench_ours(n, args.seconds, args.repeats, args.warmup) for n in args.num_envs]
    peer = None
    if not args.no_peer:
        peer = bench_peer(args.seconds, args.repeats, args.warmup)
        results.append(peer)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nArena env throughput, one thread ({platform.machine()}, {os.cpu_count()} logical CPUs, "
          f"load average {load:.1f} at the end; median of {args.repeats} x {args.seconds:g} s)")
    print("agent-steps/s per CPU second of the stepping process (= one core) and per wall-clock second\n")
    header = f"{'env':<34} {'agents':>6} {'map':>7} {'actions':>7} {'per CPU s':>12} {'per wall s':>12}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['name']:<34} {r['agents']:>6} {r['map']:>7} {r['actions']:>7} "
              f"{r['median_cpu']:>12,.0f} {r['median_wall']:>12,.0f}")
    print()
    ours = {r["num_envs"]: r for r in results if r["name"].startswith("ours")}
    if peer is not None:
        for n, r in sorted(ours.items()):
            ratio_cpu, ratio_wall = r["median_cpu"] / peer["median_cpu"], r["median_wall"] / peer["median_wall"]
            goal = ""
            if n == 1:
                goal = f"   goal >= {GOAL_PEER_RATIO:g}x per core: {'MET' if ratio_cpu >= GOAL_PEER_RATIO else 'NOT MET'}"
            print(f"ours ({n} game{'s' if n > 1 else ''}) / peer: {ratio_cpu:6.1f}x per CPU s, "
                  f"{ratio_wall:6.1f}x per wall s{goal}")
    if 16 in ours:
        v = ours[16]["median_cpu"]
        print(f"ours (16 games): {v:,.0f} agent-steps per CPU s   goal >= {GOAL_BATCHED:,}: "
              f"{'MET' if v >= GOAL_BATCHED else 'NOT MET'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results}, indent=2))


if __name__ == "__main__":
    main()
