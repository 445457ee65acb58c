"""The MettaGrid arena: game configs, presets, the batched C++ env and its TorchRL wrapper."""

from . import presets
from .config import GameConfig
from .info import EnvInfo

__all__ = ["EnvInfo", "GameConfig", "MettaGrid", "presets"]


def __getattr__(name: str):
    # Import the compiled engine only when it is asked for, so configs work without a build.
    if name == "MettaGrid":
        from .mettagrid import MettaGrid

        return MettaGrid
    raise AttributeError(f"module 'envs' has no attribute {name!r}")
