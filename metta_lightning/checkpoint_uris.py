"""Where checkpoints are: run names, `$METTA_DATA_DIR`, artifact names and the resolution of checkpoint URIs.

A checkpoint is named `<run>:v<epoch>.mpt` (the policy artifact, `metta_lightning.checkpoint`) or
`<run>:v<epoch>.ckpt` (the training state) and lives in `<data dir>/<run>/checkpoints/` or at any fsspec URL.

URIs accepted by `resolve_uri` (and so by `checkpoint.load_policy`):
- any fsspec URL: `/abs/path/x:v3.mpt`, `rel/x:v3.mpt`, `file://...`, `s3://b/p/x:v3.mpt`, `gs://...`,
  `memory://...`;
- `<dir>/:latest` (highest epoch among complete artifacts in `<dir>`), `<dir>/<run>:latest` (same, that
  run only), or a directory itself (same as `<dir>/:latest`);
- a bare run name `<run>`, `<run>:latest` or `<run>:v<epoch>`, resolved under
  `$METTA_DATA_DIR/<run>/checkpoints` (default `./train_dir`).

`:latest` only considers names matching the artifact pattern and skips any file that the artifact format
(`metta_lightning.checkpoint`) cannot use, so a half-written file is never taken for the newest checkpoint.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

import fsspec
from fsspec.implementations.local import LocalFileSystem

log = logging.getLogger(__name__)

ARTIFACT_SUFFIX = ".mpt"
DATA_DIR_ENV = "METTA_DATA_DIR"
DEFAULT_DATA_DIR = "./train_dir"

RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
ARTIFACT_RE = re.compile(r"^(?P<run>[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}):v(?P<epoch>\d+)\.mpt$")
_SCHEME_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")
_BUCKET_PROTOCOLS = {"s3", "s3a", "gs", "gcs"}


class CheckpointError(RuntimeError):
    """A checkpoint URI or artifact that cannot be used; the message names the URI and the problem."""


def data_dir() -> str:
    """Local root of runs (`$METTA_DATA_DIR`, default `./train_dir`)."""
    return os.environ.get(DATA_DIR_ENV, DEFAULT_DATA_DIR)


def run_checkpoint_dir(run: str, root: str | None = None) -> str:
    """`<root>/<run>/checkpoints`, after checking the run name."""
    check_run_name(run)
    return os.path.join(root if root is not None else data_dir(), run, "checkpoints")


def check_run_name(run: str, uri: str | None = None) -> str:
    """`run` if it is a valid run name, else `CheckpointError` (naming `uri` when given)."""
    if not RUN_NAME_RE.match(run or ""):
        where = f"{uri}: " if uri and uri != run else ""
        raise CheckpointError(
            f"{where}invalid run name {run!r}: use 1-128 characters from A-Z a-z 0-9 _ . - "
            "(starting with a letter or digit; no '/', ':' or spaces)")
    return run


def artifact_name(run: str, epoch: int, suffix: str = ARTIFACT_SUFFIX) -> str:
    """`<run>:v<epoch><suffix>`, after checking both."""
    check_run_name(run)
    if epoch < 0:
        raise CheckpointError(f"epoch must be >= 0, got {epoch}")
    return f"{run}:v{int(epoch)}{suffix}"


def parse_artifact_name(name: str, suffix: str = ARTIFACT_SUFFIX) -> tuple[str, int] | None:
    """`(run, epoch)` for a file name of the form `<run>:v<epoch><suffix>`, else None."""
    if not name.endswith(suffix):
        return None
    m = ARTIFACT_RE.match(name[: -len(suffix)] + ARTIFACT_SUFFIX)
    return (m["run"], int(m["epoch"])) if m else None


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and path of `uri`; an unknown scheme or a missing extra package is a
    `CheckpointError` naming `uri`."""
    m = _SCHEME_RE.match(uri)
    if m:
        scheme = m["scheme"].lower()
        try:
            fsspec.get_filesystem_class(scheme)
        except ValueError:
            raise CheckpointError(f"{uri}: unknown URI scheme {scheme!r} (use a path or an fsspec URL such as "
                                  "file://, s3://, gs://, memory://)") from None
        except ImportError as e:
            raise CheckpointError(f"{uri}: scheme {scheme!r} needs an extra package: {e}") from None
    try:
        return fsspec.core.url_to_fs(uri)
    except ImportError as e:
        raise CheckpointError(f"{uri}: {e}") from None


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether `fs` is the local disk."""
    return isinstance(fs, LocalFileSystem)


@dataclass(frozen=True)
class Resolved:
    """A resolved checkpoint location: `fs` + `path`, and the URI the user gave (for messages)."""

    fs: fsspec.AbstractFileSystem
    path: str
    uri: str

    @property
    def url(self) -> str:
        return self.path if is_local(self.fs) else self.fs.unstrip_protocol(self.path)


def _looks_like_run_name(uri: str) -> bool:
    return not _SCHEME_RE.match(uri) and "/" not in uri and "\\" not in uri and not uri.startswith(".") \
        and not uri.endswith(ARTIFACT_SUFFIX) and not os.path.exists(uri)


def resolve_uri(uri: str, suffix: str = ARTIFACT_SUFFIX) -> Resolved:
    """Turn a user URI (see the module doc) into the location of one existing artifact."""
    if not isinstance(uri, str) or not uri.strip():
        raise CheckpointError(f"{uri!r}: empty checkpoint URI")
    uri = uri.strip()
    if _looks_like_run_name(uri):
        run, _, version = uri.partition(":")
        check_run_name(run, uri)
        base = run_checkpoint_dir(run)
        if version in ("", "latest"):
            return latest_artifact(base, run=run, suffix=suffix, uri=uri)
        if not re.fullmatch(r"v\d+", version):
            raise CheckpointError(f"{uri}: expected <run>, <run>:latest or <run>:v<epoch>")
        uri_local = os.path.join(base, f"{run}:{version}{suffix}")
        fs, path = filesystem(uri_local)
        return Resolved(fs, path, uri)
    if uri.endswith(":latest"):
        base = uri[: -len(":latest")]
        run = None
        if base and not base.endswith("/"):
            parent, _, run = base.rpartition("/")
            check_run_name(run, uri)
            base = parent + "/" if parent else "./"
        return latest_artifact(base, run=run, suffix=suffix, uri=uri)
    fs, path = filesystem(uri)
    try:
        if fs.isdir(path):
            return latest_artifact(uri, suffix=suffix, uri=uri)
    except Exception:  # noqa: BLE001 - existence is checked again, with a clear error, when reading
        pass
    return Resolved(fs, path, uri)


def list_artifacts(dir_uri: str, run: str | None = None, suffix: str = ARTIFACT_SUFFIX,
                   uri: str | None = None) -> list[tuple[int, str, Resolved]]:
    """`(epoch, run, location)` of every file named like an artifact in `dir_uri`, sorted by epoch."""
    uri = uri or dir_uri
    fs, path = filesystem(dir_uri)
    try:
        names = fs.ls(path, detail=False)
    except FileNotFoundError:
        raise_not_found(fs, path, uri, what="checkpoint directory")
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{uri}: cannot list {dir_uri!r}: {type(e).__name__}: {e}") from e
    found = []
    for p in names:
        parsed = parse_artifact_name(p.rstrip("/").rsplit("/", 1)[-1], suffix)
        if parsed and (run is None or parsed[0] == run):
            found.append((parsed[1], parsed[0], Resolved(fs, p, uri)))
    return sorted(found, key=lambda t: (t[0], t[1]))


def latest_artifact(dir_uri: str, run: str | None = None, suffix: str = ARTIFACT_SUFFIX,
                    uri: str | None = None, validate: bool = True) -> Resolved:
    """The highest-epoch complete artifact in `dir_uri` (optionally of one run).

    With `validate`, a candidate whose zip directory cannot be read (a truncated file left by some
    non-atomic copy) is skipped with a warning, so the next older one is used.
    """
    uri = uri or dir_uri
    for epoch, _, res in reversed(list_artifacts(dir_uri, run=run, suffix=suffix, uri=uri)):
        if not validate or _is_usable(res, suffix):
            return res
        log.warning("%s: skipping incomplete or corrupted checkpoint %s", uri, res.url)
    which = f" of run {run!r}" if run else ""
    raise CheckpointError(f"{uri}: no complete checkpoint{which} (*{suffix}) in {dir_uri!r}")


def raise_not_found(fs, path: str, uri: str, what: str = "checkpoint"):
    """Raise `CheckpointError`: `uri` not found, or its bucket does not exist."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in _BUCKET_PROTOCOLS:
        bucket = path.split("/", 1)[0]
        try:
            bucket_exists = fs.exists(bucket)
        except Exception:  # noqa: BLE001
            bucket_exists = True
        if not bucket_exists:
            raise CheckpointError(f"{uri}: bucket {bucket!r} does not exist") from None
    raise CheckpointError(f"{uri}: {what} not found ({path})") from None


def _is_usable(res: Resolved, suffix: str) -> bool:
    # What "complete" means is the artifact format's to say; imported here because it reads URIs through
    # this module.
    from .checkpoint import is_usable

    return is_usable(res, suffix)
