"""Policy artifacts `<run>:v<epoch>.mpt` on any fsspec URI, and the resolution of checkpoint URIs.

An artifact is a zip (stored, not compressed) of exactly two members:

- `policy_spec.json`: `{"format": "metta_lightning.policy", "format_version": 1, "project_version": ...,
  "class_path": "models.fast.Fast", "init_args": {...}, "env_info": {EnvInfo fields}, "run": ..., "epoch": ...}`
- `weights.safetensors`: the policy's `state_dict()`.

It is rebuilt from the artifact alone: `cls = import(class_path)`, `cls(EnvInfo(**env_info), **init_args)`,
`load_state_dict(weights, strict=True)`. Nothing of the training config is needed.

Writes are atomic. On a local disk the zip goes to `.<name>.tmp-<random>` in the same directory (a name
that can never match the artifact pattern), is fsynced, then `os.replace`d onto its final name. On any
other filesystem (S3, GCS, memory) it is one `pipe_file` call, i.e. a single PUT (or a multipart upload,
which S3 and GCS also publish atomically on completion). `:latest` only considers names matching the
artifact pattern and skips any whose zip directory cannot be read, so a half-written file is never taken
for the newest checkpoint.

A policy keeps the `EnvInfo` it was trained on (`policy.env_info`); to play an env that numbers
observation features differently, remap its tokens by name (`models.base.FeatureRemap`, as evaluation does).

URIs accepted by `resolve_uri` / `load_policy`:
- any fsspec URL: `/abs/path/x:v3.mpt`, `rel/x:v3.mpt`, `file://...`, `s3://b/p/x:v3.mpt`, `gs://...`,
  `memory://...`;
- `<dir>/:latest` (highest epoch among complete artifacts in `<dir>`), `<dir>/<run>:latest` (same, that
  run only), or a directory itself (same as `<dir>/:latest`);
- a bare run name `<run>`, `<run>:latest` or `<run>:v<epoch>`, resolved under
  `$METTA_DATA_DIR/<run>/checkpoints` (default `./train_dir`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import io
import json
import logging
import os
import re
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import fsspec
import torch
from fsspec.implementations.local import LocalFileSystem
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from envs.info import EnvInfo

log = logging.getLogger(__name__)

FORMAT = "metta_lightning.policy"
FORMAT_VERSION = 1
SPEC_NAME = "policy_spec.json"
WEIGHTS_NAME = "weights.safetensors"
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
    if not RUN_NAME_RE.match(run or ""):
        where = f"{uri}: " if uri and uri != run else ""
        raise CheckpointError(
            f"{where}invalid run name {run!r}: use 1-128 characters from A-Z a-z 0-9 _ . - "
            "(starting with a letter or digit; no '/', ':' or spaces)")
    return run


def artifact_name(run: str, epoch: int, suffix: str = ARTIFACT_SUFFIX) -> str:
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


def project_version() -> str:
    try:
        return importlib.metadata.version("metta_lightning")
    except importlib.metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            import tomllib

            return tomllib.loads(pyproject.read_text())["project"]["version"]
        except Exception:  # noqa: BLE001 - a version string is informational only
            return "unknown"


# ---------------------------------------------------------------------------------------------- URIs


def _filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
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
        fs, path = _filesystem(uri_local)
        return Resolved(fs, path, uri)
    if uri.endswith(":latest"):
        base = uri[: -len(":latest")]
        run = None
        if base and not base.endswith("/"):
            parent, _, run = base.rpartition("/")
            check_run_name(run, uri)
            base = parent + "/" if parent else "./"
        return latest_artifact(base, run=run, suffix=suffix, uri=uri)
    fs, path = _filesystem(uri)
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
    fs, path = _filesystem(dir_uri)
    try:
        names = fs.ls(path, detail=False)
    except FileNotFoundError:
        _raise_not_found(fs, path, uri, what="checkpoint directory")
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
        if not validate or _is_complete(res, suffix):
            return res
        log.warning("%s: skipping incomplete or corrupted checkpoint %s", uri, res.url)
    which = f" of run {run!r}" if run else ""
    raise CheckpointError(f"{uri}: no complete checkpoint{which} (*{suffix}) in {dir_uri!r}")


# A sealed archive ends in the zip comment `metta-sha256:<hex>`, the SHA-256 of every byte before the hex
# digest's prefix. Zip CRCs cover member data only: some damage to the central directory passes them and
# only breaks (or, worse, randomly breaks) a later load. Archives without a seal are checked by loading.
SEAL_PREFIX = b"metta-sha256:"
SEAL_LEN = len(SEAL_PREFIX) + 64


def seal(data: bytes) -> bytes:
    """`data` (a zip archive) with its SHA-256 seal as the zip comment."""
    buf = io.BytesIO(data)
    with zipfile.ZipFile(buf, "a") as z:
        z.comment = SEAL_PREFIX + b"0" * 64
    body = buf.getvalue()[: -SEAL_LEN]
    return body + SEAL_PREFIX + hashlib.sha256(body).hexdigest().encode()


def seal_file(path: str) -> None:
    """Seal the zip archive at the local `path` in place (see `seal`)."""
    with open(path, "rb") as f:
        data = seal(f.read())
    with open(path, "wb") as f:
        f.write(data)


def seal_status(data: bytes) -> bool | None:
    """True: sealed and intact; False: sealed and damaged; None: no seal (an older or foreign archive)."""
    if len(data) < SEAL_LEN or data[-SEAL_LEN:-64] != SEAL_PREFIX:
        return None
    return hashlib.sha256(data[:-SEAL_LEN]).hexdigest().encode() == data[-64:]


def _is_complete(res: Resolved, suffix: str = ARTIFACT_SUFFIX) -> bool:
    """Whether a candidate can be used. Local files are checked the way they will be used: a policy artifact
    is read whole (spec and weights), a training state is CRC-checked and loaded with `torch.load`, since
    some damage to a zip's central directory passes every CRC and only breaks the load. Remote files only
    need a readable zip directory here (they are checked whole once downloaded)."""
    try:
        if is_local(res.fs):
            if suffix == ARTIFACT_SUFFIX:
                read_artifact(res.path)
            else:
                check_training_state(res.path)
            return True
        with res.fs.open(res.path, "rb") as f, zipfile.ZipFile(f) as z:
            z.infolist()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not usable"
        return False


def check_training_state(path: str, uri: str | None = None) -> str:
    """Raise `CheckpointError` naming `uri` unless the local file `path` is an intact training state (what
    `trainer.save_checkpoint` writes: a `torch.save` zip that loads with `weights_only=True`); returns `path`."""
    uri = uri or path
    if path.endswith(ARTIFACT_SUFFIX):
        raise CheckpointError(f"{uri}: is a policy artifact ({ARTIFACT_SUFFIX}); resuming needs the training "
                              f"state beside it ({path[: -len(ARTIFACT_SUFFIX)]}.ckpt) or `--ckpt_path last`")
    with open(path, "rb") as f:
        sealed = seal_status(f.read())
    if sealed is False:
        raise CheckpointError(f"{uri}: training state is corrupted (its SHA-256 does not match the one written with it)")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
            names = z.namelist()
    except zipfile.BadZipFile:
        raise CheckpointError(f"{uri}: training state is truncated or corrupted, or not a training state at all "
                              "(not a zip archive); expected a <run>:v<N>.ckpt written by fit") from None
    except Exception as e:  # noqa: BLE001 - EOFError, OSError, NotImplementedError (bad compression flag), ...
        raise CheckpointError(f"{uri}: training state is truncated or corrupted ({type(e).__name__}: {e})") from None
    if bad is not None:
        raise CheckpointError(f"{uri}: training state is corrupted (CRC mismatch in {bad})")
    if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        raise CheckpointError(f"{uri}: not a training state (a zip without torch's data.pkl); expected a "
                              "<run>:v<N>.ckpt written by fit")
    if sealed:
        return path  # bit-exact as written: loading it again here would only cost time
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch's reader fails in many ways on a damaged archive
        first_line = (str(e).splitlines() or [""])[0]
        raise CheckpointError(f"{uri}: training state is corrupted and does not load "
                              f"({type(e).__name__}: {first_line})") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(f"{uri}: not a training state (no 'state_dict' in it); expected a <run>:v<N>.ckpt "
                              "written by fit")
    return path


def _raise_not_found(fs, path: str, uri: str, what: str = "checkpoint"):
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


def read_bytes(res: Resolved) -> bytes:
    try:
        return res.fs.cat_file(res.path)
    except FileNotFoundError:
        _raise_not_found(res.fs, res.path, res.uri)
    except IsADirectoryError:
        raise CheckpointError(f"{res.uri}: is a directory, not an artifact") from None
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{res.uri}: cannot read {res.url}: {type(e).__name__}: {e}") from e


def write_bytes_atomic(uri: str, data: bytes) -> str:
    """Write `data` to `uri` so that readers see either nothing or the whole file. Returns the URL."""
    fs, path = _filesystem(uri)
    if is_local(fs):
        directory, name = os.path.split(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, os.path.join(directory, name))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        try:  # make the rename durable
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
        return os.path.join(directory, name)
    try:
        fs.pipe_file(path, data)  # one PUT / one atomically-completed multipart upload
    except FileNotFoundError:
        _raise_not_found(fs, path, uri, what="destination")
    return fs.unstrip_protocol(path)


# ---------------------------------------------------------------------------------------------- artifacts


def class_path_of(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def artifact_spec(policy: torch.nn.Module, env_info: EnvInfo, **extra: Any) -> dict:
    """The artifact's `policy_spec.json`: the format marker, `models.policy_spec(policy)`, the EnvInfo, `extra`."""
    from models.base import policy_spec

    if getattr(policy, "init_args", None) is None:
        raise CheckpointError(f"{class_path_of(policy)} has no `init_args`; policies must keep the JSON dict "
                              "they were built with (cls(env_info, **init_args))")
    spec = {"format": FORMAT, "format_version": FORMAT_VERSION, "project_version": project_version(),
            **policy_spec(policy), "env_info": env_info.model_dump(), **extra}
    try:
        json.dumps(spec)
    except TypeError as e:
        raise CheckpointError(f"policy spec of {class_path_of(policy)} is not JSON-serialisable: {e}") from e
    return spec


