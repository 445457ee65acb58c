"""Copy run files (policy artifacts, resume states, replays, eval databases, traces) to object storage.

Training never waits for the bucket: files are queued (`enqueue(path)`, or found by a scan of the run
folder and any other watched directories at each epoch's start and end and when fit ends) and uploaded
one at a time by a one-worker executor, each as one `put_file` (one PUT, or a multipart upload that S3/GCS
publish atomically on completion). A failed try is logged and retried by `tenacity` with jittered
exponential back-off up to `max_attempts`; a dead bucket only delays uploads. When fit ends (or fails) the
callback waits for pending uploads once, at most `flush_timeout_s` in all (60 s after an exception);
whatever is still pending then is logged as not uploaded.

Remote names: a file of the run folder (`metta_lightning.run_folder`, watched by default) goes to
`<remote_prefix>/<path in the run folder>` (with `remote_prefix=s3://bucket/<run>`:
`s3://bucket/<run>/checkpoints/<run>:v3.mpt`, `s3://bucket/<run>/eval.duckdb`, `.../replays/...`,
`.../traces/...`); a file under another watched directory `D` to `<remote_prefix>/<basename(D)>/<path
under D>`; any other file to `<remote_prefix>/<basename>`, unless `enqueue(path, key=...)` names it.
Only global rank 0 uploads.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Optional

import fsspec
import lightning.pytorch as pl
from fsspec.implementations.local import LocalFileSystem
from lightning.pytorch.callbacks import Callback
from tenacity import RetryCallState, Retrying, retry_if_not_exception_type, stop_after_attempt, wait_exponential_jitter

from metta_lightning.run_folder import RunFolder

log = logging.getLogger(__name__)

DEFAULT_PATTERNS = ("*.mpt", "*.ckpt", "*.replay*", "*.duckdb", "*.db", "*.json.z", "trace_*.json")


class _Vanished(Exception):
    """The local file was deleted before it could be uploaded (e.g. a pruned state): nothing to retry."""


class _Stopped(Exception):
    """The callback was closed while a try waited for its back-off."""


@dataclass
class _Job:
    path: str
    key: str
    started: bool = False
    future: Optional[Future] = field(default=None, repr=False)


class UploadCallback(Callback):
    """Upload each new artifact to `remote_prefix` in the background, with retries and back-off.

    Args:
        remote_prefix: fsspec URL of the destination directory (`s3://bucket/run`, `gs://...`,
            `memory://...`, a local path). None disables the callback.
        watch: local directories scanned, besides the run folder, at each epoch's start and end (and at the
            end) for new or changed files matching `patterns`; hidden files (temporary names) and hidden
            folders (`.resume-cache/`) are skipped.
        patterns: file-name globs to upload from the watched directories.
        max_attempts: tries per file before it is given up (logged as an error).
        backoff_s: first retry delay; doubled after each failure (with jitter), capped at `max_backoff_s`.
        max_backoff_s: longest delay between two tries of one file.
        flush_timeout_s: longest wait for pending uploads when fit ends.
        storage_options: passed to the filesystem (e.g. `{"client_kwargs": {"endpoint_url": ...}}`).
    """

    def __init__(self, remote_prefix: Optional[str] = None, watch: Optional[list[str]] = None,
                 patterns: tuple[str, ...] | list[str] = DEFAULT_PATTERNS, max_attempts: int = 12,
                 backoff_s: float = 1.0, max_backoff_s: float = 60.0, flush_timeout_s: float = 300.0,
                 storage_options: Optional[dict[str, Any]] = None) -> None:
        self.remote_prefix = remote_prefix.rstrip("/") if remote_prefix else None
        self.watch = [os.path.abspath(d) for d in (watch or [])]
        self.patterns = tuple(patterns)
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.flush_timeout_s = flush_timeout_s
        self.storage_options = dict(storage_options or {})
        self.enabled = True  # False on non-zero ranks
        self.uploaded: list[str] = []   # remote URLs, in upload order
        self.failed: list[str] = []     # local paths given up on
        self.errors = 0                 # failed tries (retried or not)
        self._seen: dict[str, tuple[float, int]] = {}
        self._pending: dict[str, _Job] = {}  # by local path: re-announcing a queued file does not duplicate it
        self._lock = threading.Lock()
        self._hurry = threading.Event()  # set by flush: the next back-off wait ends at once
        self._stop = threading.Event()
        self._executor: Optional[ThreadPoolExecutor] = None
        self._fs = None
        self._root = None
        self._end_deadline: Optional[float] = None  # see _end_wait
        self._run_root: Optional[str] = None  # the run folder, watched (see setup)

    # ------------------------------------------------------------------------------------------- API

    def watch_dir(self, directory: str) -> None:
        d = os.path.abspath(directory)
        if d not in self.watch:
            self.watch.append(d)

    def enqueue(self, path: str, key: Optional[str] = None) -> None:
        """Queue `path` for upload to `<remote_prefix>/<key>`; returns at once."""
        if not self.remote_prefix or not self.enabled:
            return
        path = os.path.abspath(path)
        key = key or self._key_for(path)
        with self._lock:
            queued = self._pending.get(path)
            if queued is not None and not queued.started:  # not read yet: it will upload the newest bytes
                queued.key = key
                return
            if self._executor is None:
                self._stop.clear()
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metta-upload")
            job = _Job(path, key)
            self._pending[path] = job
            job.future = self._executor.submit(self._upload, job)

    def scan(self) -> int:
        """Queue new or changed files in the watched directories; returns how many."""
        n = 0
        for d in self.watch:
            if not os.path.isdir(d):
                continue
            for dirpath, subdirs, files in os.walk(d):
                # Hidden folders hold local-only files (e.g. `.resume-cache/`, states downloaded from the
                # bucket to resume from): never walk into them, or they would be uploaded again.
                subdirs[:] = [s for s in subdirs if not s.startswith(".")]
                for name in files:
                    if name.startswith(".") or not any(fnmatch.fnmatch(name, p) for p in self.patterns):
                        continue
                    p = os.path.join(dirpath, name)
                    try:
                        st = os.stat(p)
                    except FileNotFoundError:
                        continue
                    sig = (st.st_mtime, st.st_size)
                    if self._seen.get(p) != sig:
                        self._seen[p] = sig
                        self.enqueue(p)
                        n += 1
        return n

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every queued file is uploaded or given up, at most `timeout` seconds (default
        `flush_timeout_s`). A retry waiting for its back-off is tried at once. Returns True if none is left."""
        timeout = self.flush_timeout_s if timeout is None else timeout
        self._hurry.set()
        with self._lock:
            futures = [job.future for job in self._pending.values() if job.future is not None]
        wait(futures, timeout=timeout)
        with self._lock:
            left_over = sorted(self._pending)
        if left_over:
            log.error("upload: %d file(s) not uploaded to %s after waiting %.0fs: %s", len(left_over),
                      self.remote_prefix, timeout, left_over)
        return not left_over

    def close(self, timeout: Optional[float] = None) -> bool:
        """Flush (at most `timeout` seconds), then stop the worker: files still queued are not uploaded, and
        a try waiting for its back-off gives up (one already under way ends with its own timeout)."""
        ok = self.flush(timeout)
        self._stop.set()
        self._hurry.set()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        return ok

    # ------------------------------------------------------------------------------------------- worker

    def _key_for(self, path: str) -> str:
        if self._run_root and path.startswith(self._run_root + os.sep):
            return os.path.relpath(path, self._run_root).replace(os.sep, "/")
        for d in self.watch:
            if path.startswith(d + os.sep):
                return os.path.basename(d) + "/" + os.path.relpath(path, d).replace(os.sep, "/")
        return os.path.basename(path)

    def _filesystem(self):
        if self._fs is None:
            self._fs, self._root = fsspec.core.url_to_fs(self.remote_prefix, **self.storage_options)
        return self._fs, self._root

    def _backoff(self, seconds: float) -> None:
        """tenacity's sleep: ends early (once) when a flush hurries it; raises when the callback is closed."""
        if self._hurry.wait(seconds):
            self._hurry.clear()
        if self._stop.is_set():
            raise _Stopped()

    def _log_retry(self, state: RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        log.warning("upload: %s -> %s failed (try %d/%d, retry in %.1fs): %s: %s", state.args[0].path,
                    f"{self.remote_prefix}/{state.args[0].key}", state.attempt_number, self.max_attempts,
                    state.upcoming_sleep, type(err).__name__, err)

    def _upload(self, job: _Job) -> None:
        """Upload one file, retrying (runs on the worker)."""
        dest = f"{self.remote_prefix}/{job.key}"
        retrying = Retrying(stop=stop_after_attempt(self.max_attempts),
                            wait=wait_exponential_jitter(initial=self.backoff_s, max=self.max_backoff_s,
                                                         jitter=self.backoff_s / 2),
                            retry=retry_if_not_exception_type((_Vanished, _Stopped)), sleep=self._backoff,
                            before_sleep=self._log_retry, reraise=True)
        try:
            retrying(self._put_once, job)
        except _Vanished:
            log.warning("upload: %s vanished before it was uploaded", job.path)
        except _Stopped:
            pass
        except Exception as e:  # noqa: BLE001 - given up after max_attempts
            self.failed.append(job.path)
            log.error("upload: giving up on %s -> %s after %d tries: %s: %s", job.path, dest, self.max_attempts,
                      type(e).__name__, e)
        else:
            self.uploaded.append(dest)
            log.info("upload: %s -> %s", job.path, dest)
        finally:
            with self._lock:
                if self._pending.get(job.path) is job:
                    del self._pending[job.path]

    def _put_once(self, job: _Job) -> None:
        job.started = True
        try:
            fs, root = self._filesystem()
            rpath = f"{root.rstrip('/')}/{job.key}"
            if "/" in job.key or isinstance(fs, LocalFileSystem):  # (a bucket's root is never created here)
                fs.makedirs(rpath.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(job.path, rpath)
        except FileNotFoundError:
            if not os.path.exists(job.path):
                raise _Vanished() from None
            self.errors += 1
            raise
        except Exception:
            self.errors += 1
            raise

    # ------------------------------------------------------------------------------------------- hooks

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.enabled = trainer.is_global_zero and bool(self.remote_prefix)
        self._run_root = RunFolder.of(trainer).root
        self.watch_dir(self._run_root)
        if self.enabled:
            log.info("upload: %s -> %s", self.watch, self.remote_prefix)

    # Other callbacks write into the run folder at epoch ends, before or after this one: a scan at the next
    # epoch's start (and at the end) finds what they wrote.
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.enabled:
            self.scan()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.enabled:
            self.scan()

    # The end of a run waits for the bucket once, at most flush_timeout_s from the first of these hooks
    # (at most 60 s after an exception): a dead bucket must not make fit end, then teardown, wait again.
    def _end_wait(self, limit: float) -> float:
        """Seconds left of the end-of-run wait, which starts (with `limit`) at the first call."""
        if self._end_deadline is None:
            self._end_deadline = time.monotonic() + limit
        return max(0.0, self._end_deadline - time.monotonic())

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.enabled:
            self.scan()
            self.flush(self._end_wait(self.flush_timeout_s))

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.enabled:
            self.scan()
            self.flush(self._end_wait(min(self.flush_timeout_s, 60.0)))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.enabled:
            self.scan()  # what other callbacks wrote when fit ended (the last evaluation's database and replays)
            self.close(timeout=self._end_wait(min(self.flush_timeout_s, 60.0)) if self.pending() else 0)
            self._end_deadline = None
