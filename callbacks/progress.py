"""Terminal progress for RL training: agent steps of the total, SPS, mean reward, hearts, ETA.

Replaces Lightning's batch progress bar (it is a ``ProgressBar`` subclass, so Lightning adds no default
bar beside it). Interactive terminals get a live ``rich`` bar; non-interactive output (cluster logs, CI,
pipes) gets one plain line every ``log_every_s`` seconds plus one at the end, e.g.::

    [progress] 1.57M/10.00M agent steps (15.7%) | 41.2k SPS | reward 0.412 | hearts 1.25 | 0:00:38 elapsed | ETA 0:03:25

Where the numbers come from:

- agent steps: ``pl_module.agent_steps`` (the PPO module's counter); without it, optimizer steps.
- total: ``total_agent_steps`` if given; otherwise estimated from the trainer's ``max_steps`` or
  ``max_epochs`` x batches per epoch. When ``max_time``
  ends the run sooner, ETA is the time left and the total is projected from the current SPS.
- SPS: measured here over the last ~``sps_window_s`` seconds of wall time (not Lightning's step rate).
- reward and hearts: the latest ``overview/reward`` and ``env_agent/heart.gained`` the module logged.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from datetime import timedelta
from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks.progress import ProgressBar

REWARD_KEY = "overview/reward"
HEARTS_KEY = "env_agent/heart.gained"


def human(n: float) -> str:
    """1234567 -> '1.23M'."""
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}" if suffix != "k" else f"{n / div:.1f}k"
    return f"{n:.0f}"


def _fmt_td(seconds: Optional[float]) -> str:
    if seconds is None or seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    return str(timedelta(seconds=int(seconds)))


def _metric(trainer: pl.Trainer, key: str) -> Optional[float]:
    v = trainer.callback_metrics.get(key)
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


class RLProgress(ProgressBar):
    """Progress display with agent steps, SPS, reward, hearts and ETA; one line every N seconds when not a TTY.

    Args:
        total_agent_steps: the run's agent-step budget; default: estimated from max_steps / max_epochs.
        interactive: live ``rich`` bar (True) or periodic plain lines (False); default: stderr is a TTY.
        log_every_s: seconds between plain lines in non-interactive mode.
        sps_window_s: wall-clock window over which SPS is averaged.
    """

    def __init__(
        self,
        total_agent_steps: Optional[int] = None,
        interactive: Optional[bool] = None,
        log_every_s: float = 30.0,
        sps_window_s: float = 30.0,
    ) -> None:
        super().__init__()
        self.total_agent_steps = total_agent_steps
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.log_every_s = log_every_s
        self.sps_window_s = sps_window_s
        self._enabled = True
        self._progress: Any = None
        self._task: Any = None
        self._t0 = 0.0
        self._start_steps = 0.0
        self._hist: deque[tuple[float, float]] = deque()
        self._last_line = 0.0
        self.last_status: dict[str, Any] = {}

    # ProgressBar interface
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.trainer.is_global_zero

    # ------------------------------------------------------------------ status
    def _steps(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[float, str]:
        steps = getattr(pl_module, "agent_steps", None)
        if steps is not None:
            return float(steps), "agent steps"
        return float(trainer.global_step), "updates"

    def _total(self, trainer: pl.Trainer, pl_module: pl.LightningModule, unit: str) -> Optional[float]:
        if unit == "agent steps":
            return float(self.total_agent_steps) if self.total_agent_steps else None
        return float(trainer.max_steps) if trainer.max_steps and trainer.max_steps > 0 else None

    @staticmethod
    def _fraction(trainer: pl.Trainer) -> Optional[float]:
        """Fraction of the run done according to ``max_steps`` or ``max_epochs`` x batches per epoch."""
        fracs = []
        if trainer.max_steps and trainer.max_steps > 0 and trainer.global_step > 0:
            fracs.append(trainer.global_step / trainer.max_steps)
        nb = trainer.num_training_batches
        if trainer.max_epochs and trainer.max_epochs > 0 and isinstance(nb, int) and nb > 0:
            done = trainer.fit_loop.epoch_loop.total_batch_idx + 1
            fracs.append(done / (trainer.max_epochs * nb))
        return min(max(fracs), 1.0) if fracs and max(fracs) > 0 else None

    @staticmethod
    def _time_remaining(trainer: pl.Trainer) -> Optional[float]:
        """Seconds left under ``trainer.max_time`` (Lightning's ``Timer`` callback), or None without one."""
        from lightning.pytorch.callbacks import Timer

        for cb in trainer.callbacks:
            if isinstance(cb, Timer):
                left = cb.time_remaining("train")
                return None if left is None else max(float(left), 0.0)
        return None

    def status(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Current progress numbers (also used for the display)."""
        now = time.monotonic()
        steps, unit = self._steps(trainer, pl_module)
        self._hist.append((now, steps))
        while len(self._hist) > 2 and now - self._hist[1][0] >= self.sps_window_s:
            self._hist.popleft()
        (t_a, s_a), (t_b, s_b) = self._hist[0], self._hist[-1]
        sps = (s_b - s_a) / (t_b - t_a) if t_b > t_a else None
        elapsed = now - self._t0
        total = self._total(trainer, pl_module, unit)
        eta = None
        if total is None:  # estimate the total from the trainer's limits (max_steps / max_epochs)
            frac = self._fraction(trainer)
            if frac:
                total = steps / frac
        if total is not None and sps:
            eta = max(total - steps, 0.0) / sps
        remaining = self._time_remaining(trainer)
        if remaining is not None and sps and (eta is None or remaining < eta):
            # trainer.max_time ends the run first: project the total from the time left
            eta, total = remaining, steps + sps * remaining
        self.last_status = {
            "steps": steps, "unit": unit, "total": total, "sps": sps, "elapsed": elapsed, "eta": eta,
            "reward": _metric(trainer, REWARD_KEY), "hearts": _metric(trainer, HEARTS_KEY),
        }
        return self.last_status

    @staticmethod
    def format_fields(st: dict[str, Any]) -> str:
        parts = [f"{human(st['sps'])} SPS" if st["sps"] is not None else "? SPS"]
        if st["reward"] is not None:
            parts.append(f"reward {st['reward']:.3f}")
        if st["hearts"] is not None:
            parts.append(f"hearts {st['hearts']:.2f}")
        parts.append(f"{_fmt_td(st['elapsed'])} elapsed")
        parts.append(f"ETA {_fmt_td(st['eta'])}")
        return " | ".join(parts)

    def format_line(self, st: dict[str, Any]) -> str:
        done = human(st["steps"])
        if st["total"]:
            head = f"{done}/{human(st['total'])} {st['unit']} ({100.0 * st['steps'] / st['total']:.1f}%)"
        else:
            head = f"{done} {st['unit']}"
        return f"[progress] {head} | {self.format_fields(st)}"

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = self._last_line = time.monotonic()
        steps, unit = self._steps(trainer, pl_module)
        self._hist.clear()
        self._hist.append((self._t0, steps))
        if not self.is_enabled or not self.interactive:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        self._progress = Progress(
            TextColumn("[bold]{task.fields[head]}"), BarColumn(), TextColumn("{task.fields[info]}"),
            console=Console(stderr=True), refresh_per_second=4,
        )
        self._progress.start()
        total = self._total(trainer, pl_module, unit)
        self._task = self._progress.add_task("train", total=total, completed=steps,
                                             head=f"{human(steps)} {unit}", info="")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        if not self.is_enabled:
            return
        st = self.status(trainer, pl_module)
        if self._progress is not None:
            head = f"{human(st['steps'])}/{human(st['total'])}" if st["total"] else human(st["steps"])
            self._progress.update(self._task, completed=st["steps"], total=st["total"],
                                  head=f"{head} {st['unit']}", info=self.format_fields(st))
        elif time.monotonic() - self._last_line >= self.log_every_s:
            self._last_line = time.monotonic()
            print(self.format_line(st), file=sys.stderr, flush=True)

    def _close(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        elif self.is_enabled and self.last_status:
            print(self.format_line(self.status(trainer, pl_module)) + " (done)", file=sys.stderr, flush=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(trainer, pl_module)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
