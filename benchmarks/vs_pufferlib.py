"""Training throughput: PufferLib's PPO trainer (`pufferlib.pufferl.PuffeRL`) vs our `fit`, on our engine.

Both train the same policy (`models.Fast`, fresh weights each round) on the same game
(`configs/arena.yaml`: arena basic easy shaped, 8 games x 24 agents = 192 rows) with the same batch
sizes (24,576 agent-steps per update, minibatches of 4,096 = 64 segments x BPTT 64, 1 epoch) and the
same PPO coefficients, in this process, alternating round by round so that foreign CPU load hits both
alike. PufferLib drives the engine through `envs.adapters.MettaGridPufferEnv` behind
`pufferlib.vector.make(..., backend=Serial)`; ours is the full `fit` path (LightningCLI classes,
TorchRL collector, `PPOModule`), measured as `benchmarks/train_sps.py` does. Prints agent-steps per
wall-clock second and per CPU second of this process (steadier when other jobs share the machine) for
each round, and the median ratios.

What had to be adapted for PufferLib, and nothing else:
- Its trainer computes advantages with a kernel from its compiled `_C` extension, which does not load
  on a CPU build of torch; `puff_advantage` below is that one function rewritten in torch (the same
  recursion: V-trace-clipped GAE over each row of `[segments, horizon]`) and put in its place.
- `Fast` gets PufferLib's policy interface (`PufferFast`): `forward_eval` for one acting step with
  the LSTM state in PufferLib's `lstm_h` / `lstm_c` (both layers' h and c, flattened), `forward` for
  training on `[segments, horizon]` from a zero state, as PufferLib's trainer does.
- Its terminal dashboard is switched off (`print_dashboard`), as ours prints nothing here either.

    python benchmarks/vs_pufferlib.py                         # 2 rounds of 3 timed updates each
    python benchmarks/vs_pufferlib.py --rollouts 2 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see metta_lightning/__main__.py)

import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def import_pufferl():
    """`pufferlib.pufferl`, keeping this process's Ctrl-C handler (importing it installs one that exits)."""
    handler = signal.getsignal(signal.SIGINT)
    import pufferlib.pufferl

    signal.signal(signal.SIGINT, handler)
    return pufferlib.pufferl


def puff_advantage(values, rewards, terminals, ratio, advantages, gamma, gae_lambda, rho_clip, c_clip):
    """PufferLib's advantage in torch, over `[segments, horizon]` float tensors, written into `advantages`.

    Going back from the second-to-last step, with `r` the ratio, `d` the terminal flag of the next step:
    `delta_t = min(r_t, rho_clip) * (reward_{t+1} + gamma * (1 - d_{t+1}) * V_{t+1} - V_t)` and
    `A_t = delta_t + gamma * lambda * min(r_t, c_clip) * (1 - d_{t+1}) * A_{t+1}`; the last step's entry is
    left as it was (the reward of a step is stored with the next observation in PufferLib's buffers)."""
    live = 1.0 - terminals[:, 1:]
    delta = ratio[:, :-1].clamp(max=rho_clip) * (rewards[:, 1:] + gamma * values[:, 1:] * live - values[:, :-1])
    carry = gamma * gae_lambda * ratio[:, :-1].clamp(max=c_clip) * live
    acc = torch.zeros_like(values[:, 0])
    for t in range(values.shape[1] - 2, -1, -1):
        acc = delta[:, t] + carry[:, t] * acc
        advantages[:, t] = acc
    return advantages


def unpack(out):
    """(logits, values, state) from a policy call: a tuple, or named outputs in a mapping."""
    if isinstance(out, tuple):
        return out
    return out["logits"], out["values"], out.get("state", None)