def artifact_bytes(policy: torch.nn.Module, env_info: EnvInfo, **extra: Any) -> bytes:
    spec = artifact_spec(policy, env_info, **extra)
    # clone: safetensors refuses shared storages (tied weights); load_state_dict re-ties them.
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in policy.state_dict().items()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(SPEC_NAME, json.dumps(spec, indent=1, sort_keys=True))
        z.writestr(WEIGHTS_NAME, st_save(tensors, metadata={"format": FORMAT}))
    return seal(buf.getvalue())


def save_policy(policy: torch.nn.Module, env_info: EnvInfo, uri: str, **extra: Any) -> str:
    """Write the artifact for `policy` to `uri` atomically; `extra` (e.g. run, epoch, agent_steps) goes
    into the spec. Returns the written URL."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    if not name.endswith(ARTIFACT_SUFFIX):
        raise CheckpointError(f"{uri}: policy artifacts end in {ARTIFACT_SUFFIX}")
    parsed = parse_artifact_name(name)
    if parsed:
        extra.setdefault("run", parsed[0])
        extra.setdefault("epoch", parsed[1])
    return write_bytes_atomic(uri, artifact_bytes(policy, env_info, **extra))


@dataclass
class PolicyArtifact:
    spec: dict
    state_dict: dict[str, torch.Tensor]
    url: str

    @property
    def env_info(self) -> EnvInfo:
        return EnvInfo(**self.spec["env_info"])


def read_artifact(uri: str) -> PolicyArtifact:
    """Read and check an artifact (spec + weights) without building the policy."""
    res = resolve_uri(uri)
    data = read_bytes(res)
    if seal_status(data) is False:
        raise CheckpointError(f"{uri}: artifact is corrupted (its SHA-256 does not match the one written with it)")
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - BadZipFile, or worse on a damaged directory
        raise CheckpointError(f"{uri}: not a valid zip archive ({len(data)} bytes) - the artifact is truncated "
                              "or corrupted") from None
    with z:
        names = set(z.namelist())
        if SPEC_NAME not in names or WEIGHTS_NAME not in names:
            raise CheckpointError(f"{uri}: zip is not a metta_lightning policy artifact (has {sorted(names)[:5]}, "
                                  f"expected {SPEC_NAME} and {WEIGHTS_NAME})")
        try:
            spec = json.loads(z.read(SPEC_NAME))
            weights = z.read(WEIGHTS_NAME)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{uri}: {SPEC_NAME} is not valid JSON ({e})") from None
        except Exception as e:  # noqa: BLE001 - BadZipFile, zlib.error, NotImplementedError (bad compression flag), ...
            raise CheckpointError(f"{uri}: artifact is corrupted ({type(e).__name__}: {e})") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise CheckpointError(f"{uri}: zip is not a metta_lightning policy artifact (format marker "
                              f"{spec.get('format') if isinstance(spec, dict) else None!r}, expected {FORMAT!r})")
    if int(spec.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{uri}: artifact format version {spec['format_version']} is newer than this "
                              f"code supports ({FORMAT_VERSION}); upgrade metta_lightning")
    for key in ("class_path", "init_args", "env_info"):
        if key not in spec:
            raise CheckpointError(f"{uri}: {SPEC_NAME} lacks {key!r}")
    try:
        state_dict = st_load(weights)
    except (SafetensorError, Exception) as e:  # noqa: BLE001
        raise CheckpointError(f"{uri}: {WEIGHTS_NAME} is corrupted ({e})") from None
    return PolicyArtifact(spec, state_dict, res.url)


def _import(class_path: str, uri: str):
    module, _, name = class_path.rpartition(".")
    try:
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj
    except (ImportError, AttributeError, ValueError) as e:
        raise CheckpointError(f"{uri}: cannot import policy class {class_path!r} ({e})") from None


class LoadedPolicy(NamedTuple):
    """A policy rebuilt from its artifact, with the artifact's spec (run, epoch, agent_steps, EnvInfo, ...)
    and the URL it was read from."""

    policy: torch.nn.Module
    spec: dict
    url: str


def load_artifact(uri: str, device: str | torch.device = "cpu", strict: bool = True) -> LoadedPolicy:
    """Rebuild the policy stored at `uri` (see the module doc for URIs), in eval mode on `device`, and
    return it with its spec."""
    art = read_artifact(uri)
    cls = _import(art.spec["class_path"], uri)
    try:
        policy = cls(art.env_info, **art.spec["init_args"])
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{uri}: cannot build {art.spec['class_path']}: {type(e).__name__}: {e}") from e
    try:
        policy.load_state_dict(art.state_dict, strict=strict)
    except RuntimeError as e:
        raise CheckpointError(f"{uri}: weights do not fit {art.spec['class_path']}: {e}") from None
    return LoadedPolicy(policy.to(device).eval(), art.spec, art.url)


def load_policy(uri: str, device: str | torch.device = "cpu", strict: bool = True) -> torch.nn.Module:
    """The policy stored at `uri`, in eval mode on `device` (`load_artifact` also gives its spec)."""
    return load_artifact(uri, device, strict).policy
