"""The command line: a LightningCLI over `PPOModule` and `RolloutDataModule`.

    python -m metta_lightning fit --config configs/arena.yaml [--model.learning_rate 0.001 ...]
    python -m metta_lightning fit --config configs/arena.yaml --print_config
    python -m metta_lightning fit --help

Env-derived sizes (`data.env_info`: features, normalisations, actions) are linked into the model at
instantiation, so nobody types them twice. Rollout and minibatch sizes are checked before training.
More subcommands are added by extending `MettaCLI.subcommands()` (a name -> description map of
Trainer methods) or by overriding it in a subclass; see `LightningCLI` docs.
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from .data import RolloutDataModule
from .module import PPOModule

__all__ = ["MettaCLI", "main"]


class MettaCLI(LightningCLI):
    """LightningCLI with the env -> model links and PPO size checks."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # Only `fit` for now: PPO has no validation/test/predict steps. Others add evaluate/analyze/replay.
        return {"fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.env_info", "model.env_info", apply_on="instantiate")

    def before_fit(self) -> None:
        dm, model = self.datamodule, self.model
        model.validate_sizes(dm.num_rows, dm.horizon)


def main(args: list[str] | None = None, run: bool = True, **kwargs: Any) -> MettaCLI:
    """Run the CLI (`args` default to sys.argv). Extra kwargs go to `MettaCLI`."""
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(int(os.environ.get("METTA_TORCH_THREADS", min(2, os.cpu_count() or 1))))
    kwargs.setdefault("seed_everything_default", 0)
    kwargs.setdefault("save_config_kwargs", {"overwrite": True})
    return MettaCLI(PPOModule, RolloutDataModule, args=args, run=run, **kwargs)
