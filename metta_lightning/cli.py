"""The command line: a LightningCLI over `PPOModule` and `RolloutDataModule`.

    python -m metta_lightning fit --config configs/arena.yaml [--model.learning_rate 0.001 ...]
    python -m metta_lightning fit --config configs/arena.yaml --print_config
    python -m metta_lightning fit --help
    python -m metta_lightning evaluate <policy-uri>... --suite arena --db eval.duckdb   (metta_lightning.commands)
    python -m metta_lightning analyze eval.duckdb [...] ; python -m metta_lightning replay <replay.json.z>

Env-derived sizes (`data.env_info`: features, normalisations, actions) are linked into the model at
instantiation, so nobody types them twice. Rollout and minibatch sizes are checked before training.
More subcommands are added by extending `MettaCLI.subcommands()` (a name -> description map of
Trainer methods) or by overriding it in a subclass; see `LightningCLI` docs.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import warnings
from typing import Any, Optional

from lightning.pytorch.callbacks import Callback, ProgressBar
from jsonargparse import DefaultHelpFormatter, lazy_instance
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.trainer import Trainer

from callbacks.gradients import GradientStats
from callbacks.logger_run_id import LoggerRunId
from callbacks.monitor import SystemMonitor
from callbacks.profiler import TorchProfiler
from callbacks.progress import RLProgress

from .commands import COMMANDS, run_command
from .data import RolloutDataModule
from .loggers import WandbLogger, with_csv_beside_wandb
from .module import PPOModule

__all__ = ["MettaCLI", "main"]


TOP_LEVEL_EPILOG = """commands beside fit (not Lightning runs; each has its own --help):
  evaluate  POLICY_URI... [--suite arena] [--db eval.duckdb] [--cross-play]
                  play policies on a simulation suite, append episodes to a DuckDB
                  database, print the table and write the scorecard (--cross-play:
                  every pair of policies in the same games)
  analyze   DB... [--metric heart.gained] [--out DIR]
                  scorecards (policy x simulation) from evaluation databases
  replay    REPLAY | FOLDER | URL [--port 8000] [--no-browser]
                  open a replay in the browser viewer
  curves    RUN_DIR [-o curve.png] [-m env_agent/heart.gained]
                  plot learning curves from a run's metrics.csv
  play      [POLICY_URI] [--game arena_basic | --suite-sim arena/basic] [--agent 0]
                  control one agent from the browser while the policy plays the others
  dashboard [DIR_OR_URI...] [--port 8050]
                  web dashboard over run folders: runs, curves, scorecards, replays

examples:
  python -m metta_lightning fit --config configs/arena.yaml
  python -m metta_lightning fit --config configs/arena.yaml --ckpt_path last
  python -m metta_lightning evaluate train_dir/arena/checkpoints/:latest --suite arena
"""


class _HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's formatter, but the epilog keeps its line breaks."""


