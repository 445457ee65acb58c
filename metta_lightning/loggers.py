"""Experiment loggers: W&B offline by default, with a CSV log beside it; CSV or TensorBoard on request.

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

- :class:`CSVLogger`: Lightning's ``CSVLogger`` that continues its ``metrics.csv`` when a run resumes
  (Lightning's deletes it) and ends it with a row saying how the run ended. :func:`with_csv_beside_wandb`
  adds one writing ``<run folder>/metrics.csv`` whenever a run logs to W&B: ``curves`` and the dashboard
  read that file, never W&B's private offline format.
- :func:`log_now`: write sampled metrics to every logger at the current logging step.
- :func:`logger_run_ids` and :func:`reattach_wandb`: what ``callbacks.LoggerRunId`` stores in a checkpoint
  and how it continues the same W&B run on resume.

Metric namespaces follow the original Metta: ``overview/sps``, ``overview/reward``, ``env_agent/*``,
``env_game/*``, ``losses/*``, ``eval/*``, ``timing/*``, ``monitor/*`` (and ``grad/*`` for gradients).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import shutil
import time
from typing import Any, Literal, Optional, Union

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter as _CSVWriter
from lightning.pytorch.utilities import rank_zero_only

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
        _wait_until_quiet(fresh_dir)  # wandb-core may still be flushing it after finish() returns
        shutil.rmtree(fresh_dir, ignore_errors=True)
    log.info("W&B logger re-attached to run %s", run_id)


def _wait_until_quiet(folder: str, quiet_s: float = 0.5, timeout: float = 10.0) -> None:
    """Return once no file under ``folder`` has changed for ``quiet_s`` (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        newest = 0.0
        for parent, _, files in os.walk(folder):
            for f in files:
                try:
                    newest = max(newest, os.path.getmtime(os.path.join(parent, f)))
                except OSError:
                    pass
        if time.time() - newest >= quiet_s:
            return
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------- CSV beside W&B
EXIT_CODE_KEY = "_exit_code"
"""The column of the row :class:`CSVLogger` writes when fit ends: 0 when it ended normally, 1 when it failed or
was interrupted. A history whose last row has it ended there; one that goes on was resumed."""

WANDB_RUN_ID_KEY = "wandb_run_id"
"""The hyperparameter (``hparams.yaml`` beside ``metrics.csv``) naming the W&B run the CSV log sits beside."""


class _ContinuingWriter(_CSVWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is continued, not deleted: its columns are
    taken from its header, a last line cut short (a process killed mid-write) is dropped, and a header that
    gains columns is rewritten through a temporary file, so no kill loses the rows already written."""

    last_step = 0
    """The step of the newest row, in the file or logged since."""

    def log_metrics(self, metrics_dict: dict[str, float], step: Optional[int] = None) -> None:
        super().log_metrics(metrics_dict, step)
        self.last_step = self.metrics[-1]["step"]

    def _check_log_dir_exists(self) -> None:
        path = self.metrics_file_path
        if not os.path.isfile(path):
            return
        with open(path, newline="") as f:
            text = f.read()
        if not text.endswith("\n"):
            text = text[:text.rfind("\n") + 1]  # "" if not even the header was whole
            self._replace(text)
        if not text:
            os.remove(path)
            return
        lines = text.splitlines()
        self.metrics_keys = next(csv.reader(lines[:1]))
        last = next(csv.DictReader([lines[0], lines[-1]]), {}) if len(lines) > 1 else {}
        with contextlib.suppress(TypeError, ValueError):
            self.last_step = int(float(last.get("step")))
        if self.metrics_keys != sorted(self.metrics_keys):  # Lightning writes its columns sorted
            self.metrics_keys.sort()
            self._rewrite_with_new_header(self.metrics_keys)

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with open(self.metrics_file_path, newline="") as f:
            rows = list(csv.DictReader(f))
        out = io.StringIO(newline="")
        writer = csv.DictWriter(out, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        self._replace(out.getvalue())

    def _replace(self, text: str) -> None:
        tmp = self.metrics_file_path + ".tmp"
        with open(tmp, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, self.metrics_file_path)


class CSVLogger(_LightningCSVLogger):
    """Lightning's ``CSVLogger`` whose ``metrics.csv`` is one history across resumes.

    Lightning's logger deletes the ``metrics.csv`` of its log dir when it starts (or, without a ``version``,
    starts a ``version_<N+1>`` dir). This one continues the file: a resumed run appends its rows under the
    same header (rewritten when new columns appear), a run killed mid-write loses at most its unfinished
    line. Rows the killed run logged after its last checkpoint stay in the file and the resumed run logs those
    steps again; readers keep the resumed values (`curves.drop_superseded_rows`). When fit ends, a row with
    :data:`EXIT_CODE_KEY` says how.

    Args:
        save_dir: folder of the log (with ``name=""`` and ``version=""``, the defaults, ``metrics.csv`` and
            ``hparams.yaml`` are written in it directly).
        name, version, prefix: as Lightning's (``version=None`` starts a new ``version_<N>`` dir per fit).
        flush_logs_every_n_steps: rows are written at every logging step anyway (the Trainer saves its
            loggers after each), so this is only a bound.
        wandb: the W&B logger this log sits beside: its run id is recorded as :data:`WANDB_RUN_ID_KEY` in
            ``hparams.yaml``, so a W&B run folder leads to this log (``curves``).
    """

    def __init__(self, save_dir: str, name: Optional[str] = "", version: Optional[Union[int, str]] = "",
                 prefix: str = "", flush_logs_every_n_steps: int = 100,
                 wandb: Optional[_LightningWandbLogger] = None) -> None:
        super().__init__(save_dir, name=name, version=version, prefix=prefix,
                         flush_logs_every_n_steps=flush_logs_every_n_steps)
        self._wandb = wandb
        self._wandb_id: Optional[str] = None

    @property
    def experiment(self) -> _CSVWriter:
        if self._experiment is None and rank_zero_only.rank == 0:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return super().experiment

    @rank_zero_only
    def save(self) -> None:
        run = getattr(self._wandb, "_experiment", None)
        run_id = getattr(run, "id", None)
        if run_id and run_id != self._wandb_id:  # the W&B run starts lazily, and a resume re-attaches it
            self._wandb_id = run_id
            self.experiment.log_hparams({WANDB_RUN_ID_KEY: run_id})
        super().save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is None:
            return
        writer = self.experiment
        writer.log_metrics({EXIT_CODE_KEY: 0 if status in ("success", "finished") else 1}, writer.last_step)
        self.save()


def with_csv_beside_wandb(logger: Any, run_folder: str) -> Any:
    """The Trainer's ``logger`` argument with a :class:`CSVLogger` writing ``<run_folder>/metrics.csv``
    added when it logs to W&B and has no CSV logger (W&B stays first: it names the run). Anything else is
    returned as it is."""
    loggers = list(logger) if isinstance(logger, (list, tuple)) else [logger] if isinstance(logger, Logger) else []
    wandb = next((lg for lg in loggers if isinstance(lg, _LightningWandbLogger)), None)
    if wandb is None or any(isinstance(lg, _LightningCSVLogger) for lg in loggers):
        return logger
    return [*loggers, CSVLogger(run_folder, wandb=wandb)]


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
