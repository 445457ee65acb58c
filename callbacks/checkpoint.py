"""Periodic policy artifacts and full training state, for upload and exact resume.

Every `epoch_interval` epochs, and when fit ends, `PolicyCheckpoint` writes into `<run folder>/checkpoints`
(`metta_lightning.run_folder`: the Trainer's `default_root_dir`, which the CLI sets to
`$METTA_DATA_DIR/<run>`, `./train_dir/<run>` by default; the run's name is the folder's):

- `<run>:v<epoch>.mpt`: the policy artifact (`metta_lightning.checkpoint`), loadable without the config;
- `<run>:v<epoch>.ckpt`: the full training state, `trainer.save_checkpoint` (weights, optimizer moments,
  epoch/batch/optimizer-step loop counters and the logged-step counter, the module's `agent_steps` (the
  learning-rate schedule is a function of it), every callback's `state_dict` (e.g. the logger run id
  from `LoggerRunId`; a future curriculum callback's state would ride along the same way), the data
  module's `state_dict`) plus this callback's state: every rank's torch / numpy / python / CUDA RNG
  states and the env seed epoch.

`<epoch>` counts completed epochs, so a run resumed from `v4` writes `v5`, `v6`, ... Both files are
written atomically: a temporary name that never matches `<run>:v<N>.<ext>`, fsync, then `os.replace`.
The directory is local; `callbacks.upload.UploadCallback` copies the run folder to a bucket. Pointing Lightning's `ModelCheckpoint` at a remote dirpath is what triggers
Lightning#21813 (it deletes the remote checkpoint a run resumed from); we never delete remote files,
and locally only states older than the newest `keep_states` (never `.mpt` artifacts).

Resume: `fit --ckpt_path last` picks the newest complete `<run>:v<N>.ckpt` in the run folder (or starts
fresh if there is none); `--ckpt_path <uri>` accepts any path, fsspec URL (`s3://...`, downloaded to a
local cache first, so Lightning never resumes from a remote path), `<dir>/:latest`, or a run name.
`resolve_ckpt_path(trainer, ckpt_path)` does that resolution; `MettaCLI.before_fit` calls it.

Exact resume (`exact_resume=True`): after each checkpoint the data module restarts its games from a seed
derived from (seed, rank, epoch) and the RNG states are set back to the ones stored in the checkpoint at
the start of the next epoch, in the straight run and in a resumed one alike. A run resumed from `vK`
then sees the same games and draws the same actions as the uninterrupted run, so N epochs straight and
N/2 + resume + N/2 give bit-identical parameters on CPU. The price: games in flight are abandoned at
each checkpoint, so use it with an `epoch_interval` whose span is much longer than an episode. Without
it (the default) a resumed run restarts the games from the same derived seed but the straight run keeps
its games running, so the two differ in data from the resume point on.

DDP: every rank takes part in `save` (the state is gathered and written by rank zero alone, which also
writes the artifact and prunes). The state holds every rank's RNG states; on resume
rank r takes back the states rank r saved and restarts its games from seed + 1000 * r. The weights and
optimizer state are the same on every rank, so a state loads on any number of ranks; exact resume holds
only on the same world size (with more ranks, the new ones keep their own fresh RNG streams; with
`data.batch_semantics=global` the games are also split differently).
"""

from __future__ import annotations

import logging
import os
import random
import re
from typing import Any, Optional

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

from metta_lightning import checkpoint as ck
from metta_lightning import checkpoint_uris as uris
from metta_lightning.run_folder import RunFolder

log = logging.getLogger(__name__)

