"""The run's folder, `<data dir>/<run>/`: one owner for every file a run writes.

The owner is the Trainer's `default_root_dir`: `MettaCLI` sets it to `$METTA_DATA_DIR/<run>` (default
`./train_dir/<run>`) from `--run` (else the logger's name, else "run"), and every callback derives its
paths from it, so none needs to find another:

    <run folder>/checkpoints/<run>:v<N>.mpt|.ckpt    PolicyCheckpoint (and `--ckpt_path last`)
    <run folder>/eval.duckdb                         EvaluateCallback's database
    <run folder>/replays/<run>/v<N>/...              its replays
    <run folder>/traces/trace_epoch<E>_rank<R>.json  TorchProfiler
    <run folder>/metrics.csv, hparams.yaml           the CSV log beside W&B (`loggers.with_csv_beside_wandb`)
    <remote prefix>/<the same relative paths>        UploadCallback copies the folder

A Trainer built without the CLI owns `default_root_dir` the same way (Lightning's default is the
working directory, so pass `default_root_dir=` to name the run).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import lightning.pytorch as pl

__all__ = ["RunFolder"]


@dataclass(frozen=True)
class RunFolder:
    """A run's folder (local, absolute) and the places inside it."""

    root: str

    @classmethod
    def of(cls, trainer: pl.Trainer) -> "RunFolder":
        """The folder of the run `trainer` trains (its `default_root_dir`); the name is checked."""
        from .checkpoint_uris import check_run_name

        folder = cls(os.path.abspath(str(trainer.default_root_dir)))
        check_run_name(folder.name, f"trainer.default_root_dir={trainer.default_root_dir}")
        return folder

    @classmethod
    def for_run(cls, run: str, data_dir: str | None = None) -> "RunFolder":
        """`<data dir>/<run>` (`$METTA_DATA_DIR`, default `./train_dir`)."""
        from .checkpoint_uris import check_run_name, data_dir as default_data_dir

        check_run_name(run)
        return cls(os.path.abspath(os.path.join(data_dir if data_dir is not None else default_data_dir(), run)))

    @property
    def name(self) -> str:
        """The run's name: the folder's name."""
        return os.path.basename(self.root.rstrip(os.sep))

    @property
    def checkpoints(self) -> str:
        return os.path.join(self.root, "checkpoints")

    @property
    def eval_db(self) -> str:
        return os.path.join(self.root, "eval.duckdb")

    @property
    def replays(self) -> str:
        return os.path.join(self.root, "replays")

    @property
    def traces(self) -> str:
        return os.path.join(self.root, "traces")
