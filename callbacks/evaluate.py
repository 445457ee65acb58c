"""Periodic evaluation of the policy being trained on a simulation suite.

Every `epoch_interval` completed epochs and when fit ends (the CLI checks that the interval is a multiple of
`PolicyCheckpoint.epoch_interval`, so each evaluation names a policy artifact that exists: `<run>:v<epoch>`),
on rank zero only, the current policy plays every simulation of `suite` on env instances of its own (eval
mode, its own RNG, so training's RNG streams and games are untouched). Episodes are appended to the run's
stats database, `eval/<suite>/score` and `eval/<suite>/<sim>` (mean episode return per agent) go to every
logger, and the first `replay_episodes` episodes of each simulation are kept as replays. Files, by default
in the run folder (`metta_lightning.run_folder`, beside `checkpoints/`; `UploadCallback` copies them):

    <run folder>/eval.duckdb                                  the run's database (`analyze` reads it)
    <run folder>/replays/<run>/v<epoch>/<suite>/<sim>/*.json.z   (`replay` opens them)

With an opponent pool (`opponents`: policy URIs or the NPCs `random` / `noop`; `past_checkpoints`: the run's
own newest earlier checkpoints) the policy also plays each opponent in the same games (cross-play, half
the agents each); the matches go to the same database (`agent_policies` names each agent's policy) and
`eval/<suite>/vs/<opponent>` is logged.

In the background (`background`, on by default under DDP) rank zero evaluates a copy of the weights in
a thread while training goes on: evaluation is then outside every collective, so however long it takes
the other ranks never wait on it in an all-reduce or barrier (no collective timeout to raise). Its
metrics are logged, with `eval/epoch` naming the checkpoint, at the first training step after it ends,
and fit waits for a running evaluation only once no collective is left (`on_fit_end`). An evaluation
still running when the next one is due makes that one skip, with a warning.

YAML:
    trainer:
      callbacks:
        - class_path: callbacks.evaluate.EvaluateCallback
          init_args: {suite: arena, epoch_interval: 10}
"""

from __future__ import annotations

import copy
import logging
import os
import re
import threading
import time
from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from metta_lightning.loggers import log_now
from metta_lightning.run_folder import RunFolder

log = logging.getLogger(__name__)

__all__ = ["EvaluateCallback"]


