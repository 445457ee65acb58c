"""The policy artifact format: `<run>:v<epoch>.mpt` files on any fsspec URI, written atomically and read back.

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
for the newest checkpoint (`is_usable`).

A policy keeps the `EnvInfo` it was trained on (`policy.env_info`); to play an env that numbers
observation features differently, remap its tokens by name (`models.base.FeatureRemap`, as evaluation does).

URIs (run names, `:latest`, fsspec URLs) are resolved by `metta_lightning.checkpoint_uris`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import io
import json
import os
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from envs.info import EnvInfo

from .checkpoint_uris import (ARTIFACT_SUFFIX, CheckpointError, Resolved, filesystem, is_local,
                              parse_artifact_name, raise_not_found, resolve_uri)

FORMAT = "metta_lightning.policy"
FORMAT_VERSION = 1
SPEC_NAME = "policy_spec.json"
WEIGHTS_NAME = "weights.safetensors"


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


def is_usable(res: Resolved, suffix: str = ARTIFACT_SUFFIX) -> bool:
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


def read_bytes(res: Resolved) -> bytes:
    try:
        return res.fs.cat_file(res.path)
    except FileNotFoundError:
        raise_not_found(res.fs, res.path, res.uri)
    except IsADirectoryError:
        raise CheckpointError(f"{res.uri}: is a directory, not an artifact") from None
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{res.uri}: cannot read {res.url}: {type(e).__name__}: {e}") from e


def write_bytes_atomic(uri: str, data: bytes) -> str:
    """Write `data` to `uri` so that readers see either nothing or the whole file. Returns the URL."""
    fs, path = filesystem(uri)
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
        raise_not_found(fs, path, uri, what="destination")
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
