"""Wall-clock time per training phase (`timing/*` metrics)."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["PhaseTimer", "time_method"]


class PhaseTimer:
    """Wall-clock seconds per training phase, summed until :meth:`pop` turns them into ``timing/*`` metrics.

    ``with timer("env_step"): ...`` adds the block's duration to ``env_step``. No CUDA synchronisation is done: on a GPU, asynchronous kernels are charged to
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
