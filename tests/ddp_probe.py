"""Test-only callbacks for tests/test_ddp.py, loaded by class path (`ddp_probe.DDPProbe`) in the ranks that
Lightning launches; `tests/` must be on PYTHONPATH."""

from __future__ import annotations

import os
import time

import torch
from lightning.pytorch.callbacks import Callback

from callbacks.evaluate import EvaluateCallback


class DDPProbe(Callback):
    """Each rank dumps what it saw to `<out_dir>/<tag>-rank<r>.pt` at the end of fit: its env seed, a checksum of
    its first rollout, its torch seed, the episodes it finished and the metrics it logged per rollout, the
    checkpoint files it wrote, its evaluation metrics and its final parameters."""

    def __init__(self, out_dir: str, tag: str = "fit") -> None:
        self.out_dir, self.tag = out_dir, tag
        self.first_obs_sum: int | None = None
        self.episodes: list[list[dict]] = []
        self.logged: list[dict[str, float]] = []
        self.rng_at_first_epoch: torch.Tensor | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.torch_seed = torch.initial_seed()
        self.start_step = trainer.global_step

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.rng_at_first_epoch is None:  # after PolicyCheckpoint (listed before) rewound it on a resume
            self.rng_at_first_epoch = torch.get_rng_state()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.episodes.append(batch.episodes)  # what this rank hands to the module, per rollout
        if self.first_obs_sum is None:
            self.first_obs_sum = int(batch.data.get("observation").long().sum())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.logged.append({k: float(v) for k, v in trainer.callback_metrics.items()
                            if k.startswith(("overview/", "losses/", "env_agent/"))})

    def on_fit_end(self, trainer, pl_module) -> None:
        from callbacks.checkpoint import PolicyCheckpoint

        rank, dm = trainer.global_rank, trainer.datamodule
        ckpt = next((c for c in trainer.callbacks if isinstance(c, PolicyCheckpoint)), None)
        ev = next((c for c in trainer.callbacks if isinstance(c, EvaluateCallback)), None)
        os.makedirs(self.out_dir, exist_ok=True)
        torch.save({
            "rank": rank, "world_size": trainer.world_size, "env_seed": dm.env_seed(rank),
            "rows": int(dm.env.batch_size.numel()) if dm.env is not None else None, "torch_seed": self.torch_seed,
            "first_obs_sum": self.first_obs_sum, "rng_at_first_epoch": self.rng_at_first_epoch, "start_step": self.start_step, "global_step": trainer.global_step,
            "agent_steps": pl_module.agent_steps, "frames": dm.batch_size, "episodes": self.episodes,
            "logged": self.logged, "saved": list(ckpt.saved) if ckpt is not None else [],
            "eval_metrics": dict(ev.last_metrics) if ev is not None else {},
            "params": {k: v.detach().cpu().clone() for k, v in pl_module.policy.state_dict().items()},
        }, os.path.join(self.out_dir, f"{self.tag}-rank{rank}.pt"))


class SlowEvaluate(EvaluateCallback):
    """An evaluation that takes `sleep_s` longer than the real one (longer than the DDP timeout in the test)."""

    def __init__(self, sleep_s: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sleep_s = sleep_s

    def evaluate_policy(self, policy, epoch: int) -> dict[str, float]:
        time.sleep(self.sleep_s)
        return super().evaluate_policy(policy, epoch)
