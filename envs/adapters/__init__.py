"""Adapters that put the engine behind other libraries' env interfaces.

- `MettaGridGymEnv`: a single-agent game as a `gymnasium.Env` (extra `[gym]`).
- `MettaGridPettingZooEnv`: one game as a PettingZoo `ParallelEnv` (extra `[pettingzoo]`).
- `MettaGridPufferEnv`: games as a native `pufferlib.PufferEnv` (extra `[puffer]`, then
  `pip install --no-deps pufferlib-core==3.0.23`; see README).

Each adapter is imported on first use, so only the library it needs has to be installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["MettaGridGymEnv", "MettaGridPettingZooEnv", "MettaGridPufferEnv", "render_rgb"]

_WHERE = {
    "MettaGridGymEnv": (".gym_env", "gymnasium", "gym"),
    "MettaGridPettingZooEnv": (".pettingzoo_env", "pettingzoo", "pettingzoo"),
    "MettaGridPufferEnv": (".puffer_env", "pufferlib", "puffer"),
    "render_rgb": (".common", None, None),
}

if TYPE_CHECKING:
    from .common import render_rgb
    from .gym_env import MettaGridGymEnv
    from .pettingzoo_env import MettaGridPettingZooEnv
    from .puffer_env import MettaGridPufferEnv


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, package, extra = _WHERE[name]
    try:
        mod = importlib.import_module(module, __name__)
    except ModuleNotFoundError as e:
        if package is None or e.name is None or e.name.split(".")[0] != package:
            raise
        hint = (f'pip install -e ".[{extra}]"' if extra != "puffer" else
                'pip install -e ".[puffer]" && pip install --no-deps pufferlib-core==3.0.23')
        raise ModuleNotFoundError(f"{name} needs {package}, which is not installed: {hint}", name=e.name) from e
    value = getattr(mod, name)
    globals()[name] = value
    return value