class EvaluateCallback(Callback):
    """Evaluate the current policy on a suite every `epoch_interval` epochs (rank zero only).

    Args:
        suite: suite name (`arena`, `smoke`), one simulation (`arena/combat`), a comma list or a YAML file.
        epoch_interval: evaluate after every this many completed epochs; must be a multiple of the
            `PolicyCheckpoint` interval when one is used (never more often than checkpoints).
        db_uri: the stats database to append to (any fsspec URL); default `<run folder>/eval.duckdb`.
        replay_episodes: episodes recorded as replays per simulation (0: none).
        background: evaluate a snapshot of the weights in a thread while training continues (see the
            module doc); None: only when training on more than one rank (DDP).
        evaluate_at_end: also evaluate (with replays) when fit ends, unless its last epoch was just evaluated,
            so every run has an evaluation and a replay however few epochs it managed.
        opponents: an opponent pool: policy URIs or NPC names (`random`, `noop`) that the policy also plays
            against, in the same games (cross-play: each side plays half the agents), on every simulation
            of `suite`; logged as `eval/<suite>/vs/<opponent>` (the policy's mean episode return per agent).
        past_checkpoints: also play against this many of the run's own newest earlier checkpoints.
    """

    def __init__(self, suite: str = "arena", epoch_interval: int = 10, db_uri: Optional[str] = None,
                 replay_episodes: int = 1, background: Optional[bool] = None, evaluate_at_end: bool = True,
                 opponents: Optional[list[str]] = None, past_checkpoints: int = 0) -> None:
        if epoch_interval < 1:
            raise ValueError(f"EvaluateCallback(epoch_interval={epoch_interval}): must be >= 1")
        if past_checkpoints < 0:
            raise ValueError(f"EvaluateCallback(past_checkpoints={past_checkpoints}): must be >= 0")
        from metta_lightning.simulation import resolve_suite

        self.suite = resolve_suite(suite)  # an unknown name fails at construction, not hours into a run
        self.epoch_interval = int(epoch_interval)
        self.db_uri = db_uri
        self.replay_episodes = int(replay_episodes)
        self.background = background
        self.evaluate_at_end = evaluate_at_end
        self.opponents = list(opponents or [])
        self.past_checkpoints = int(past_checkpoints)
        self._opponent_handles: dict[str, Any] = {}  # loaded once, by URI
        self.checkpoint_dir: Optional[str] = None
        self._trained = False  # whether this fit trained at all (a resume past max_time does not)
        self._thread: Optional[threading.Thread] = None
        self._running_epoch = 0
        self._outcome: Optional[tuple[int, dict[str, float] | BaseException]] = None  # (epoch, metrics | error)
        self.run: Optional[str] = None
        self.replay_dir: Optional[str] = None
        self.last_epoch: Optional[int] = None
        self.last_metrics: dict[str, float] = {}

    @property
    def state_key(self) -> str:
        return "EvaluateCallback"

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "last_metrics": dict(self.last_metrics)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_epoch = state_dict.get("last_epoch")
        self.last_metrics = dict(state_dict.get("last_metrics", {}))

    def resolve_paths(self, trainer: pl.Trainer) -> tuple[str, str]:
        """The run name, the database URI and the replay folder, from the run folder (fixed at the first call)."""
        folder = RunFolder.of(trainer)
        self.run = self.run or folder.name
        if self.db_uri is None:
            self.db_uri = folder.eval_db
        if self.replay_dir is None:
            self.replay_dir = folder.replays
        self.checkpoint_dir = self.checkpoint_dir or folder.checkpoints
        return self.db_uri, self.replay_dir

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1  # completed epochs, as PolicyCheckpoint names them
        if epoch % self.epoch_interval or self.last_epoch == epoch:
            return
        background = self.background if self.background is not None else trainer.world_size > 1
        if not background:
            self.evaluate(trainer, pl_module, epoch)
            return
        self.last_epoch = epoch
        if not trainer.is_global_zero:
            return
        self._log_finished(trainer)
        if self._thread is not None and self._thread.is_alive():
            log.warning("evaluation of %s:v%d still running; skipping v%d (raise epoch_interval)",
                        self.run, self._running_epoch, epoch)
            return
        self.resolve_paths(trainer)
        policy = copy.deepcopy(pl_module.policy)  # the weights of this epoch's checkpoint, whatever trains next
        self._running_epoch = epoch
        self._thread = threading.Thread(target=self._evaluate_in_thread, args=(policy, epoch),
                                        name=f"evaluate-v{epoch}", daemon=True)
        self._thread.start()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        self._trained = True
        if self._outcome is not None:
            self._log_finished(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the strategy's teardown: no rank waits on rank zero in a collective any more.
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._log_finished(trainer)  # publishing also hands the new database and replays to upload callbacks
        # Every fit ends evaluated, with replays, whatever the interval and however few epochs it managed.
        final = self._final_epoch(trainer)
        if self.evaluate_at_end and self._trained and final > 0 and self.last_epoch != final:
            self.evaluate(trainer, pl_module, final)

    @staticmethod
    def _final_epoch(trainer: pl.Trainer) -> int:
        """The epoch the run's last checkpoint is named after: the epochs ended, an epoch cut short by
        max_time or max_steps included (Lightning counts it as ended when fit stops)."""
        return int(trainer.current_epoch)

    def _evaluate_in_thread(self, policy, epoch: int) -> None:
        try:
            self._outcome = (epoch, self.evaluate_policy(policy, epoch))
        except BaseException as e:  # noqa: BLE001 - re-raised on the training thread
            self._outcome = (epoch, e)

    def _log_finished(self, trainer: pl.Trainer) -> None:
        """Log a finished background evaluation (on the training thread: loggers are not thread safe)."""
        outcome, self._outcome = self._outcome, None
        if outcome is None:
            return
        epoch, metrics = outcome
        if isinstance(metrics, BaseException):
            raise RuntimeError(f"background evaluation of {self.run}:v{epoch} failed") from metrics
        self._publish(trainer, epoch, {**metrics, "eval/epoch": float(epoch)})

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> dict[str, float]:
        """Run the suite now (rank zero), append to the database, log and return the metrics."""
        self.last_epoch = epoch
        if not trainer.is_global_zero:
            return {}
        self.resolve_paths(trainer)
        metrics = self.evaluate_policy(pl_module.policy, epoch)
        self._publish(trainer, epoch, metrics)
        return metrics

    def evaluate_policy(self, policy, epoch: int) -> dict[str, float]:
        """Play the suite with `policy` as `<run>:v<epoch>`, append to the database; the metrics to log."""
        from metta_lightning.simulation import PolicyHandle, play_pair, run_suite
        from metta_lightning.stats_db import StatsDB

        start = time.perf_counter()
        handle = PolicyHandle(policy, key=self.run, version=epoch)
        with StatsDB(self.db_uri) as db:
            result = run_suite(handle, self.suite, db=db,
                               replay_dir=self.replay_dir if self.replay_episodes else None,
                               replay_episodes=self.replay_episodes)
            metrics = result.log_dict("eval")
            for opponent in self.opponent_pool(epoch):
                matches = play_pair(handle, opponent, self.suite, db=db,
                                    replay_dir=self.replay_dir if self.replay_episodes else None,
                                    replay_episodes=self.replay_episodes)
                metrics[f"eval/{self.suite.name}/vs/{opponent.label}"] = float(
                    sum(m.mean_rewards()[0] for m in matches) / len(matches))
        metrics["eval/seconds"] = time.perf_counter() - start
        return metrics

    def opponent_pool(self, epoch: int) -> list:
        """The policies to play against at `epoch`: `opponents`, then the newest `past_checkpoints` of this
        run's own checkpoints before `epoch`."""
        from metta_lightning.simulation import load_policy_handle

        uris = list(self.opponents)
        if self.past_checkpoints and self.checkpoint_dir and os.path.isdir(self.checkpoint_dir):
            earlier = []
            for name in os.listdir(self.checkpoint_dir):
                m = re.fullmatch(rf"{re.escape(self.run or '')}:v(\d+)\.mpt", name)
                if m and int(m.group(1)) < epoch:
                    earlier.append((int(m.group(1)), os.path.join(self.checkpoint_dir, name)))
            uris += [path for _, path in sorted(earlier)[-self.past_checkpoints:]]
        pool = []
        for uri in uris:
            if uri not in self._opponent_handles:
                self._opponent_handles[uri] = load_policy_handle(uri)
            pool.append(self._opponent_handles[uri])
        return pool

    def _publish(self, trainer: pl.Trainer, epoch: int, metrics: dict[str, float]) -> None:
        self.last_metrics = metrics
        log_now(trainer, metrics)
        log.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
