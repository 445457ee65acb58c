"""Torch profiler: every ``epoch_interval`` epochs, trace a few training steps into a Chrome trace.

The trace starts at the beginning of the epoch, before its first rollout is fetched, and stops after
``num_steps`` training steps, so each traced step covers one rollout (the dataloader's ``next``) and its
PPO update; each is marked by a ``TrainStep#<n>`` span. The file ``trace_epoch<E>_rank<R>.json`` goes to
``output_dir``; by default the run folder's ``traces/`` (``metta_lightning.run_folder``, e.g.
``train_dir/<run>/traces``), which ``callbacks.UploadCallback`` copies to ``<remote_prefix>/traces/``. Only
rank zero uploads, so only its traces are copied. Open a trace in ``chrome://tracing`` or https://ui.perfetto.dev. Its path is logged (Python
``logging`` and, on W&B, the run summary key ``profiler/last_trace``).

Epochs profiled: those where ``(epoch + 1) % epoch_interval == 0`` (the first after ``epoch_interval``
epochs of warm-up; ``epoch_interval=1`` profiles every epoch). Resumable: the last profiled epoch is kept
in ``state_dict``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from metta_lightning.run_folder import RunFolder

log = logging.getLogger(__name__)


class TorchProfiler(Callback):
    """Capture a ``torch.profiler`` Chrome trace over ``num_steps`` training steps every ``epoch_interval`` epochs.

    Args:
        epoch_interval: profile epochs ``epoch_interval - 1, 2 * epoch_interval - 1, ...``; 0 disables.
        num_steps: training steps (rollout + update each) captured per trace.
        output_dir: where traces are written; default the run folder's ``traces/``.
        record_shapes: also record operator input shapes (bigger traces, more overhead).
    """

    def __init__(
        self,
        epoch_interval: int = 100,
        num_steps: int = 2,
        output_dir: Optional[str] = None,
        record_shapes: bool = False,
    ) -> None:
        if num_steps < 1:
            raise ValueError("num_steps must be >= 1")
        self.epoch_interval = epoch_interval
        self.num_steps = num_steps
        self.output_dir = output_dir
        self.record_shapes = record_shapes
        self._prof: Optional[torch.profiler.profile] = None
        self._step_rf: Any = None
        self._steps = 0
        self._epoch = -1
        self.last_profiled_epoch = -1
        self.trace_paths: list[str] = []

    # ------------------------------------------------------------------ helpers
    def should_profile(self, epoch: int) -> bool:
        return self.epoch_interval > 0 and (epoch + 1) % self.epoch_interval == 0 and epoch > self.last_profiled_epoch

    def resolve_dir(self, trainer: pl.Trainer) -> str:
        return self.output_dir or RunFolder.of(trainer).traces

    def _start(self, epoch: int) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._prof = torch.profiler.profile(activities=activities, record_shapes=self.record_shapes)
        self._prof.__enter__()
        self._steps = 0
        self._epoch = epoch
        self._open_step()

    def _open_step(self) -> None:
        # One span per training step (rollout fetch + update), like the profiler's own ProfilerStep#N.
        self._step_rf = torch.profiler.record_function(f"TrainStep#{self._steps}")
        self._step_rf.__enter__()

    def _close_step(self) -> None:
        rf, self._step_rf = self._step_rf, None
        if rf is not None:
            rf.__exit__(None, None, None)

    def _stop(self, trainer: pl.Trainer) -> Optional[str]:
        prof, self._prof = self._prof, None
        if prof is None:
            return None
        self._close_step()
        prof.__exit__(None, None, None)
        out_dir = self.resolve_dir(trainer)
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.abspath(os.path.join(out_dir, f"trace_epoch{self._epoch:06d}_rank{trainer.global_rank}.json"))
        prof.export_chrome_trace(path)
        self.last_profiled_epoch = self._epoch
        self.trace_paths.append(path)
        rank_zero_info(f"torch profiler: {self._steps} training steps of epoch {self._epoch} traced to {path}")
        log.info("profiler trace written to %s", path)
        if trainer.is_global_zero:
            for lg in trainer.loggers:
                exp = getattr(lg, "experiment", None)
                summary = getattr(exp, "summary", None)
                if summary is not None and hasattr(summary, "__setitem__"):
                    summary["profiler/last_trace"] = path
        return path

    # ------------------------------------------------------------------ hooks
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._prof is None and self.should_profile(trainer.current_epoch):
            self._start(trainer.current_epoch)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self._prof is None:
            return
        self._close_step()
        self._steps += 1
        if self._steps >= self.num_steps:
            self._stop(trainer)
        elif batch_idx + 1 < trainer.num_training_batches:  # no empty span after the epoch's last batch
            self._open_step()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop(trainer)  # an epoch shorter than num_steps: write what was captured

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self._prof is not None:
            self._close_step()
            self._prof.__exit__(None, None, None)
            self._prof = None

    def state_dict(self) -> dict[str, Any]:
        return {"last_profiled_epoch": self.last_profiled_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_profiled_epoch = int(state_dict.get("last_profiled_epoch", -1))
