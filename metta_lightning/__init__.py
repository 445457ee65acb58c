"""metta_lightning: PPO on the MettaGrid arena with Lightning and TorchRL.

`python -m metta_lightning fit --config configs/arena.yaml`. Nothing is imported or run at import
time beyond this package's names.
"""

__all__ = ["PPOModule", "RolloutDataModule"]


def __getattr__(name: str):
    if name == "PPOModule":
        from .module import PPOModule

        return PPOModule
    if name == "RolloutDataModule":
        from .data import RolloutDataModule

        return RolloutDataModule
    raise AttributeError(f"module 'metta_lightning' has no attribute {name!r}")