class MettaCLI(LightningCLI):
    """LightningCLI with the env -> model links and PPO size checks."""

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("description", "metta_lightning: train, evaluate and inspect MettaGrid agents.")
        kwargs.setdefault("epilog", TOP_LEVEL_EPILOG)
        kwargs.setdefault("formatter_class", _HelpFormatter)
        kwargs.setdefault("prog", "python -m metta_lightning")
        return super().init_parser(**kwargs)

    def _parse_ckpt_path(self) -> None:
        # Lightning loads a local --ckpt_path file here, before `before_fit` resolves it: a damaged or foreign
        # file must fail with our one-line error instead of torch's traceback.
        from metta_lightning.checkpoint import CheckpointError, check_training_state

        ckpt_path = self.config[self.config.subcommand].get("ckpt_path") if self.config.get("subcommand") else None
        if ckpt_path and os.path.isfile(ckpt_path):
            check_training_state(ckpt_path)
        try:
            super()._parse_ckpt_path()
        except (SystemExit, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{ckpt_path}: cannot read the hyperparameters of this training state "
                                  f"({type(e).__name__}: {e})") from None

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        # Lightning checks max_time only when it builds its Timer, with a traceback; say it here, in one line.
        max_time = cfg["trainer"].get("max_time")
        if isinstance(max_time, str) and not re.fullmatch(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}", max_time.strip()):
            raise ValueError(f"trainer.max_time: expected DD:HH:MM:SS (e.g. 00:00:30:00 for 30 minutes), "
                             f"got {max_time!r}")
        self._own_run_folder(cfg)

    @staticmethod
    def _own_run_folder(cfg) -> None:
        """The Trainer's `default_root_dir` is the run folder (`metta_lightning.run_folder`): `$METTA_DATA_DIR/<run>`
        with the run named by `--run`, else the logger's name, else "run". A `default_root_dir` given
        explicitly is the run folder itself (its name is the run's)."""
        from metta_lightning.checkpoint_uris import check_run_name
        from metta_lightning.run_folder import RunFolder

        run, root = cfg.get("run"), cfg["trainer"].get("default_root_dir")
        if root:
            name = os.path.basename(os.path.normpath(str(root)))
            if run is not None and run != name:
                raise ValueError(f"run {run!r} and trainer.default_root_dir={root!r} name different runs (the run "
                                 "folder's name is the run's): give one of them")
            check_run_name(name, f"trainer.default_root_dir={root}")
            cfg["run"] = name
            return
        if run is None:
            run = _logger_name(cfg["trainer"].get("logger")) or "run"
        check_run_name(run, "--run")
        cfg["run"] = run
        cfg["trainer"]["default_root_dir"] = RunFolder.for_run(run).root

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # Only `fit` for now: PPO has no validation/test/predict steps. Others add evaluate/analyze/replay.
        return {"fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.env_info", "model.env_info", apply_on="instantiate")
        parser.add_argument(
            "--run", type=Optional[str], default=None,
            help="Run name: the run's folder is $METTA_DATA_DIR/<run> (default ./train_dir/<run>; checkpoints, "
                 "eval.duckdb, replays, traces), it names the W&B run and `--ckpt_path last` resumes it. Default: "
                 "the logger's name, else 'run'.")
        # Always-on observability callbacks, each configurable: --monitor.interval_s, --profiler.epoch_interval,
        # --grad_stats.every_n_updates, --logger_run_id.reattach (keeps the W&B run id across resumes).
        parser.add_lightning_class_args(LoggerRunId, "logger_run_id")
        parser.add_lightning_class_args(SystemMonitor, "monitor")
        parser.add_lightning_class_args(GradientStats, "grad_stats")
        parser.add_lightning_class_args(TorchProfiler, "profiler")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        # The RL progress display replaces Lightning's bar unless the config disables it or names its own.
        given = config.get("callbacks") or []
        given = given if isinstance(given, list) else [given]
        if config.get("enable_progress_bar") is not False and not any(
                isinstance(c, ProgressBar) for c in [*given, *callbacks]):
            callbacks = [*callbacks, RLProgress()]
        # A run that logs to W&B also writes <run folder>/metrics.csv, which `curves` and the dashboard read.
        config = {**config, "logger": with_csv_beside_wandb(config.get("logger"), config["default_root_dir"])}
        return super()._instantiate_trainer(config, callbacks)

    def before_fit(self) -> None:
        dm, model = self.datamodule, self.model
        # Per-rank sizes; checked here, before Lightning launches the other DDP ranks, so bad sizes fail
        # once with the same message as a single-process run.
        world = self.trainer.world_size
        model.validate_sizes(dm.rows_per_rank(world), dm.horizon, world, dm.batch_semantics)
        # --ckpt_path last | <path, fsspec URL, <dir>/:latest, run name> -> a local state file
        from callbacks.checkpoint import resolve_ckpt_path

        cfg = self.config_init[self.subcommand]
        self._name_wandb_run(cfg.get("run"))
        self._check_evaluation_interval()
        if cfg.get("ckpt_path"):
            cfg["ckpt_path"] = resolve_ckpt_path(self.trainer, cfg["ckpt_path"])
        self._refuse_to_overwrite(cfg.get("ckpt_path"))
        self._announce_time_left(cfg.get("ckpt_path"))

    def _name_wandb_run(self, run: Optional[str]) -> None:
        init = getattr(self.trainer.logger, "_wandb_init", None)  # W&B creates its run lazily: name it now
        if run and isinstance(init, dict) and not init.get("name"):
            init["name"] = run

    def _check_evaluation_interval(self) -> None:
        # The CLI composes the callbacks, so it checks how two of them fit together: an evaluation names the
        # checkpoint of its epoch (<run>:v<epoch>), which must then exist.
        from callbacks.checkpoint import PolicyCheckpoint
        from callbacks.evaluate import EvaluateCallback

        ckpt = next((cb for cb in self.trainer.callbacks if isinstance(cb, PolicyCheckpoint)), None)
        for cb in self.trainer.callbacks:
            if isinstance(cb, EvaluateCallback) and ckpt is not None and cb.epoch_interval % ckpt.epoch_interval:
                raise ValueError(f"EvaluateCallback(epoch_interval={cb.epoch_interval}) must be a multiple of "
                                 f"PolicyCheckpoint(epoch_interval={ckpt.epoch_interval}): evaluations name the "
                                 "checkpoint of their epoch")

    def _announce_time_left(self, ckpt_path: Optional[str]) -> None:
        """`max_time` counts the training time of every segment of a run (Lightning's Timer is resumed with
        it): say at the start how much a resumed run has left, and when that is nothing."""
        from lightning.pytorch.callbacks import Timer

        timer = next((cb for cb in self.trainer.callbacks if isinstance(cb, Timer)), None)
        limit = getattr(timer, "_duration", None)
        if not ckpt_path or limit is None:
            return
        import datetime

        import torch

        saved = torch.load(ckpt_path, map_location="cpu", weights_only=True).get("callbacks", {})
        used = next((float(v.get("time_elapsed", {}).get("train", 0.0)) for k, v in saved.items()
                     if k.startswith("Timer") and isinstance(v, dict)), 0.0)

        def hms(seconds: float) -> str:
            return str(datetime.timedelta(seconds=round(seconds)))

        if used >= limit:
            print(f"warning: nothing to train: this run already trained {hms(used)} of its "
                  f"--trainer.max_time {hms(limit)} (the limit counts every segment of a resumed run). To train "
                  f"longer, raise it, e.g. --trainer.max_time {_dd_hh_mm_ss(used + limit)}.", file=sys.stderr)
        else:
            print(f"resuming: {hms(used)} of --trainer.max_time {hms(limit)} already used; training at most "
                  f"{hms(limit - used)} more.", file=sys.stderr)

    def _refuse_to_overwrite(self, ckpt_path: Optional[str]) -> None:
        # A fresh run must not write its v1, v2, ... over (or between) the checkpoints of an earlier run.
        from metta_lightning import checkpoint_uris as uris
        from metta_lightning.run_folder import RunFolder

        folder = RunFolder.of(self.trainer)
        if ckpt_path or not os.path.isdir(folder.checkpoints):
            return
        try:
            newest = uris.latest_artifact(folder.checkpoints, run=folder.name, suffix=".ckpt").path
        except uris.CheckpointError:
            return
        raise SystemExit(
            f"run {folder.name!r} already has checkpoints in {folder.checkpoints} (newest: {os.path.basename(newest)}). "
            "Resume it with `--ckpt_path last`, or start another run with `--run <new name>`.")


