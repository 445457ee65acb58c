"""Experiment loggers: W&B offline by default, CSV or TensorBoard on request, run ids kept across resumes.

Three pieces:

- :class:`WandbLogger`: Lightning's ``WandbLogger`` with our defaults. The W&B mode is resolved by
  :func:`resolve_wandb_mode`: an explicit ``mode``, else ``$WANDB_MODE``, else ``online`` when
  ``$WANDB_API_KEY`` is set, else ``offline``. An offline run lands in ``<save_dir>/wandb/offline-run-*``;
  ``wandb sync <that dir>`` uploads it later. Select it (or any Lightning logger) from YAML::

      trainer:
        logger:
          class_path: metta_lightning.logging.WandbLogger      # default in configs/*.yaml
          init_args: {project: metta, save_dir: train_dir}
        # or: {class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: train_dir}}
        # or: {class_path: lightning.pytorch.loggers.TensorBoardLogger, init_args: {save_dir: train_dir}}

- :func:`make_logger`: the same choice as a function (``"wandb" | "csv" | "tensorboard" | "none"``).
- :class:`LoggerRunId`: a callback that stores each logger's run id in the checkpoint (its ``state_dict``)
  and, on ``fit(ckpt_path=...)``, re-attaches the logger to that id, so a resumed run continues the same
  W&B run. :func:`run_id_from_checkpoint` reads the stored id without a Trainer (the CLI can pass it as
  ``WandbLogger(id=...)`` before the logger starts, which avoids the throwaway run that a late
  re-attach leaves behind).

Metric namespaces follow the original Metta: ``overview/sps``, ``overview/reward``, ``env_agent/*``,
``env_game/*``, ``losses/*``, ``eval/*``, ``timing/*``, ``monitor/*`` (and ``grad/*`` for gradients).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Iterator, Literal, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

log = logging.getLogger(__name__)

WandbMode = Literal["online", "offline", "disabled", "shared"]
LoggerKind = Literal["wandb", "csv", "tensorboard", "none"]

METRIC_NAMESPACES = (
    "overview/", "env_agent/", "env_game/", "losses/", "eval/", "timing/", "monitor/", "grad/",
)


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


def make_logger(
    kind: LoggerKind = "wandb",
    save_dir: str = "train_dir",
    name: Optional[str] = None,
    **kwargs: Any,
) -> Optional[Logger]:
    """Build the experiment logger by name.

    Args:
        kind: ``wandb`` (offline unless configured), ``csv``, ``tensorboard`` or ``none``.
        save_dir: root directory for the logs.
        name: run / experiment name.
        **kwargs: forwarded to the logger's constructor (e.g. ``project``, ``id`` for W&B, ``version``).
    """
    if kind == "wandb":
        return WandbLogger(save_dir=save_dir, name=name, **kwargs)
    if kind == "csv":
        return CSVLogger(save_dir=save_dir, name=name or "csv", **kwargs)
    if kind == "tensorboard":
        return TensorBoardLogger(save_dir=save_dir, name=name or "tensorboard", **kwargs)
    if kind == "none":
        return None
    raise ValueError(f"unknown logger kind {kind!r}; expected wandb, csv, tensorboard or none")


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


def run_id_from_checkpoint(checkpoint: str | dict, logger_type: str = "WandbLogger") -> Optional[str]:
    """The run id stored by :class:`LoggerRunId` in a checkpoint (a path/URL or a loaded dict), or None."""
    if not isinstance(checkpoint, dict):
        from lightning.fabric.utilities.cloud_io import _load as pl_load

        checkpoint = pl_load(checkpoint, map_location="cpu", weights_only=True)
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if key.startswith(LoggerRunId.__qualname__) and isinstance(state, dict):
            for entry in state.get("loggers", []):
                if entry.get("type") == logger_type and entry.get("id"):
                    return entry["id"]
    return None


class LoggerRunId(Callback):
    """Keep the logger's run id in the checkpoint so a resumed run continues the same run.

    Saves ``{"loggers": [{"type": "WandbLogger", "id": "<run id>"}, ...]}`` as this callback's state.
    On ``fit(ckpt_path=...)`` it re-attaches a W&B logger to the stored id (see
    :meth:`WandbLogger.reattach`; a plain Lightning ``WandbLogger`` is re-attached the same way) and
    points a TensorBoard logger at the stored version. A CSV logger starts a new version on resume
    (Lightning's CSV writer would delete the earlier ``metrics.csv``); :mod:`metta_lightning.curves`
    joins the versions.

    Args:
        reattach: re-attach loggers to the stored ids on resume (``False`` only records them).
    """

    def __init__(self, reattach: bool = True) -> None:
        self.reattach = reattach
        self._trainer: Optional[pl.Trainer] = None
        self.restored: list[dict[str, Any]] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        loggers = self._trainer.loggers if self._trainer is not None else []
        return {"loggers": logger_run_ids(loggers)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.restored = list(state_dict.get("loggers", []))
        if not self.reattach or self._trainer is None:
            return
        for lg in self._trainer.loggers:
            entry = next((e for e in self.restored if e.get("type") == type(lg).__name__ and e.get("id")), None)
            if entry is None:
                continue
            if isinstance(lg, _LightningWandbLogger):
                if not self._trainer.is_global_zero:
                    continue  # Lightning only starts the experiment on rank 0
                reattach_wandb(lg, entry["id"])
            elif isinstance(lg, TensorBoardLogger):
                lg._version = _as_version(entry["id"])
                lg._experiment = None


def _as_version(v: str) -> int | str:
    return int(v) if v.isdigit() else v


class PhaseTimer:
    """Wall-clock seconds per training phase, summed until :meth:`pop` turns them into ``timing/*`` metrics.

    ``with timer("env_step"): ...`` adds the block's duration to ``env_step``; ``timer.add("rollout", s)``
    adds a measured duration. No CUDA synchronisation is done: on a GPU, asynchronous kernels are charged to
    the phase that waits for them.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] += seconds

    def pop(self, prefix: str = "timing/") -> dict[str, float]:
        """The summed seconds as ``{prefix + phase: seconds}``, then reset."""
        out = {prefix + k: v for k, v in self.seconds.items()}
        self.seconds = defaultdict(float)
        return out


def time_method(obj: Any, name: str, timer: PhaseTimer, phase: str) -> None:
    """Charge every call of ``obj.<name>`` to ``timer``'s ``phase`` (wraps the bound method on the instance).

    Used to time a phase inside code we do not own, e.g. the TorchRL env's ``_step`` for ``timing/env_step``.
    """
    method = getattr(obj, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        with timer(phase):
            return method(*args, **kwargs)

    object.__setattr__(obj, name, timed)