class PufferFast(nn.Module):
    """`models.Fast` behind PufferLib's policy interface (see the module docstring)."""

    def __init__(self, fast):
        super().__init__()
        self.policy = fast
        self.layers, self.width = fast.lstm_layers, fast.hidden_size
        self.hidden_size = self.layers * self.width  # the size PufferLib allocates for lstm_h and lstm_c

    def forward_eval(self, obs, state):
        n = obs.shape[0]
        if state.get("lstm_h") is None:
            lstm = None
        else:
            lstm = torch.stack([state["lstm_h"].view(n, self.layers, self.width),
                                state["lstm_c"].view(n, self.layers, self.width)], dim=1)
        is_init = torch.as_tensor(state["done"]).bool().view(n)  # first observation of a new episode
        logits, values, lstm = unpack(self.policy.forward_step(obs, lstm, is_init))
        state["lstm_h"], state["lstm_c"] = lstm[:, 0].reshape(n, -1), lstm[:, 1].reshape(n, -1)
        return logits, values

    def forward(self, obs, state):
        b, t = obs.shape[:2]
        logits, values, _ = unpack(self.policy.forward_sequence(obs, None, torch.zeros(b, t, dtype=torch.bool)))
        return logits.reshape(b * t, -1), values


def puffer_config(hp: dict, batch: int, data_dir: str, seed: int) -> dict:
    """PuffeRL's train config with our sizes and PPO coefficients."""
    return dict(
        env="metta_lightning", seed=seed, torch_deterministic=False, device="cpu", cpu_offload=False,
        precision="float32", compile=False, compile_mode="default", compile_fullgraph=False, use_rnn=True,
        batch_size=batch, bptt_horizon=hp["bptt_horizon"], minibatch_size=hp["minibatch_size"],
        max_minibatch_size=hp["minibatch_size"], update_epochs=hp["update_epochs"], total_timesteps=10**12,
        optimizer="adam", learning_rate=hp["learning_rate"], adam_beta1=hp["adam_betas"][0],
        adam_beta2=hp["adam_betas"][1], adam_eps=hp["adam_eps"], anneal_lr=False,
        gamma=hp["gamma"], gae_lambda=hp["gae_lambda"], vtrace_rho_clip=hp["vtrace_rho_clip"],
        vtrace_c_clip=hp["vtrace_c_clip"], clip_coef=hp["clip_coef"], vf_clip_coef=hp["vf_clip_coef"],
        vf_coef=hp["vf_coef"], ent_coef=hp["ent_coef"], max_grad_norm=hp["max_grad_norm"],
        prio_alpha=0.8, prio_beta0=0.2,  # PufferLib's defaults (prioritised segment sampling)
        checkpoint_interval=10**9, data_dir=data_dir)


def puffer_path(game, num_envs: int, spec: dict, env_info, hp: dict, batch: int, rollouts: int,
                seed: int) -> tuple[float, float, float, float]:
    """PuffeRL on our engine: agent-steps per wall second and per CPU second of this process, and seconds
    of collection and of update per rollout, over `rollouts` updates after a warm-up one."""
    import pufferlib.vector

    from envs.adapters import MettaGridPufferEnv
    from models.base import build_policy

    pufferl = import_pufferl()
    pufferl.compute_puff_advantage = puff_advantage  # in place of the `_C` kernel
    pufferl.PuffeRL.print_dashboard = lambda self, *a, **k: None
    vec = pufferlib.vector.make(MettaGridPufferEnv, env_kwargs={"config": game, "num_envs": num_envs},
                                backend=pufferlib.vector.Serial, num_envs=1, seed=seed)
    policy = PufferFast(build_policy(spec, env_info))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pufferl.PuffeRL(puffer_config(hp, batch, tmp, seed), vec, policy)
        trainer.evaluate()
        trainer.train()  # warm-up
        start, cpu0, steps0 = time.perf_counter(), time.process_time(), trainer.global_step
        collect = 0.0
        for _ in range(rollouts):
            t0 = time.perf_counter()
            trainer.evaluate()
            collect += time.perf_counter() - t0
            trainer.train()
        steps, wall = trainer.global_step - steps0, time.perf_counter() - start
        rates = steps / wall, steps / (time.process_time() - cpu0), collect / rollouts, (wall - collect) / rollouts
        trainer.utilization.stop()
        vec.close()
    return rates