STATE_SUFFIX = ".ckpt"
_TEMPORARY_RE = re.compile(r"^\.(?P<name>.+)\.(?P<ext>mpt|ckpt)\.tmp-[0-9A-Za-z]+$")


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors/ints (loadable with `torch.load(weights_only=True)`)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": np_state[0], "key": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class PolicyCheckpoint(Callback):
    """Write `<run>:v<epoch>.mpt` (policy) and `<run>:v<epoch>.ckpt` (full state) every `epoch_interval`
    epochs and at the end of fit (see the module doc).

    Args:
        epoch_interval: write every this many completed epochs (and always at the end).
        keep_states: keep only the newest this many `.ckpt` states locally (<= 0: keep all).
        exact_resume: restart the games from a derived seed and rewind the RNGs at each checkpoint so a
            resumed run is bit-identical to an uninterrupted one (abandons games in flight).
    """

    def __init__(self, epoch_interval: int = 1, keep_states: int = 2, exact_resume: bool = False) -> None:
        if epoch_interval < 1:
            raise ValueError(f"epoch_interval must be >= 1, got {epoch_interval}")
        self.run: Optional[str] = None       # the run folder's name and
        self.dirpath: Optional[str] = None   # its checkpoints/, fixed at setup
        self.epoch_interval = epoch_interval
        self.keep_states = keep_states
        self.exact_resume = exact_resume
        self.last_saved_epoch: Optional[int] = None
        self.saved: list[str] = []
        self._rng_at_save: Optional[dict] = None  # this rank's RNG states at the last save (or from the state)
        self._rng_by_rank: Optional[list] = None  # every rank's, as written into the state by rank zero
        self._rewind_rng = False
        self._resumed = False     # loaded from a state (fit --ckpt_path)
        self._cut_short = False   # saving an epoch that max_steps / max_time ended early

    @property
    def state_key(self) -> str:
        return "PolicyCheckpoint"

    # -- paths ---------------------------------------------------------------------------------------
    def resolve_paths(self, trainer: pl.Trainer) -> str:
        """Fix the run name and the checkpoint directory from the run folder; returns the directory."""
        folder = RunFolder.of(trainer)
        self.run, self.dirpath = folder.name, folder.checkpoints
        return self.dirpath

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.resolve_paths(trainer)
        if trainer.is_global_zero:
            os.makedirs(self.dirpath, exist_ok=True)
            self._remove_stale_temporaries()

    def latest_state(self) -> Optional[str]:
        """Path of the newest complete `<run>:v<N>.ckpt` in `dirpath`, or None."""
        if self.dirpath is None or not os.path.isdir(self.dirpath):
            return None
        try:
            return uris.latest_artifact(self.dirpath, run=self.run, suffix=STATE_SUFFIX).path
        except ck.CheckpointError:
            return None

    # -- state ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        rng = self._rng_at_save or rng_state()
        return {"run": self.run, "epoch": self.last_saved_epoch, "rng": rng,
                "rng_by_rank": self._rng_by_rank or [rng], "exact_resume": self.exact_resume}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_saved_epoch = state_dict.get("epoch")
        self._rng_at_save = state_dict.get("rng")
        self._rng_by_rank = state_dict.get("rng_by_rank")
        self._rewind_rng = self._rng_at_save is not None
        self._resumed = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._resumed and self._rng_by_rank is not None:
            # Rank r rewinds to the states rank r saved; a rank the state does not know (resumed on more
            # ranks) keeps the fresh per-rank stream the data module seeded.
            rank = trainer.global_rank
            self._rng_at_save = self._rng_by_rank[rank] if rank < len(self._rng_by_rank) else None
            self._rewind_rng = self._rng_at_save is not None
        # A state of this folder without its artifact (a kill between the two writes, before they were written
        # artifact first) gets it now: the weights just loaded are the state's. States from elsewhere (a
        # bucket) have theirs where they came from.
        resumed_here = trainer.ckpt_path and os.path.dirname(os.path.abspath(trainer.ckpt_path)) == self.dirpath
        if self._resumed and resumed_here and self.last_saved_epoch and trainer.is_global_zero and not os.path.exists(
                os.path.join(self.dirpath, uris.artifact_name(self.run, self.last_saved_epoch))):
            path = self._write_artifact(trainer, pl_module, self.last_saved_epoch)
            if path:
                log.info("checkpoint: wrote the missing artifact %s of the state resumed from", path)
        # A resumed run restarts its games from the seed of the epoch it resumes at (the straight run did
        # the same at that checkpoint when exact_resume is on); never the games of epoch 0 again.
        dm = trainer.datamodule
        if self._resumed and self.last_saved_epoch and dm is not None \
                and hasattr(dm, "restart_envs"):
            dm.restart_envs(self.last_saved_epoch)

    # -- hooks ---------------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Resumed run: the RNGs as they were when the state was written. Straight run with exact_resume:
        # the same states again, so whatever ran in between (other callbacks) cannot make the two differ.
        if self._rewind_rng and self._rng_at_save is not None:
            set_rng_state(self._rng_at_save)
        self._rewind_rng = False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning also ends the epoch when max_steps / max_time / should_stop cut it short: that state is
        # the run's last, so it is written whatever the interval, named after the epoch in progress.
        epoch = trainer.current_epoch + 1
        cut_short = not trainer.fit_loop.epoch_loop._num_ready_batches_reached()
        if epoch % self.epoch_interval == 0 or cut_short:
            self._cut_short = cut_short
            try:
                self.save(trainer, pl_module, epoch)
            finally:
                self._cut_short = False

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if self._cut_short:
            # Lightning counts a cut-short epoch as processed at epoch end, so a resume would skip the rest
            # of it. Record it as still running (as a mid-epoch save would): the resumed run finishes it.
            progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]
            for counts in (progress["total"], progress["current"]):
                counts["processed"] -= 1

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch  # after the last epoch ends, current_epoch counts the epochs ended
        if epoch > 0 and self.last_saved_epoch != epoch:
            self.save(trainer, pl_module, epoch)

    # -- writing -------------------------------------------------------------------------------------
    def save(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> None:
        """Write the artifact, then the state, for `epoch` (each atomically)."""
        name_state = uris.artifact_name(self.run, epoch, STATE_SUFFIX)
        self.last_saved_epoch = epoch
        self._rng_at_save = rng_state()
        self._rng_by_rank = [self._rng_at_save]
        if trainer.world_size > 1 and dist.is_initialized():  # every rank's RNG states go into rank zero's file
            self._rng_by_rank = [None] * dist.get_world_size()
            dist.all_gather_object(self._rng_by_rank, self._rng_at_save)
        dm = trainer.datamodule
        if self.exact_resume and dm is not None and hasattr(dm, "restart_envs"):
            dm.restart_envs(epoch)  # before the state is dumped: the data module's state names this epoch
        # The artifact first: a kill between the two writes then leaves an artifact without its state, which
        # the resumed run (from the state before) writes again, never a state without its artifact.
        final_mpt = self._write_artifact(trainer, pl_module, epoch) if trainer.is_global_zero else None
        # Full state: every rank takes part (the strategy writes on rank 0), then rank 0 seals and renames.
        tmp = os.path.join(self.dirpath, f".{name_state}.tmp-{os.getpid()}")
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            ck.seal_file(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            final_state = os.path.join(self.dirpath, name_state)
            os.replace(tmp, final_state)
            self.saved.append(final_state)
            log.info("checkpoint: epoch %d -> %s%s", epoch, final_state, f", {final_mpt}" if final_mpt else "")
            self._prune()
        trainer.strategy.barrier("PolicyCheckpoint.save")
        if self.exact_resume:
            self._rewind_rng = True

    def _write_artifact(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> Optional[str]:
        """Write `<run>:v<epoch>.mpt` from the module's policy (atomically); returns its path."""
        policy = getattr(pl_module, "policy", pl_module)
        env_info = getattr(pl_module, "env_info", None)
        if env_info is None or not hasattr(policy, "init_args"):
            return None
        return ck.save_policy(policy, env_info, os.path.join(self.dirpath, uris.artifact_name(self.run, epoch)),
                              agent_steps=int(getattr(pl_module, "agent_steps", 0)),
                              global_step=int(trainer.global_step))

    def _remove_stale_temporaries(self) -> None:
        """Delete the temporary files of writes that a kill interrupted (`.<run>:v<N>.<ext>.tmp-*`)."""
        for name in os.listdir(self.dirpath):
            m = _TEMPORARY_RE.match(name)
            if m and uris.parse_artifact_name(f"{m['name']}.{m['ext']}", "." + m["ext"]):
                try:
                    os.unlink(os.path.join(self.dirpath, name))
                    log.info("checkpoint: removed %s, left by an interrupted write", name)
                except FileNotFoundError:
                    pass

    def _prune(self) -> None:
        if self.keep_states <= 0:
            return
        states = uris.list_artifacts(self.dirpath, run=self.run, suffix=STATE_SUFFIX)
        for _, _, res in states[: -self.keep_states]:
            try:
                os.unlink(res.path)
            except FileNotFoundError:
                pass


def resolve_ckpt_path(trainer: pl.Trainer, ckpt_path: Optional[str]) -> Optional[str]:
    """The local file `fit(ckpt_path=...)` should resume from (see the module doc); None: start fresh."""
    if not ckpt_path:
        return None
    folder = RunFolder.of(trainer)
    if ckpt_path == "last":
        if not os.path.isdir(folder.checkpoints):
            log.warning("--ckpt_path last: no checkpoint directory %s; starting fresh", folder.checkpoints)
            return None
        try:
            found = uris.latest_artifact(folder.checkpoints, run=folder.name, suffix=STATE_SUFFIX)
        except ck.CheckpointError:
            log.warning("--ckpt_path last: no complete state in %s; starting fresh", folder.checkpoints)
            return None
        log.info("--ckpt_path last: resuming from %s", found.path)
        return found.path
    res = uris.resolve_uri(ckpt_path, suffix=STATE_SUFFIX)
    if uris.is_local(res.fs):
        if not os.path.isfile(res.path):
            raise ck.CheckpointError(f"{ckpt_path}: checkpoint not found ({res.path})")
        return ck.check_training_state(res.path, ckpt_path)
    # Remote: download to a local cache (never resume Lightning from a remote path: Lightning#21813).
    cache = os.path.join(folder.checkpoints, ".resume-cache")
    os.makedirs(cache, exist_ok=True)
    local = os.path.join(cache, res.path.rsplit("/", 1)[-1])
    ck.write_bytes_atomic(local, ck.read_bytes(res))
    log.info("resuming from %s (downloaded to %s)", res.url, local)
    return ck.check_training_state(local, ckpt_path)
