"""Keep each logger's run id in the checkpoint, so a resumed run continues the same (W&B) run."""

from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

from metta_lightning.loggers import logger_run_ids, reattach_wandb

__all__ = ["LoggerRunId"]


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