def fit_path(config: str, rollouts: int) -> tuple[float, float, float, float]:
    """`trainer.fit` through the CLI classes (no logger, checkpoints or progress bar): agent-steps per wall
    second and per CPU second of this process, and seconds of collection and of update per rollout, after
    a warm-up rollout."""
    import lightning as L

    from metta_lightning.cli import main as cli_main

    class Clock(L.Callback):
        def __init__(self):
            self.times = []

            self.starts = []

        def on_train_batch_start(self, trainer, *args):  # the rollout has just been collected
            self.starts.append(time.perf_counter())

        def on_train_batch_end(self, trainer, *args):
            self.times.append((time.perf_counter(), time.process_time()))

    clock = Clock()
    cli = cli_main(["--config", config, "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
                    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                    "--trainer.max_epochs", "1", "--data.rollouts_per_epoch", str(rollouts + 1),
                    "--trainer.callbacks", "[]"],  # no checkpoints or evaluation: PuffeRL runs neither
                   run=False, save_config_callback=None)
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    steps = rollouts * cli.datamodule.batch_size
    (w0, c0), (w1, c1) = clock.times[0], clock.times[-1]
    update = sum(end - start for start, (end, _) in zip(clock.starts[1:], clock.times[1:])) / rollouts
    return steps / (w1 - w0), steps / (c1 - c0), (w1 - w0) / rollouts - update, update


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/arena.yaml")
    p.add_argument("--rollouts", type=int, default=3, help="timed updates per measurement (+1 warm-up)")
    p.add_argument("--rounds", type=int, default=2, help="alternations of ours and PufferLib's")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    # fit's checkpoints go to a temporary folder, not ./train_dir
    data_dir = tempfile.TemporaryDirectory(prefix="vs_pufferlib_")
    os.environ["METTA_DATA_DIR"] = data_dir.name

    import pufferlib

    from metta_lightning.cli import main as cli_main

    cli = cli_main(["--config", args.config], run=False)
    dm, model = cli.datamodule, cli.model
    hp, spec = dict(model.hparams), dict(model.hparams)["policy"]
    n_params = sum(p.numel() for p in model.policy.parameters())
    print(f"policy {spec['class_path']} ({n_params / 1e6:.2f}M params),"
          f" rows {dm.num_rows} ({dm.num_envs} games), horizon {dm.horizon}, batch {dm.batch_size}, minibatch "
          f"{hp['minibatch_size']}, bptt {hp['bptt_horizon']}, epochs {hp['update_epochs']}, threads "
          f"{torch.get_num_threads()}, pufferlib-core {pufferlib.__version__}", flush=True)
    ours, theirs = [], []
    for r in range(args.rounds):
        ours.append(fit_path(args.config, args.rollouts))
        theirs.append(puffer_path(dm.game, dm.num_envs, spec, model.env_info, hp, dm.batch_size, args.rollouts,
                                  seed=r))
        (ow, oc, ocol, oup), (tw, tc, tcol, tup) = ours[-1], theirs[-1]
        print(f"round {r}: ours (fit) {ow:,.0f} agent-steps/s ({oc:,.0f} per CPU s; collect {ocol:.2f} s + "
              f"update {oup:.2f} s per rollout), PufferLib PuffeRL {tw:,.0f} ({tc:,.0f} per CPU s; collect "
              f"{tcol:.2f} s + update {tup:.2f} s), ratio {ow / tw:.2f}x ({oc / tc:.2f}x per CPU s)", flush=True)
    for i, what in enumerate(("per wall-clock second", "per CPU second of this process")):
        o, t = statistics.median(x[i] for x in ours), statistics.median(x[i] for x in theirs)
        print(f"median {what}: ours {o:,.0f} agent-steps/s, PufferLib {t:,.0f}, ours/PufferLib = {o / t:.2f}x "
              f"(goal 1.2x: {'met' if o / t >= 1.2 else 'NOT met'})")
    med = lambda runs, i: statistics.median(x[i] for x in runs)  # noqa: E731
    print(f"median seconds per rollout: ours collect {med(ours, 2):.2f} + update {med(ours, 3):.2f}, "
          f"PufferLib collect {med(theirs, 2):.2f} + update {med(theirs, 3):.2f}")


if __name__ == "__main__":
    main()
