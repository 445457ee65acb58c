"""What the dashboard shows, read from run folders on any fsspec URI; every failure kept where it happened.

A source is a folder (local path or fsspec URL): either one run folder (`<data dir>/<run>`, with
`checkpoints/` or `eval.duckdb`) or a data dir holding run folders. One listing of each source finds:

    <run>/checkpoints/<run>:v<N>.mpt          checkpoints (PolicyCheckpoint)
    <run>/eval.duckdb                         evaluation databases (EvaluateCallback, `evaluate --db`)
    <run>/metrics.csv                         the CSV log written beside W&B (`loggers.with_csv_beside_wandb`)
    <run>/version_<N>/metrics.csv             a CSV logger's (CSVLogger with save_dir = the data dir, name = the run)

W&B's own offline files are not read. Files are read only when their size or modification time changed
(remote ones copied to a local cache first); a CSV log that is still being written is read up to its last
line. Each DuckDB file is
copied and opened alone, so a damaged one, or one that a training process holds open, is reported as an
error beside the others' results instead of hiding them. Nothing here raises for bad data: each result
carries `error` strings naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import posixpath
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import quote

import fsspec

from ..curves import X_CANDIDATES, drop_superseded_rows, history_from_rows, read_csv_rows
from ..loggers import EXIT_CODE_KEY

__all__ = ["Source", "Run", "DashboardData", "replay_link", "viewer_link"]

RUNNING_WINDOW_S = 120.0
"""A run whose files changed less than this long ago, and whose log does not end with its exit row
(`loggers.EXIT_CODE_KEY`), is running."""

_CKPT = re.compile(r"^(?P<run>.+):v(?P<epoch>\d+)\.mpt$")


def replay_link(uri: str) -> str:
    """The dashboard path that serves a replay: `/api/replay/<scheme>/<path>` (`file` for local paths), so
    the viewer still sees the replay's own path (it names the policy and simulation from it)."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "file", os.path.abspath(uri)
    return f"/api/replay/{scheme}/{quote(rest.lstrip('/'))}"


def viewer_link(uri: str) -> str:
    """The viewer opened on that replay, through the viewer's `?replay=<url>` interface."""
    return "viewer/?replay=" + quote(replay_link(uri), safe="")


def _describe(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return f"{type(e).__name__}: {text}" if type(e).__name__ not in text else text


def _stamp(info: dict) -> tuple:
    """What changes when a file changes: size and modification time, whatever the filesystem calls it."""
    mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or info.get("updated") \
        or info.get("created")
    if hasattr(mtime, "timestamp"):
        mtime = mtime.timestamp()
    return (info.get("size"), str(mtime))


def _mtime(info: dict) -> float | None:
    m = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or info.get("updated") \
        or info.get("created")
    if hasattr(m, "timestamp"):
        return float(m.timestamp())
    try:
        return float(m) if m is not None else None
    except (TypeError, ValueError):
        return None


def _finite(v: Any) -> Any:
    """JSON has no NaN: None instead."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


@dataclass
class Source:
    """One folder given on the command line."""

    uri: str
    fs: Any = None
    path: str = ""
    error: str | None = None

    @classmethod
    def open(cls, uri: str) -> "Source":
        src = cls(uri=str(uri))
        try:
            src.fs, src.path = fsspec.core.url_to_fs(src.uri)
            src.path = src.path.rstrip("/") or "/"
        except Exception as e:  # noqa: BLE001 - unknown protocol, missing s3fs, bad URL
            src.error = f"{src.uri}: cannot open: {_describe(e)}"
        return src

    @property
    def remote(self) -> bool:
        return "://" in self.uri and not self.uri.startswith("file://")

    def unstrip(self, path: str) -> str:
        """A listed path as a URI to show and to open again."""
        return self.fs.unstrip_protocol(path) if self.remote else path


@dataclass
class FileRef:
    uri: str
    path: str
    info: dict
    source: Source

    @property
    def stamp(self) -> tuple:
        return _stamp(self.info)

    @property
    def mtime(self) -> float | None:
        return _mtime(self.info)


@dataclass
class Run:
    name: str
    source: Source
    folder: str | None = None
    """The run folder's URI."""
    checkpoints: list[FileRef] = field(default_factory=list)
    eval_dbs: list[FileRef] = field(default_factory=list)
    csv: list[FileRef] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.source.uri}#{self.name}"


