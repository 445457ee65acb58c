"""Experiment loggers: W&B offline by default, CSV or TensorBoard on request.

- :class:`WandbLogger`: Lightning's ``WandbLogger`` with our defaults. The W&B mode is resolved by
  :func:`resolve_wandb_mode`: an explicit ``mode``, else ``$WANDB_MODE``, else ``online`` when
  ``$WANDB_API_KEY`` is set, else ``offline``. An offline run lands in ``<save_dir>/wandb/offline-run-*``;
  ``wandb sync <that dir>`` uploads it later. Select it (or any Lightning logger) from YAML::

      trainer:
        logger:
          class_path: metta_lightning.loggers.WandbLogger      # default in configs/*.yaml
          init_args: {project: metta, save_dir: train_dir}
        # or: {class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: train_dir}}
        # or: {class_path: lightning.pytorch.loggers.TensorBoardLogger, init_args: {save_dir: train_dir}}

- :func:`log_now`: write sampled metrics to every logger at the current logging step.
- :func:`logger_run_ids` and :func:`reattach_wandb`: what ``callbacks.LoggerRunId`` stores in a checkpoint
  and how it continues the same W&B run on resume.

Metric namespaces follow the original Metta: ``overview/sps``, ``overview/reward``, ``env_agent/*``,
``env_game/*``, ``losses/*``, ``eval/*``, ``timing/*``, ``monitor/*`` (and ``grad/*`` for gradients).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any, Literal, Optional

import lightning.pytorch as pl
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

log = logging.getLogger(__name__)

WandbMode = Literal["online", "offline", "disabled", "shared"]

def resolve_wandb_mode(mode: Optional[str] = None) -> str:
    """The W&B mode to run in: ``mode`` if given, else ``$WANDB_MODE``, else ``online`` when
    ``$WANDB_API_KEY`` is set, else ``offline`` (no network needed; ``wandb sync`` uploads later)."""
    if mode:
        return "offline" if mode == "dryrun" else mode
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode:
        return "offline" if env_mode == "dryrun" else env_mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class WandbLogger(_LightningWandbLogger):
    """Lightning's WandbLogger, offline unless W&B is configured, resumable by run id.

    Args:
        project: W&B project name.
        name: display name of the run (defaults to W&B's generated name).
        save_dir: directory under which W&B writes ``wandb/<offline-run-...>``.
        id: run id; pass the id of an earlier run to continue it (``resume="allow"`` is always set).
        mode: ``online``, ``offline`` or ``disabled``; ``None`` resolves it with :func:`resolve_wandb_mode`.
        group: W&B run group (e.g. a sweep or an experiment name).
        tags: W&B run tags.
        **kwargs: forwarded to Lightning's ``WandbLogger`` and then to ``wandb.init``.
    """

    def __init__(
        self,
        project: str = "metta",
        name: Optional[str] = None,
        save_dir: str = "train_dir",
        id: Optional[str] = None,
        mode: Optional[WandbMode] = None,
        group: Optional[str] = None,
        tags: Optional[list[str]] = None,
        **kwargs: Any,
    ) -> None:
        os.makedirs(save_dir, exist_ok=True)
        if os.environ.get("WANDB_MODE") == "":
            # `WANDB_MODE=` (set but empty) means "not set" to us, but wandb's own settings reject it at
            # init, after the mode we pass, with a validation error: drop it.
            del os.environ["WANDB_MODE"]
        kwargs.setdefault("resume", "allow")
        if group is not None:
            kwargs["group"] = group
        if tags is not None:
            kwargs["tags"] = list(tags)
        self.mode = resolve_wandb_mode(mode)
        super().__init__(name=name, save_dir=save_dir, id=id, project=project, mode=self.mode, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)  # deprecated in wandb; passing None only warns

    def reattach(self, run_id: str) -> None:
        """Continue run ``run_id`` instead of the one this logger started (see :func:`reattach_wandb`)."""
        reattach_wandb(self, run_id)


def reattach_wandb(logger: _LightningWandbLogger, run_id: str) -> None:
    """Point a (Lightning) ``WandbLogger`` at run ``run_id``, continuing that run.

    Used on resume when the experiment was already created: Lightning starts it in its setup hook,
    before callback state is restored. The fresh run is finished and, if it was an offline run (nothing
    but W&B's bookkeeping was written to it yet), its directory is removed.
    """
    fresh = logger._experiment
    if fresh is not None and getattr(fresh, "id", None) == run_id:
        return
    fresh_dir = None
    if fresh is not None:
        fresh_dir = os.path.dirname(getattr(fresh, "dir", "") or "") or None  # .../offline-run-X/files
        fresh.finish()
    logger._experiment = None
    logger._id = run_id
    logger._wandb_init["id"] = run_id
    logger._wandb_init["resume"] = "allow"
    _ = logger.experiment  # start the continued run now, before anything is logged
    if fresh_dir and os.path.basename(fresh_dir).startswith("offline-run-"):
        _wait_for_exit_record(fresh_dir)  # wandb-core may still be flushing it after finish() returns
        shutil.rmtree(fresh_dir, ignore_errors=True)
    log.info("W&B logger re-attached to run %s", run_id)


def _wait_for_exit_record(run_dir: str, timeout: float = 10.0) -> bool:
    from metta_lightning.curves import read_wandb_records

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for f in os.listdir(run_dir):
                if f.endswith(".wandb") and any(
                        r.WhichOneof("record_type") == "exit" for r in read_wandb_records(os.path.join(run_dir, f))):
                    return True
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return False


def log_now(trainer: pl.Trainer, metrics: dict[str, float]) -> None:
    """Write `metrics` to every logger now, at the step Lightning logs the current batch's row under.

    For values a callback samples now and then (gradient stats, system monitor, evaluation): through
    `LightningModule.log` they would stay in Lightning's step results and be written again, stale, in
    every later row of the epoch. Loggers' `log_metrics` only write on rank zero."""
    if not metrics:
        return
    # Lightning's logging step counts training batches (rollouts), not optimizer steps (trainer.global_step).
    step = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step)
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)


def logger_run_ids(loggers: list[Logger]) -> list[dict[str, Any]]:
    """One ``{"type", "id"}`` entry per logger: the W&B run id, or the version of the other loggers."""
    out = []
    for lg in loggers:
        if isinstance(lg, _LightningWandbLogger):
            run_id = lg._experiment.id if lg._experiment is not None else lg._id
        else:
            run_id = lg.version
        out.append({"type": type(lg).__name__, "id": None if run_id is None else str(run_id)})
    return out
