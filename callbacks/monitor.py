"""System monitor: process/system CPU and memory, GPU memory and utilisation, and an RSS leak detector.

Logged under ``monitor/*`` at the end of a training batch, straight to the loggers at that global step
(``metta_lightning.loggers.log_now``): the first time at the first batch Lightning logs for
(``log_every_n_steps``), then at most once every ``interval_s`` seconds, again on such batches:

- ``monitor/cpu_percent``          this process, % of one core (can exceed 100 with threads)
- ``monitor/system_cpu_percent``   whole machine, % of all cores
- ``monitor/rss_mb``               this process's resident set size
- ``monitor/available_mb``         memory available to new processes on the machine
- ``monitor/system_memory_percent``
- ``monitor/num_threads``
- ``monitor/rss_slope_mb_per_min`` slope of a least-squares line through the last ``leak_window`` RSS samples
- ``monitor/gpu{i}/mem_allocated_mb``, ``mem_reserved_mb``, ``max_mem_allocated_mb``, ``mem_total_mb``,
  ``utilization`` (the last needs NVML: ``pynvml``/``nvidia-ml-py``), when CUDA is present

The leak detector warns (once per window) when RSS grows steadily: slope above ``leak_mb_per_min`` and
the line explains most of the variance (r^2 >= 0.8) over a full window. The original Metta leaked memory
over long runs; this makes the symptom visible early.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Optional

import lightning.pytorch as pl
import psutil
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from metta_lightning.loggers import log_now

log = logging.getLogger(__name__)

_MB = 1024.0 * 1024.0


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope and r^2 of ``ys`` against ``xs`` (0, 0 for fewer than 2 distinct x)."""
    n = len(xs)
    if n < 2:
        return 0.0, 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    if sxx == 0:
        return 0.0, 0.0
    slope = sxy / sxx
    r2 = (sxy * sxy) / (sxx * syy) if syy > 0 else 0.0
    return slope, r2


class SystemMonitor(Callback):
    """Log process/system CPU, memory and GPU usage under ``monitor/*``; warn on steady RSS growth.

    Args:
        interval_s: sample at most once every this many seconds (checked after each training batch); the
            first sample is taken at the first logged batch.
        leak_window: number of RSS samples the leak detector fits a line through.
        leak_mb_per_min: warn when RSS grows faster than this (MB per minute) steadily over the window.
    """

    def __init__(self, interval_s: float = 10.0, leak_window: int = 30, leak_mb_per_min: float = 5.0) -> None:
        if leak_window < 3:
            raise ValueError("leak_window must be >= 3")
        self.interval_s = interval_s
        self.leak_window = leak_window
        self.leak_mb_per_min = leak_mb_per_min
        self._proc = psutil.Process()
        self._rss: deque[tuple[float, float]] = deque(maxlen=leak_window)  # (minutes, MB)
        self._t0 = time.monotonic()
        self._last_sample: Optional[float] = None
        self._samples_since_warning = leak_window
        self.last_metrics: dict[str, float] = {}
        self.leak_warnings = 0

    # ------------------------------------------------------------------ sampling
    def sample(self) -> dict[str, float]:
        """Take one sample now and return the ``monitor/*`` metrics (also kept in ``last_metrics``)."""
        p = self._proc
        with p.oneshot():
            rss_mb = p.memory_info().rss / _MB
            m = {
                "monitor/cpu_percent": float(p.cpu_percent(interval=None)),
                "monitor/rss_mb": rss_mb,
                "monitor/num_threads": float(p.num_threads()),
            }
        vm = psutil.virtual_memory()
        m["monitor/system_cpu_percent"] = float(psutil.cpu_percent(interval=None))
        m["monitor/available_mb"] = vm.available / _MB
        m["monitor/system_memory_percent"] = float(vm.percent)
        m.update(self._gpu_metrics())

        self._rss.append(((time.monotonic() - self._t0) / 60.0, rss_mb))
        slope, r2 = linear_fit([t for t, _ in self._rss], [r for _, r in self._rss])
        m["monitor/rss_slope_mb_per_min"] = slope
        self._samples_since_warning += 1
        if (
            len(self._rss) == self.leak_window
            and slope > self.leak_mb_per_min
            and r2 >= 0.8
            and self._samples_since_warning >= self.leak_window
        ):
            self._samples_since_warning = 0
            self.leak_warnings += 1
            grown = self._rss[-1][1] - self._rss[0][1]
            rank_zero_warn(
                f"RSS grew steadily by {grown:.0f} MB over the last {len(self._rss)} samples "
                f"({slope:.1f} MB/min, r^2={r2:.2f}, now {rss_mb:.0f} MB): possible memory leak"
            )
        self.last_metrics = m
        return m

    @staticmethod
    def _gpu_metrics() -> dict[str, float]:
        if not torch.cuda.is_available():
            return {}
        out: dict[str, float] = {}
        for i in range(torch.cuda.device_count()):
            pre = f"monitor/gpu{i}/"
            out[pre + "mem_allocated_mb"] = torch.cuda.memory_allocated(i) / _MB
            out[pre + "mem_reserved_mb"] = torch.cuda.memory_reserved(i) / _MB
            out[pre + "max_mem_allocated_mb"] = torch.cuda.max_memory_allocated(i) / _MB
            try:
                free, total = torch.cuda.mem_get_info(i)
                out[pre + "mem_total_mb"] = total / _MB
                out[pre + "mem_used_mb"] = (total - free) / _MB
            except RuntimeError:
                pass
            try:
                out[pre + "utilization"] = float(torch.cuda.utilization(i))
            except Exception:  # NVML (pynvml) missing or unsupported: utilisation is optional
                pass
        return out

    def _maybe_log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = time.monotonic()
        if self._last_sample is not None and now - self._last_sample < self.interval_s:
            return
        if not getattr(trainer._logger_connector, "should_update_logs", True):
            return  # keep to the run's log_every_n_steps cadence: sample at the next logging step
        self._last_sample = now
        log_now(trainer, self.sample())

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._proc.cpu_percent(interval=None)  # prime: the first call always returns 0.0
        psutil.cpu_percent(interval=None)
        self._t0 = time.monotonic()
        # First sample at the first logging batch (CPU % then covers the time since this priming),
        # so even a run shorter than interval_s logs monitor/*; then at most once every interval_s.
        self._last_sample = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        self._maybe_log(trainer, pl_module)