class DashboardData:
    """Reads and caches everything the pages ask for. Thread safe (one lock: a local dashboard serves a
    handful of requests a second at most)."""

    def __init__(self, sources: list[str], listing_ttl_s: float = 2.0, cache_dir: str | None = None) -> None:
        self.source_uris = list(sources)
        self.listing_ttl_s = listing_ttl_s
        self._lock = threading.RLock()
        self._listing: tuple[float, list[Source], list[Run]] | None = None
        self._parsed: dict[tuple, Any] = {}  # (kind, uri, stamp) -> parsed content or error
        self._own_cache = cache_dir is None
        self.cache_dir = cache_dir or tempfile.mkdtemp(prefix="metta_dashboard_")
        self._scorecards: dict[tuple, dict] = {}

    def close(self) -> None:
        if self._own_cache:
            shutil.rmtree(self.cache_dir, ignore_errors=True)

    # ---------------------------------------------------------------------------------------------- listing

    def listing(self) -> tuple[list[Source], list[Run]]:
        """The sources (with their errors) and the runs found in them; re-listed every `listing_ttl_s`."""
        with self._lock:
            now = time.monotonic()
            if self._listing is None or now - self._listing[0] > self.listing_ttl_s:
                sources = [Source.open(u) for u in self.source_uris]
                runs: list[Run] = []
                for src in sources:
                    if src.error is None:
                        runs.extend(self._discover(src))
                self._listing = (time.monotonic(), sources, runs)
            return self._listing[1], self._listing[2]

    def _find(self, src: Source, path: str, maxdepth: int) -> dict[str, dict]:
        return src.fs.find(path, maxdepth=maxdepth, detail=True, withdirs=False)

    def _discover(self, src: Source) -> list[Run]:
        fs, root = src.fs, src.path
        try:
            if not fs.exists(root):
                src.error = f"{src.uri}: not found"
                return []
            if not fs.isdir(root):
                src.error = f"{src.uri}: not a folder (give a run folder or a folder of runs)"
                return []
            files = self._find(src, root, maxdepth=4)
        except Exception as e:  # noqa: BLE001 - network, permissions, credentials
            src.error = f"{src.uri}: cannot list: {_describe(e)}"
            return []
        runs: dict[str, Run] = {}
        rel = {posixpath.relpath(p, root) if not p == root else "": (p, info) for p, info in files.items()}
        # The source itself is one run folder when it holds checkpoints/ or eval.duckdb at its top.
        single = any(r in ("eval.duckdb", "metrics.csv") or r.startswith("checkpoints/")
                     or (r.startswith("version_") and r.count("/") == 1 and r.endswith("/metrics.csv")) for r in rel)
        base_name = posixpath.basename(root.rstrip("/"))

        def run_for(name: str, folder: str) -> Run:
            if name not in runs:
                runs[name] = Run(name=name, source=src, folder=src.unstrip(folder))
            return runs[name]

        for r, (p, info) in sorted(rel.items()):
            parts = r.split("/")
            if single:
                name, folder, inner = base_name, root, parts
            else:
                if len(parts) < 2:
                    continue
                name, folder, inner = parts[0], posixpath.join(root, parts[0]), parts[1:]
            ref = FileRef(src.unstrip(p), p, info, src)
            if inner == ["eval.duckdb"]:
                run_for(name, folder).eval_dbs.append(ref)
            elif len(inner) == 2 and inner[0] == "checkpoints" and _CKPT.match(inner[1]):
                run_for(name, folder).checkpoints.append(ref)
            elif inner[-1] == "metrics.csv":
                run_for(name, folder).csv.append(ref)
        for run in runs.values():
            run.checkpoints.sort(key=lambda f: int(_CKPT.match(posixpath.basename(f.path)).group("epoch")))
            run.csv.sort(key=lambda f: _version_key(f.path))
        return sorted(runs.values(), key=lambda r: r.name)

    # ---------------------------------------------------------------------------------------------- files

    def local_copy(self, ref: FileRef, always_copy: bool = False) -> str:
        """A local path with the file's current content (the file itself when local, unless `always_copy`)."""
        if not ref.source.remote and not always_copy:
            return ref.path
        key = re.sub(r"[^A-Za-z0-9._-]", "_", ref.uri)[-150:]
        local = os.path.join(self.cache_dir, f"{key}.{abs(hash(ref.stamp)):x}")
        with self._lock:
            return self._fetch(ref, key, local)

    def _fetch(self, ref: FileRef, key: str, local: str) -> str:
        if not os.path.exists(local):
            tmp = local + ".part"
            if ref.source.remote:
                ref.source.fs.get_file(ref.path, tmp)
            else:
                shutil.copyfile(ref.path, tmp)
            os.replace(tmp, local)
            for name in os.listdir(self.cache_dir):  # earlier versions of the file (a log that grows)
                if re.fullmatch(re.escape(key) + r"\.[0-9a-f]+", name) and os.path.join(self.cache_dir, name) != local:
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(self.cache_dir, name))
        return local

    def _cached(self, kind: str, ref: FileRef, read: Callable[[str], Any]) -> Any:
        """`read(local path)` once per version of the file; an error becomes a string naming the file."""
        key = (kind, ref.uri, ref.stamp)
        with self._lock:
            if key not in self._parsed:
                try:
                    self._parsed[key] = read(self.local_copy(ref))
                except Exception as e:  # noqa: BLE001 - shown in place of the data
                    self._parsed[key] = f"{ref.uri}: {_describe(e)}"
                for old in [k for k in self._parsed if k[:2] == key[:2] and k != key]:
                    del self._parsed[old]
            return self._parsed[key]

    def _csv(self, ref: FileRef) -> list[dict] | str:
        def read(path: str) -> list[dict]:
            if os.path.getsize(path) == 0:
                raise ValueError("empty file (no header line)")
            rows = read_csv_rows(path)
            if rows and not any(rows):
                raise ValueError("not a metrics log: no numeric value in any row")
            return rows
        return self._cached("csv", ref, read)

    def _hparams(self, ref: FileRef) -> dict:
        """The hparams.yaml beside a CSV log (Lightning writes the model's hyperparameters there)."""
        import yaml

        path = posixpath.join(posixpath.dirname(ref.path), "hparams.yaml")
        try:
            with ref.source.fs.open(path, "r") as f:
                data = yaml.safe_load(f)
            return data if isinstance(data, dict) else {}
        except Exception:  # noqa: BLE001 - optional
            return {}

    # ---------------------------------------------------------------------------------------------- runs

    def rows(self, run: Run) -> tuple[list[dict], list[str], dict]:
        """All logged rows of the run (its CSV logs, in order), the errors, and the facts of its log:
        `config` (the hparams.yaml beside it) and `exit_code` (of the exit row that ends the log, else None)."""
        errors: list[str] = []
        rows: list[dict] = []
        for ref in run.csv:
            parsed = self._csv(ref)
            if isinstance(parsed, str):
                errors.append(parsed)
                continue
            rows.extend(parsed)
        rows = drop_superseded_rows(rows)
        facts: dict = {}
        if run.csv:
            exit_code = rows[-1].get(EXIT_CODE_KEY) if rows else None
            facts = {"config": self._hparams(run.csv[-1]), "exit_code": None if exit_code is None else int(exit_code)}
        return rows, errors, facts

    def run_summary(self, run: Run) -> dict:
        rows, errors, facts = self.rows(run)
        last = {}
        for row in rows:  # the last value of each key
            last.update(row)
        refs = run.csv + run.checkpoints + run.eval_dbs
        mtimes = [m for m in (r.mtime for r in refs) if m is not None]
        last_update = max(mtimes) if mtimes else None
        exit_code = facts.get("exit_code")
        if exit_code is not None:
            status = "finished" if exit_code == 0 else f"failed (exit {exit_code})"
        elif last_update is not None and time.time() - last_update < RUNNING_WINDOW_S:
            status = "running"
        elif rows or run.checkpoints:
            status = "stopped"
        elif run.eval_dbs:
            status = "evaluations"  # a folder of `evaluate --db` results, not a training run
        else:
            status = "empty"
        if status == "running" and not rows and not run.checkpoints:
            status = "evaluations"
        config = {k: v for k, v in (facts.get("config") or {}).items() if not k.startswith("_")}
        latest = run.checkpoints[-1] if run.checkpoints else None
        metrics = sorted({k for row in rows for k in row if not k.startswith("_")})
        return {
            "id": run.id, "name": run.name, "source": run.source.uri, "folder": run.folder, "status": status,
            "agent_steps": _finite(last.get("overview/agent_steps", last.get("metric/agent_step"))),
            "sps": _finite(last.get("overview/sps")),
            "last_checkpoint": posixpath.basename(latest.path) if latest else None,
            "last_update": last_update, "config": json.loads(json.dumps(config, default=str)),
            "logs": [r.uri for r in run.csv], "eval_dbs": [r.uri for r in run.eval_dbs],
            "metrics": metrics, "errors": run.errors + errors,
        }

    def runs(self) -> dict:
        sources, runs = self.listing()
        summaries = [self.run_summary(r) for r in runs]
        errors = [s.error for s in sources if s.error]
        if not runs and not errors:
            errors = [f"no runs found in {', '.join(self.source_uris) or '(no folder given)'}: a run folder holds "
                      "checkpoints/, eval.duckdb or a metrics.csv"]
        return {"sources": [{"uri": s.uri, "error": s.error} for s in sources], "errors": errors,
                "runs": summaries, "time": time.time()}

    def _run(self, run_id: str) -> Run | None:
        return next((r for r in self.listing()[1] if r.id == run_id), None)

    def curves(self, run_ids: list[str], metric: str) -> dict:
        out = []
        for rid in run_ids:
            run = self._run(rid)
            if run is None:
                out.append({"id": rid, "name": rid, "points": [], "x_key": None, "error": f"{rid}: no such run"})
                continue
            rows, errors, _ = self.rows(run)
            hist, x_key = history_from_rows(rows, [metric])
            pts = sorted(hist[metric])
            if errors:
                error = "; ".join(errors)
            elif not run.csv:
                # Only a training run (it has checkpoints) is missing something without logs.
                error = f"{run.name}: no log found (no metrics.csv in its folder)" if run.checkpoints else None
            else:
                error = None if pts else f"{run.name}: {metric!r} was not logged"
            out.append({"id": rid, "name": run.name, "x_key": x_key, "points": pts, "error": error})
        x_keys = {c["x_key"] for c in out if c["points"]}
        return {"metric": metric, "x_key": next(iter(x_keys)) if len(x_keys) == 1 else "/".join(sorted(x_keys)) or
                X_CANDIDATES[0], "runs": out}

    # ---------------------------------------------------------------------------------------------- evaluations

    def _merged_db(self, dbs: list[FileRef]):
        """An in-memory StatsDB with every readable database merged, and an error per unreadable one."""
        from ..stats_db import StatsDB

        merged = StatsDB(":memory:")
        errors = []
        for ref in dbs:
            try:
                local = self.local_copy(ref, always_copy=True)  # never open a file a training run may be writing
                self._rebase_replays(local, ref)
                merged.merge_from(local)
            except Exception as e:  # noqa: BLE001 - damaged, foreign, locked, unreachable
                msg = _describe(e).replace(self.cache_dir, "(copy)")
                errors.append({"uri": ref.uri, "error": f"{ref.uri}: {msg}"})
        return merged, errors

    def _rebase_replays(self, local: str, ref: FileRef) -> None:
        """Replay paths recorded where the run trained point into this run folder wherever it is now (a
        copy, a bucket it was uploaded to): `<anything>/replays/<rest>` -> `<folder of the db>/replays/<rest>`.
        Done on the private copy of the database."""
        import duckdb

        folder = ref.uri.rsplit("/", 1)[0]
        prefix = folder + "/replays/"
        try:
            con = duckdb.connect(local)
        except duckdb.Error:
            return  # the merge reports it
        try:
            con.execute("UPDATE episodes SET replay_url = ? || substr(replay_url, strpos(replay_url, '/replays/') + 9) "
                        "WHERE replay_url IS NOT NULL AND NOT starts_with(replay_url, ?) "
                        "AND strpos(replay_url, '/replays/') > 0", [prefix, prefix])
        except duckdb.Error:
            pass  # not a stats database: the merge says so
        finally:
            con.close()

    def scorecard(self, metric: str = "reward") -> dict:
        from ..scorecard import build_scorecard
        from ..stats_db import StatsDBError

        _, runs = self.listing()
        dbs = [ref for run in runs for ref in run.eval_dbs]
        key = (metric, tuple((r.uri, r.stamp) for r in dbs))
        with self._lock:
            if key in self._scorecards:
                return self._scorecards[key]
        out: dict[str, Any] = {"metric": metric, "databases": [r.uri for r in dbs], "errors": [], "metrics": [],
                               "policies": [], "columns": [], "values": [], "episodes": [], "replays": {},
                               "crossplay": None, "suite_scores": {}}
        if not dbs:
            out["errors"].append({"uri": None, "error": "no evaluation database (eval.duckdb) in any run folder"})
        merged, errors = self._merged_db(dbs)
        out["errors"] += errors
        try:
            out["metrics"] = merged.metrics()
            card = None
            if out["metrics"]:
                try:
                    card = build_scorecard(merged, metric)
                except StatsDBError as e:
                    out["errors"].append({"uri": None, "error": str(e)})
            if card is not None:
                out["policies"], out["columns"] = card.policies, card.columns
                out["values"] = [[_finite(v) for v in row] for row in card.values]
                out["episodes"] = [[card.episodes.get((p, c)) for c in card.columns] for p in card.policies]
                out["replays"] = {f"{p}|{sim}": [{"uri": u, "viewer": viewer_link(u)} for u in urls[:5]]
                                  for (p, sim), urls in card.replays.items()}
                for r in merged.suite_scores(metric):
                    out["suite_scores"].setdefault(f"{r['policy_key']}:v{r['policy_version']}", {})[r["suite"]] = \
                        _finite(float(r["score"]))
                cp = card.crossplay
                if cp is not None:
                    out["crossplay"] = {
                        "policies": cp.policies, "values": [[_finite(v) for v in row] for row in cp.values],
                        "episodes": cp.episodes, "record": cp.record,
                        "replays": {f"{a}|{b}": [{"uri": u, "viewer": viewer_link(u)} for u in urls[:5]]
                                    for (a, b), urls in cp.replays.items()},
                        "ratings": [{"policy": r.policy, "rating": r.rating, "mu": r.mu, "sigma": r.sigma,
                                     "matches": r.matches} for r in cp.ratings]}
        finally:
            merged.close()
        with self._lock:
            self._scorecards = {key: out}
        return out

    def checkpoints(self, metric: str = "reward") -> dict:
        """Each run's checkpoints, newest first, with their evaluation scores per suite (from the merged
        databases: policy `<run>:v<epoch>`)."""
        _, runs = self.listing()
        card = self.scorecard(metric)
        out = []
        for run in runs:
            items = []
            for ref in reversed(run.checkpoints):
                m = _CKPT.match(posixpath.basename(ref.path))
                label = f"{m.group('run')}:v{m.group('epoch')}"
                items.append({"name": posixpath.basename(ref.path), "uri": ref.uri, "epoch": int(m.group("epoch")),
                              "size": ref.info.get("size"), "modified": ref.mtime,
                              "scores": card["suite_scores"].get(label, {}), "policy": label})
            if items or run.eval_dbs:
                out.append({"id": run.id, "name": run.name, "checkpoints": items})
        return {"metric": metric, "runs": out, "errors": card["errors"]}

    # ---------------------------------------------------------------------------------------------- replays

    def replay_allowed(self, uri: str) -> bool:
        """Only files inside the folders being served are handed out."""
        for src in self.listing()[0]:
            if src.error is not None and src.fs is None:
                continue
            if src.remote:
                base = src.unstrip(src.path).rstrip("/") + "/"
                if uri.startswith(base):
                    return True
            else:
                norm, base = os.path.normpath(uri), os.path.normpath(src.path)
                if norm == base or norm.startswith(base.rstrip(os.sep) + os.sep):
                    return True
        return False


def _version_key(p: str):
    v = posixpath.basename(posixpath.dirname(p))
    return (0, int(v.split("_")[-1])) if v.startswith("version_") and v.split("_")[-1].isdigit() else (1, v)