def _logger_name(logger: Any) -> Optional[str]:
    """The name a logger in the config gives its runs, as Lightning's `logger.name` would: a CSV or
    TensorBoard logger's `name`, a W&B logger's `project` (default "metta"); None if it has no valid one."""
    from metta_lightning.checkpoint_uris import RUN_NAME_RE

    if isinstance(logger, list):
        logger = logger[0] if logger else None
    init = getattr(logger, "init_args", None) or (logger.get("init_args") if isinstance(logger, dict) else None)
    class_path = getattr(logger, "class_path", None) or (logger.get("class_path") if isinstance(logger, dict) else "")
    if init is None:
        return None
    get = init.get if hasattr(init, "get") else lambda k, d=None: getattr(init, k, d)
    name = get("project", "metta") if str(class_path).endswith("WandbLogger") else get("name", None)
    return name if isinstance(name, str) and RUN_NAME_RE.match(name) else None


def _dd_hh_mm_ss(seconds: float) -> str:
    minutes = -(-int(seconds) // 60)  # rounded up to whole minutes
    return f"{minutes // 1440:02d}:{minutes // 60 % 24:02d}:{minutes % 60:02d}:00"


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def _quiet_lightning_noise() -> None:
    """Lightning advertises its cloud products on every run (our users run offline), warns about its own use
    of a deprecated torch API, and about `__len__` on iterable datasets, which only matters with
    DataLoader workers (the collector steps the envs; the DataLoader has none)."""
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _NoTips) for f in log.filters):
        log.addFilter(_NoTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
    # PolicyCheckpoint records a cut-short epoch as unfinished and the data module restarts its games on
    # resume: the rollout stream needs no dataloader state, so Lightning's warning about it does not apply.
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")


def main(args: list[str] | None = None, run: bool = True, **kwargs: Any) -> MettaCLI:
    """Run the CLI (`args` default to sys.argv). Extra kwargs go to `MettaCLI`.

    `evaluate`, `analyze` and `replay` are not Lightning runs: they go to `metta_lightning.commands`."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in COMMANDS:
        sys.exit(run_command(argv))
    _quiet_lightning_noise()
    from .threads import configure_torch_threads

    configure_torch_threads()
    kwargs.setdefault("seed_everything_default", 0)
    kwargs.setdefault("save_config_kwargs", {"overwrite": True})
    # W&B by default, offline unless WANDB_MODE / WANDB_API_KEY say otherwise; a config's trainer.logger wins.
    kwargs.setdefault("trainer_defaults", {"logger": lazy_instance(WandbLogger, save_dir="train_dir")})
    return MettaCLI(PPOModule, RolloutDataModule, args=args, run=run, **kwargs)
